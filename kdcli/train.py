"""The one training loop. It trains the teacher, the baseline and the distilled student.

The loss decides what teacher knowledge it needs: when `loss.needs_teacher`, the loop asks
`teacher(epoch, batch)` for the teacher's knowledge of that batch (kdcli/knowledge.py: stored
soft labels looked up by sample index, or the teacher run online). A feature loss names the
layers it needs; the loop taps them on the student and passes both sides' maps to the loss,
and the loss's own parameters (learned adapters) are trained with the model. After each epoch
the loop can save its whole state (model, loss, optimizer, scheduler, epoch, RNG), and it
resumes from that file when it finds one.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import nn

from kdcli import distributed
from kdcli.data import Batch, Loader
from kdcli.errors import RunError
from kdcli.knowledge import TeacherKnowledge
from kdcli.losses import DistillationLoss, Features
from kdcli.models.features import FeatureTap
from kdcli.progress import stage_progress

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    seconds: float
    images_per_s: float
    epochs: int
    final_loss: float
    final_train_top1: float


def build_optimizer(
    stage: DictConfig, model: nn.Module, loss_fn: DistillationLoss
) -> torch.optim.Optimizer:
    """`stage.optimizer` is a partial `_target_` config; the parameters of the model and of
    the loss (a feature loss's adapters, built before this call) complete it."""
    return instantiate(stage.optimizer)([*model.parameters(), *loss_fn.parameters()])


def build_scheduler(stage: DictConfig, optimizer: torch.optim.Optimizer):
    """`stage.scheduler` is a partial `_target_` config stepped once per epoch."""
    return instantiate(stage.scheduler)(optimizer)


def fit(
    model: nn.Module,
    loader: Loader,
    loss_fn: DistillationLoss,
    stage: DictConfig,
    *,
    device: torch.device,
    label: str,
    teacher: TeacherKnowledge | None = None,
    amp: bool = False,
    state_path: Path | None = None,
    log_every: int = 10,
) -> FitResult:
    """Train `model` for `stage.epochs` epochs on `loader` with `loss_fn`.

    Under torchrun every rank calls this together: each trains on its share of every batch
    through DDP (kdcli.distributed), the logged figures are summed over ranks, and only
    rank 0 shows progress and saves the per-epoch state.
    """
    if loss_fn.needs_teacher and teacher is None:
        raise ValueError(f"{type(loss_fn).__name__} needs teacher knowledge; none was given")
    model.to(device)
    loss_fn.to(device)
    optimizer = build_optimizer(stage, model, loss_fn)
    scheduler = build_scheduler(stage, optimizer)
    epochs = int(stage.epochs)
    start_epoch = _resume(state_path, model, loss_fn, optimizer, scheduler, device)
    trained = distributed.wrap_model(model, device)  # shares `model`'s weights
    loader = distributed.shard_loader(loader)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
    watch = FiniteWatch(label, loss_fn, stage, amp=amp and device.type == "cuda")
    images = 0
    epoch_loss = top1 = float("nan")
    started = time.perf_counter()
    with (
        stage_progress(visible=distributed.is_main()) as progress,
        FeatureTap(model, loss_fn.student_layers) as tap,
    ):
        task = progress.add_task(
            label,
            total=(epochs - start_epoch) * len(loader),
            epoch="-",
            loss="-",
            acc="-",
            speed="-",
        )
        for epoch in range(start_epoch, epochs):
            loss_fn.start_epoch(epoch, epochs)
            model.train()
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for step, batch in enumerate(loader.epoch(epoch)):
                with autocast:
                    logits = trained(batch.x)  # fills tap.outputs with the student's layers
                    teacher_logits, features = _loss_inputs(loss_fn, teacher, epoch, batch, tap)
                    loss = loss_fn(logits, teacher_logits, batch.y, features)
                watch.record(step, len(loader), teacher_logits, features, logits, loss)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(loss_fn)
                optimizer.step()
                size = batch.y.shape[0]
                loss_sum += loss.detach().float() * size
                correct += (logits.detach().argmax(1) == batch.y).sum()
                seen += size
                images += size * distributed.world_size()
                if (step + 1) % log_every == 0 or step + 1 == len(loader):
                    totals = distributed.sum_over_ranks(loss_sum, correct, seen)
                    epoch_loss, top1 = _check_finite(*totals, watch, epoch)
                    rate = images / max(time.perf_counter() - started, 1e-9)
                    progress.update(
                        task,
                        completed=(epoch - start_epoch) * len(loader) + step + 1,
                        epoch=f"{epoch + 1}/{epochs}",
                        loss=f"{epoch_loss:.4f}",
                        acc=f"{top1:.3f}",
                        speed=f"{rate:,.0f}",
                    )
            scheduler.step()
            if state_path is not None and distributed.is_main():
                _save_state(state_path, model, loss_fn, optimizer, scheduler, epoch)
    seconds = time.perf_counter() - started
    if state_path is not None and distributed.is_main():  # the artifact now holds the result
        state_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            state_path.parent.rmdir()  # only when empty
    return FitResult(seconds, images / max(seconds, 1e-9), epochs, epoch_loss, top1)


def _loss_inputs(
    loss_fn: DistillationLoss,
    teacher: TeacherKnowledge | None,
    epoch: int,
    batch: Batch,
    tap: FeatureTap,
) -> tuple[torch.Tensor | None, Features | None]:
    """The teacher's logits for the batch (when the loss needs them) and, for a feature loss,
    the tapped layers of both sides."""
    knowledge = teacher(epoch, batch) if loss_fn.needs_teacher else None
    teacher_logits = knowledge.logits if knowledge is not None else None
    if not loss_fn.uses_features:
        return teacher_logits, None
    teacher_features = knowledge.features if knowledge is not None else {}
    return teacher_logits, Features(dict(tap.outputs), teacher_features)


def _check_finite(loss_sum, correct, seen, watch: FiniteWatch, epoch: int) -> tuple[float, float]:
    """One host sync: the running epoch loss and accuracy, failing fast on NaN or inf with
    the diagnosis of what went non-finite first."""
    epoch_loss = float(loss_sum) / float(seen)
    if not math.isfinite(epoch_loss):
        raise watch.diagnose(epoch, epoch_loss)
    watch.rows.clear()
    return epoch_loss, float(correct) / float(seen)


class FiniteWatch:
    """Whether the loss's inputs and terms were finite at each step since the last log point.

    Per step it keeps one small tensor on the device (no host sync): the sums of the teacher's
    soft labels (and features) and of the student's logits, the loss and its named terms. A
    sum is finite exactly when its tensor is (short of values near 1e36, which a float32 sum
    overflows: broken either way). They are read only when the logged loss is not finite, to
    name the first step and the first thing that went non-finite in it: the teacher's soft
    labels (the loss's input), the student's logits (its forward pass), or the loss itself.
    """

    def __init__(self, label: str, loss_fn: DistillationLoss, stage: DictConfig, amp: bool):
        self.label, self.loss_fn, self.stage, self.amp = label, loss_fn, stage, amp
        self.key = "student" if label == "baseline" else label  # the config key of the stage
        self.rows: list[tuple[int, int, list[str], torch.Tensor]] = []

    def record(
        self,
        step: int,
        steps: int,
        teacher_logits: torch.Tensor | None,
        features: Features | None,
        logits: torch.Tensor,
        loss: torch.Tensor,
    ) -> None:
        teacher = [] if teacher_logits is None else [teacher_logits]
        teacher += list(features.teacher.values()) if features is not None else []
        terms = self.loss_fn.last_terms
        names = ["teacher"] * len(teacher) + ["logits", "loss", *terms]
        with torch.no_grad():
            values = [t.sum(dtype=torch.float32) for t in [*teacher, logits]]
            self.rows.append((step, steps, names, torch.stack([*values, loss, *terms.values()])))

    def diagnose(self, epoch: int, value: float) -> RunError:
        where = f"the {self.label} loss became {value} in epoch {epoch + 1}"
        for step, steps, names, values in self.rows:
            finite = torch.isfinite(values).tolist()
            bad = [name for name, ok in zip(names, finite, strict=True) if not ok]
            if bad:
                where = f"{where}, step {step + 1} of {steps}"
                return RunError(f"{where}: {self._cause(bad)}")
        return RunError(  # e.g. it went wrong on another process
            f"{where}; lower the learning rate ({self.key}.optimizer.lr) or check the loss "
            "settings."
        )

    def _cause(self, bad: list[str]) -> str:
        lr = self.stage.optimizer.get("lr")
        lower_lr = f"{self.key}.optimizer.lr" + (f" (now {lr})" if lr is not None else "")
        if "teacher" in bad:
            return (
                "the teacher's soft labels (or features) for that batch hold NaN or inf, so "
                "the teacher is at fault, not the student: retrain the teacher (e.g. "
                "teacher.epochs, teacher.optimizer.lr) or check teacher.checkpoint."
            )
        if "logits" in bad:
            precision = ", or train in float32 (device.amp=false)" if self.amp else ""
            return (
                f"the {self.label}'s logits went non-finite on finite inputs: its training "
                f"diverged. Lower {lower_lr}{precision}."
            )
        if not self.loss_fn.needs_teacher:
            return f"the cross-entropy went non-finite on finite logits; lower {lower_lr}."
        terms = [name for name in bad if name != "loss"]
        if terms:
            settings = "; ".join(
                _settings(self.loss_fn.terms[name], f"loss.terms.{name}.loss.")
                + f", loss.terms.{name}.weight={self.loss_fn.weights[name]}"
                for name in terms
            )
            return (
                f"the loss term(s) {', '.join(terms)} went non-finite on finite logits; check "
                f"their settings ({settings})."
            )
        return (
            f"the loss went non-finite on finite logits; check its settings "
            f"({_settings(self.loss_fn, 'loss.')})."
        )


def _settings(loss_fn: nn.Module, prefix: str) -> str:
    """A loss's number settings as config keys, e.g. "loss.alpha=0.9, loss.temperature=0"."""
    names = inspect.signature(type(loss_fn)).parameters
    values = {name: getattr(loss_fn, name, None) for name in names}
    return ", ".join(
        f"{prefix}{name}={value}"
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    )


def _save_state(path: Path, model, loss_fn, optimizer, scheduler, epoch: int) -> None:
    """Everything needed to continue after `epoch`, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        "model": model.state_dict(),
        "loss": loss_fn.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "torch_rng": torch.get_rng_state(),
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _resume(path: Path | None, model, loss_fn, optimizer, scheduler, device) -> int:
    """The epoch to start from: 0, or the one after the state saved at `path`."""
    if path is None or not path.is_file():
        return 0
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    loss_fn.load_state_dict(state["loss"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"].cpu())
    log.info("resuming from %s after epoch %d", path, state["epoch"] + 1)
    return int(state["epoch"]) + 1
