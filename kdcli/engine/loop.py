"""The one training loop. It trains the teacher, the baseline and the distilled student.

The loss decides what teacher knowledge it needs: when `loss.needs_teacher`, the loop asks
`teacher(epoch, batch)` for the teacher's knowledge of that batch (kdcli/knowledge/: stored
soft labels looked up by sample index, or the teacher run online). A feature loss names the
layers it needs; the loop taps them on the student and passes both sides' maps to the loss,
and the loss's own parameters (learned adapters) are trained with the model. After each epoch
and every `every_s` seconds the loop saves its whole state (engine/state.py); it resumes from
that state when it finds one, and a signal (engine/interrupt.py) makes it save and stop. The
task (kdcli/tasks/) flattens the outputs for the loss and scores each batch; the loop assumes
no shape of the logits. No config objects here: plain values in.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from kdcli.data import Batch, Loader
from kdcli.engine import distributed
from kdcli.engine import precision as numerics
from kdcli.engine.finite import FiniteWatch
from kdcli.engine.interrupt import Interrupted, deferred, pending
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.progress import stage_progress
from kdcli.engine.state import Parts, Position, TrainState
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
    resumed_from: str | None = None  # where a saved state let training continue, if it did


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
    state: TrainState | None = None,
    keep_state: bool = False,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    log_every: int = 10,
    clip_grad_norm: float | None = None,
) -> FitResult:
    """Train `model` for `epochs` epochs on `loader` with `loss_fn`.

    `optimizer` builds the optimizer from the parameters of the model and of the loss (a
    feature loss's adapters, built before this call); `scheduler` wraps it and is stepped
    once per epoch. `task` flattens the outputs for the loss and scores each batch.
    `precision` is the model's forward pass's (engine/precision.py); the loss runs in fp32.
    `compile` runs the forward and backward passes through torch.compile (the weights stay
    those of `model`; the first steps pay for the compilation). `clip_grad_norm` rescales the
    gradients of every trained parameter to that total L2 norm at most before each step.

    `state` saves the whole training state after every epoch and every `state.every_s`
    seconds, and on a signal (then raises `Interrupted`); a saved state found at the start is
    resumed from, so the result equals an uninterrupted run's. The state is removed at the
    end unless `keep_state` (the caller removes it once the result is stored elsewhere).
    `on_epoch(row)` gets each epoch's figures (on rank 0): epoch, step, loss (and a combo
    loss's terms as `loss_<name>`), `train_<metric>`, lr, images_per_s and seconds.

    Under torchrun every rank calls this together: each trains on its share of every batch
    through DDP (kdcli.engine.distributed), the logged figures are summed over ranks, and only
    rank 0 shows progress and saves the state.
    """
    if loss_fn.needs_teacher and teacher is None:
        raise ValueError(f"{type(loss_fn).__name__} needs teacher knowledge; none was given")
    numerics.prepare(model.to(device), precision)
    loss_fn.to(device)
    optimizer = optimizer([*model.parameters(), *loss_fn.parameters()])
    scheduler = build_scheduler(scheduler, optimizer, len(loader))
    per_batch = getattr(scheduler, "per_batch", False)
    scaler = numerics.grad_scaler(precision, device)
    state = state or TrainState(None)
    parts = Parts(model, loss_fn, optimizer, scheduler, scaler)
    resumed = state.resume(parts, device)
    start = resumed or Position()
    trained = distributed.wrap_model(model, device)  # shares `model`'s weights
    if compile:
        trained = torch.compile(trained)
    loader = distributed.shard_loader(loader)
    lr = optimizer.defaults.get("lr")  # the configured rate, named in a NaN message
    watch = FiniteWatch(label, loss_fn, lr, precision.name)
    saving = distributed.is_main()
    images = 0
    # the last logged figures (a state saved after the last epoch carries them)
    epoch_loss = start.sums.get("last_loss", float("nan"))
    score = start.sums.get("last_score", float("nan"))
    started = time.perf_counter()
    with (
        stage_progress(visible=distributed.is_main()) as progress,
        FeatureTap(model, loss_fn.student_layers) as tap,
        deferred(),  # a signal is acted on between steps: save, then stop
    ):
        done_before = start.epoch * len(loader) + start.step
        bar = progress.add_task(
            label,
            total=epochs * len(loader),
            completed=done_before,
            epoch="-",
            loss="-",
            acc="-",
            speed="-",
        )
        for epoch in range(start.epoch, epochs):
            loss_fn.start_epoch(epoch, epochs)
            model.train()
            first = start.step if epoch == start.epoch else 0
            sums = start.sums if epoch == start.epoch else {}
            loss_sum = torch.tensor(sums.get("loss", 0.0), device=device)
            correct = torch.tensor(int(sums.get("correct", 0)), device=device, dtype=torch.long)
            seen = int(sums.get("seen", 0))
            epoch_started, epoch_images = time.perf_counter(), 0
            term_sums: dict[str, torch.Tensor] = {}
            for step, batch in enumerate(loader.epoch(epoch, first), start=first):
                with numerics.autocast(precision, device):
                    # fills tap.outputs with the student's layers
                    logits = trained(numerics.inputs(batch.x, precision)).float()
                teacher_logits, features = _loss_inputs(loss_fn, teacher, epoch, batch, tap)
                rows, teacher_rows, targets = task.flatten(logits, teacher_logits, batch.y)
                if not batch.labelled:  # the student's own text: nothing to learn from y
                    targets = None
                loss = loss_fn(rows, teacher_rows, targets, features)
                watch.record(step, len(loader), teacher_logits, features, logits, loss)
                optimizer.zero_grad(set_to_none=True)
                _step(loss, optimizer, scaler, loss_fn, clip_grad_norm)
                if per_batch:
                    scheduler.step()
                size = task.count(batch.y)  # images, or scored tokens
                loss_sum += loss.detach().float() * size
                correct += task.score(logits.detach(), batch.y)
                seen += size
                for name, term in loss_fn.last_terms.items():  # a combo loss's parts
                    term_sums[name] = term_sums.get(name, 0) + term.float() * size
                images += batch.x.shape[0] * distributed.world_size()
                epoch_images += batch.x.shape[0] * distributed.world_size()
                last = step + 1 == len(loader)
                if (step + 1) % log_every == 0 or last:
                    totals = distributed.sum_over_ranks(loss_sum, correct, seen)
                    epoch_loss, score = _check_finite(*totals, watch, epoch)
                    rate = images / max(time.perf_counter() - started, 1e-9)
                    progress.update(
                        bar,
                        completed=epoch * len(loader) + step + 1,
                        epoch=f"{epoch + 1}/{epochs}",
                        loss=f"{epoch_loss:.4f}",
                        acc=f"{score:.3f}",
                        speed=f"{rate:,.0f}",
                    )
                if not last and (state.due() or pending() is not None):
                    here = Position(epoch, step + 1, _sums(loss_sum, correct, seen))
                    _save_or_stop(state, parts, here, label, saving)
            if on_epoch is not None and saving:
                seconds = time.perf_counter() - epoch_started
                row = {
                    "epoch": epoch + 1,
                    "step": (epoch + 1) * len(loader),
                    "loss": epoch_loss,
                    **{f"loss_{k}": float(v) / max(seen, 1) for k, v in term_sums.items()},
                    f"train_{task.metric}": score,
                    "lr": optimizer.param_groups[0]["lr"],
                    "images_per_s": epoch_images / max(seconds, 1e-9),
                    "seconds": seconds,
                }
                on_epoch(row)
            if not per_batch:
                scheduler.step()
            finished = {"last_loss": epoch_loss, "last_score": score}
            _save_or_stop(state, parts, Position(epoch + 1, 0, finished), label, saving)
    seconds = time.perf_counter() - started
    if saving and not keep_state:  # the caller's artifact holds the result from here on
        state.discard()
    resumed_from = resumed.describe() if resumed else None
    return FitResult(seconds, images / max(seconds, 1e-9), epochs, epoch_loss, score, resumed_from)


def _sums(loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> dict[str, float]:
    return {"loss": float(loss_sum), "correct": float(correct), "seen": float(seen)}


def _save_or_stop(
    state: TrainState, parts: Parts, position: Position, label: str, saving: bool
) -> None:
    """Save the state at `position` (rank 0), then stop when a signal came in meanwhile."""
    if saving:
        state.save(parts, position)
    signum = pending()
    if signum is not None:
        saved = state.path if saving else None
        raise Interrupted(signum, saved, f"{label}, {position.describe()}")


def _step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    loss_fn: DistillationLoss,
    clip_grad_norm: float | None = None,
) -> None:
    """Backward, gradient clipping and optimizer step (through fp16's loss scaler when there
    is one: gradients are unscaled before they are clipped)."""
    (loss if scaler is None else scaler.scale(loss)).backward()
    distributed.average_gradients(loss_fn)
    if clip_grad_norm is not None:
        if scaler is not None:
            scaler.unscale_(optimizer)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, clip_grad_norm)
    if scaler is None:
        optimizer.step()
        return
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
