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


def build_scheduler(stage: DictConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int = 1):
    """`stage.scheduler` is a partial `_target_` config. Torch's schedulers are stepped once
    per epoch; one whose class sets `per_batch` (kdcli.lr_schedule.WarmupCosine) is built
    with `steps_per_epoch` and stepped after every batch."""
    factory = instantiate(stage.scheduler)
    if getattr(factory.func, "per_batch", False):
        return factory(optimizer, steps_per_epoch=steps_per_epoch)
    return factory(optimizer)


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
    scheduler = build_scheduler(stage, optimizer, len(loader))
    per_batch = getattr(scheduler, "per_batch", False)
    epochs = int(stage.epochs)
    start_epoch = _resume(state_path, model, loss_fn, optimizer, scheduler, device)
    trained = distributed.wrap_model(model, device)  # shares `model`'s weights
    loader = distributed.shard_loader(loader)
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if amp and device.type == "cuda"
        else contextlib.nullcontext()
    )
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
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.average_gradients(loss_fn)
                optimizer.step()
                if per_batch:
                    scheduler.step()
                size = batch.y.shape[0]
                loss_sum += loss.detach().float() * size
                correct += (logits.detach().argmax(1) == batch.y).sum()
                seen += size
                images += size * distributed.world_size()
                if (step + 1) % log_every == 0 or step + 1 == len(loader):
                    totals = distributed.sum_over_ranks(loss_sum, correct, seen)
                    epoch_loss, top1 = _check_finite(*totals, label, epoch)
                    rate = images / max(time.perf_counter() - started, 1e-9)
                    progress.update(
                        task,
                        completed=(epoch - start_epoch) * len(loader) + step + 1,
                        epoch=f"{epoch + 1}/{epochs}",
                        loss=f"{epoch_loss:.4f}",
                        acc=f"{top1:.3f}",
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


def _check_finite(loss_sum, correct, seen, label, epoch) -> tuple[float, float]:
    """One host sync: the running epoch loss and accuracy, failing fast on NaN or inf."""
    epoch_loss = float(loss_sum) / float(seen)
    if not math.isfinite(epoch_loss):
        raise RunError(
            f"the {label} loss became {epoch_loss} in epoch {epoch + 1}; lower the learning "
            f"rate (e.g. {label}.optimizer.lr) or check the loss settings."
        )
    return epoch_loss, float(correct) / float(seen)


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
