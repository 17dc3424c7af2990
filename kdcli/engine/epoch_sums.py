"""One epoch's running figures in the training loop (engine/loop.py): the sums kept on the
device as the batches go by, and the loss and score read from them at each log point."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from kdcli.data import Batch
from kdcli.engine import distributed
from kdcli.engine.finite import FiniteWatch
from kdcli.tasks import Task


@dataclass(frozen=True)
class Figures:
    """The epoch's loss and the task's training score, as last logged (nan before any)."""

    loss: float = math.nan
    score: float = math.nan

    @classmethod
    def saved_in(cls, sums: dict[str, float]) -> Figures:
        """The figures that a state saved after an epoch carries (nan from any other state)."""
        return cls(sums.get("last_loss", math.nan), sums.get("last_score", math.nan))

    def to_save(self) -> dict[str, float]:
        return {"last_loss": self.loss, "last_score": self.score}


class EpochSums:
    """The running sums of one epoch, on the device (no host sync per step): the loss (and a
    combo loss's terms) weighted by each batch's counted items (the rows its loss averages
    over: engine/rows.py `counted_items`) and those items, so the epoch's loss is the mean over
    every counted row, however the rows fell into batches; the task's score and the samples (or
    tokens) scored; the images of all ranks. A state saved within the epoch carries the sums
    but the images and terms (`saved`); the resumed epoch goes on from them."""

    def __init__(self, saved: dict[str, float], device: torch.device) -> None:
        self.loss = torch.tensor(saved.get("loss", 0.0), device=device)
        self.correct = torch.tensor(int(saved.get("correct", 0)), device=device, dtype=torch.long)
        self.seen = torch.tensor(int(saved.get("seen", 0)), device=device, dtype=torch.long)
        # (a state saved before the items were kept weighted the loss by the scored ones)
        items = int(saved.get("items", saved.get("seen", 0)))
        self.items = torch.tensor(items, device=device, dtype=torch.long)
        self.terms: dict[str, torch.Tensor] = {}
        self.images = 0
        self.started = time.perf_counter()

    def add(
        self,
        task: Task,
        batch: Batch,
        logits: torch.Tensor,
        loss: torch.Tensor,
        counted: torch.Tensor,
        terms: dict[str, torch.Tensor],
    ) -> None:
        """Count one trained batch: its (mean) loss over `counted` items, its score and, for a
        combo loss, `terms`."""
        self.loss += loss.detach().float() * counted
        self.items += counted
        self.correct += task.score(logits.detach(), batch.y)
        self.seen += task.count(batch.y)  # images, or scored tokens
        for name, term in terms.items():  # a combo loss's parts
            self.terms[name] = self.terms.get(name, 0) + term.detach().float() * counted
        self.images += batch.x.shape[0] * distributed.world_size()

    def saved(self) -> dict[str, float]:
        return {
            "loss": float(self.loss),
            "correct": float(self.correct),
            "seen": float(self.seen),
            "items": float(self.items),
        }

    def figures(self, watch: FiniteWatch, epoch: int) -> Figures:
        """One host sync: the epoch's loss and score so far (summed over ranks), failing fast on
        NaN or inf with the diagnosis of what went non-finite first."""
        loss_sum, items, correct, seen = distributed.sum_over_ranks(
            self.loss, self.items, self.correct, self.seen
        )
        loss = float(loss_sum) / max(float(items), 1.0)
        if not math.isfinite(loss):
            raise watch.diagnose(epoch, loss)
        watch.rows.clear()
        return Figures(loss, float(correct) / float(seen))

    def row(self, epoch: int, steps: int, shown: Figures, metric: str, lr: float) -> dict[str, Any]:
        """The epoch's figures for `on_epoch` (see engine/loop.py's `Job`)."""
        seconds = time.perf_counter() - self.started
        return {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps,
            "loss": shown.loss,
            **{f"loss_{k}": float(v) / max(float(self.items), 1.0) for k, v in self.terms.items()},
            f"train_{metric}": shown.score,
            "lr": lr,
            "images_per_s": self.images / max(seconds, 1e-9),
            "seconds": seconds,
        }
