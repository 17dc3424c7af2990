"""Image classification: logits [B, K], top-1 accuracy and NLL."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdcli.data import DatasetInfo
from kdcli.tasks import Row


class Classify:
    """One label per image; the model's output is a row of class logits."""

    metric = "top1"
    metric_label = "top-1"

    def output_shape(self, info: DatasetInfo) -> tuple[int, ...]:
        return (info.num_classes,)

    def flatten(
        self, logits: torch.Tensor, teacher: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        return logits, teacher, targets  # already [B, K] and [B]

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(1) == targets).sum()

    def count(self, targets: torch.Tensor) -> int:
        return targets.shape[0]

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        acc = accuracy(logits, targets)
        return {"top1": acc.top1, "nll": acc.nll}

    def agreement(self, logits: torch.Tensor, reference: torch.Tensor) -> float:
        return agreement(logits, reference)

    def rows(self) -> tuple[Row, ...]:
        return (
            ("top-1 accuracy", "top1", lambda v: f"{100 * v:.2f}%"),
            ("validation top-1", "val_top1", lambda v: f"{100 * v:.2f}%"),
            ("NLL", "nll", lambda v: f"{v:.4f}"),
            ("agreement with teacher", "agreement", lambda v: f"{100 * v:.2f}%"),
        )


@dataclass
class Accuracy:
    top1: float
    nll: float


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    top1 = (logits.argmax(1) == labels).float().mean().item()
    return Accuracy(top1=top1, nll=F.cross_entropy(logits, labels).item())


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """The fraction of samples on which two models predict the same class."""
    return (logits_a.argmax(1) == logits_b.argmax(1)).float().mean().item()


TASK = Classify()
