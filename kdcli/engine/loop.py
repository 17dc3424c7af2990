"""The one training loop. It trains the teacher, the baseline and the distilled student.

The loss decides what teacher knowledge it needs: when `loss.needs_teacher`, the loop asks
`teacher(epoch, batch)` for the teacher's knowledge of that batch (kdcli/knowledge/: stored
soft labels looked up by sample index, or the teacher run online). A feature loss names the
layers it needs; the loop taps them on the student and passes both sides' maps to the loss,
and the loss's own parameters (learned adapters) are trained with the model. After each epoch
the loop can save its whole state (engine/state.py), and it resumes from that file when it
finds one. The task (kdcli/tasks/) flattens the outputs for the loss and scores each batch;
the loop assumes no shape of the logits. No config objects here: plain values in.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdcli.data import Batch, Loader
from kdcli.engine import distributed
from kdcli.engine import precision as numerics
from kdcli.engine.finite import FiniteWatch
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.progress import stage_progress
from kdcli.engine.state import _resume, _save_state
from kdcli.losses import DistillationLoss, Features
from kdcli.models.features import FeatureTap
from kdcli.tasks import Task

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    seconds: float
    images_per_s: float
    epochs: int
    final_loss: float
    final_train_score: float  # the task's training metric, e.g. top-1


Knowledge = Callable[[int, Batch], Any]
"""(epoch, batch) -> the teacher's knowledge of that batch (`.logits`, `.features`)."""


def build_scheduler(
    factory: Callable[..., Any], optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> Any:
    """Torch's schedulers are stepped once per epoch; one whose class sets `per_batch`
    (kdcli.engine.lr_schedule.WarmupCosine) is built with `steps_per_epoch` and stepped after every
    batch."""
    if getattr(getattr(factory, "func", None), "per_batch", False):
        return factory(optimizer, steps_per_epoch=steps_per_epoch)
    return factory(optimizer)


def fit(
    model: nn.Module,
    loader: Loader,
    loss_fn: DistillationLoss,
    *,
    epochs: int,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer],
    scheduler: Callable[[torch.optim.Optimizer], Any],
    task: Task,
    device: torch.device,
    label: str,
    teacher: Knowledge | None = None,
    precision: Precision = FP32,
    compile: bool = False,
    state_path: Path | None = None,
    log_every: int = 10,
) -> FitResult:
    """Train `model` for `epochs` epochs on `loader` with `loss_fn`.

    `optimizer` builds the optimizer from the parameters of the model and of the loss (a
    feature loss's adapters, built before this call); `scheduler` wraps it and is stepped
    once per epoch. `task` flattens the outputs for the loss and scores each batch.
    `precision` is the model's forward pass's (engine/precision.py); the loss runs in fp32.
    `compile` runs the forward and backward passes through torch.compile (the weights stay
    those of `model`; the first steps pay for the compilation).

    Under torchrun every rank calls this together: each trains on its share of every batch
    through DDP (kdcli.engine.distributed), the logged figures are summed over ranks, and only
    rank 0 shows progress and saves the per-epoch state.
    """
    if loss_fn.needs_teacher and teacher is None:
        raise ValueError(f"{type(loss_fn).__name__} needs teacher knowledge; none was given")
    numerics.prepare(model.to(device), precision)
    loss_fn.to(device)
    optimizer = optimizer([*model.parameters(), *loss_fn.parameters()])
    scheduler = build_scheduler(scheduler, optimizer, len(loader))
    per_batch = getattr(scheduler, "per_batch", False)
    start_epoch = _resume(state_path, model, loss_fn, optimizer, scheduler, device)
    trained = distributed.wrap_model(model, device)  # shares `model`'s weights
    if compile:
        trained = torch.compile(trained)
    loader = distributed.shard_loader(loader)
    scaler = numerics.grad_scaler(precision, device)
    lr = optimizer.defaults.get("lr")  # the configured rate, named in a NaN message
    watch = FiniteWatch(label, loss_fn, lr, precision.name)
    images = 0
    epoch_loss = score = float("nan")
    started = time.perf_counter()
    with (
        stage_progress(visible=distributed.is_main()) as progress,
        FeatureTap(model, loss_fn.student_layers) as tap,
    ):
        bar = progress.add_task(
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
                with numerics.autocast(precision, device):
                    # fills tap.outputs with the student's layers
                    logits = trained(numerics.inputs(batch.x, precision)).float()
                teacher_logits, features = _loss_inputs(loss_fn, teacher, epoch, batch, tap)
                loss = loss_fn(*task.flatten(logits, teacher_logits, batch.y), features)
                watch.record(step, len(loader), teacher_logits, features, logits, loss)
                optimizer.zero_grad(set_to_none=True)
                _step(loss, optimizer, scaler, loss_fn)
                if per_batch:
                    scheduler.step()
                size = task.count(batch.y)  # images, or scored tokens
                loss_sum += loss.detach().float() * size
                correct += task.score(logits.detach(), batch.y)
                seen += size
                images += batch.x.shape[0] * distributed.world_size()
                if (step + 1) % log_every == 0 or step + 1 == len(loader):
                    totals = distributed.sum_over_ranks(loss_sum, correct, seen)
                    epoch_loss, score = _check_finite(*totals, watch, epoch)
                    rate = images / max(time.perf_counter() - started, 1e-9)
                    progress.update(
                        bar,
                        completed=(epoch - start_epoch) * len(loader) + step + 1,
                        epoch=f"{epoch + 1}/{epochs}",
                        loss=f"{epoch_loss:.4f}",
                        acc=f"{score:.3f}",
                        speed=f"{rate:,.0f}",
                    )
            if not per_batch:
                scheduler.step()
            if state_path is not None and distributed.is_main():
                _save_state(state_path, model, loss_fn, optimizer, scheduler, epoch)
    seconds = time.perf_counter() - started
    if state_path is not None and distributed.is_main():  # the artifact now holds the result
        state_path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            state_path.parent.rmdir()  # only when empty
    return FitResult(seconds, images / max(seconds, 1e-9), epochs, epoch_loss, score)


def _step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loss_fn: DistillationLoss,
) -> None:
    """Backward and optimizer step (through fp16's loss scaler when there is one)."""
    if scaler is None:
        loss.backward()
        distributed.average_gradients(loss_fn)
        optimizer.step()
        return
    scaler.scale(loss).backward()
    distributed.average_gradients(loss_fn)
    scaler.step(optimizer)
    scaler.update()


def _loss_inputs(
    loss_fn: DistillationLoss,
    teacher: Knowledge | None,
    epoch: int,
    batch: Batch,
    tap: FeatureTap,
) -> tuple[torch.Tensor | None, Features | None]:
    """The teacher's logits for the batch (when the loss needs them) and, for a feature loss,
    the tapped layers of both sides, all in fp32 (a reduced-precision forward pass's outputs
    are upcast: the losses' softmax, KL and norms run in fp32)."""
    knowledge = teacher(epoch, batch) if loss_fn.needs_teacher else None
    teacher_logits = knowledge.logits.float() if knowledge is not None else None
    if not loss_fn.uses_features:
        return teacher_logits, None
    teacher_features = knowledge.features if knowledge is not None else {}
    return teacher_logits, Features(_fp32(tap.outputs), _fp32(teacher_features))


def _fp32(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {path: value.float() for path, value in maps.items()}


def _check_finite(loss_sum, correct, seen, watch: FiniteWatch, epoch: int) -> tuple[float, float]:
    """One host sync: the running epoch loss and accuracy, failing fast on NaN or inf with
    the diagnosis of what went non-finite first."""
    epoch_loss = float(loss_sum) / float(seen)
    if not math.isfinite(epoch_loss):
        raise watch.diagnose(epoch, epoch_loss)
    watch.rows.clear()
    return epoch_loss, float(correct) / float(seen)
