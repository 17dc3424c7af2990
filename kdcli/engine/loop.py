"""The one training loop. It trains the teacher, the baseline and the distilled student.

`fit` takes what is trained (a `Trainee`: model, batches, loss), how (a `Recipe`: epochs,
optimizer, scheduler, precision), the run's side of it (a `Job`: task, device, label, saved
state, per-epoch figures) and, when the loss needs it (`loss.needs_teacher`), the teacher's
knowledge: `knowledge(epoch, batch)` gives it for each batch (kdcli/knowledge/: stored soft
labels looked up by sample index, or the teacher run online). A feature loss names the layers
it needs; the loop taps them on the student and passes both sides' maps to the loss, and the
loss's own parameters (learned adapters) are trained with the model. After each epoch and
every `every_s` seconds the loop saves its whole state (engine/state.py); it resumes from
that state when it finds one, and a signal (engine/interrupt.py) makes it save and stop. The
task (kdcli/tasks/) flattens the outputs for the loss and scores each batch; the loop assumes
no shape of the logits. No config objects here: plain values in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from rich.progress import Progress, TaskID
from torch import nn

from kdcli.data import Batch, Dataset, Loader
from kdcli.engine import distributed
from kdcli.engine import precision as numerics
from kdcli.engine.epoch_sums import EpochSums, Figures
from kdcli.engine.finite import FiniteWatch
from kdcli.engine.interrupt import Interrupted, deferred, pending
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.progress import stage_progress
from kdcli.engine.state import Parts, Position, TrainState
from kdcli.losses import DistillationLoss, Features
from kdcli.models.features import FeatureTap
from kdcli.tasks import Task


@dataclass
class TeacherOutputs:
    """The teacher's outputs for one batch: its logits (as the model gives them) and, for a
    feature loss, its tapped layers."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


class KnowledgeSource(Protocol):
    """(epoch, batch) -> the teacher's outputs for that batch: stored soft labels looked up by
    sample index, or the teacher run online (kdcli/knowledge/teacher.py).

    `train_data`: the dataset whose training split the batches come from when it is not the
    run's (the teacher-written text of `soft_labels.mode=generate`), else None; the student's
    loader is made from it (the loop itself only calls the source)."""

    train_data: Dataset | None

    def __call__(self, epoch: int, batch: Batch) -> TeacherOutputs: ...


@dataclass(frozen=True)
class Trainee:
    """What is trained: `model`, on the batches of `loader`, minimising `loss_fn` (whose own
    parameters, e.g. a feature loss's adapters built before `fit`, are trained with it)."""

    model: nn.Module
    loader: Loader
    loss_fn: DistillationLoss


@dataclass(frozen=True)
class Recipe:
    """How it is trained. `optimizer` builds the optimizer from the parameters of the model
    and of the loss; `scheduler` wraps it (`build_scheduler`). `clip_grad_norm` rescales the
    gradients of every trained parameter to that total L2 norm at most before each step.
    `precision` is the model's forward pass's (engine/precision.py; the loss runs in fp32).
    `compile` runs the forward and backward passes through torch.compile (the weights stay
    the model's; the first steps pay for the compilation)."""

    epochs: int
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    scheduler: Callable[..., Any]
    clip_grad_norm: float | None = None
    precision: Precision = FP32
    compile: bool = False


@dataclass(frozen=True)
class Job:
    """The run's side of one training. `label` names it in the progress bar and in messages;
    `task` flattens the outputs for the loss and scores each batch. `state` saves the whole
    training state after every epoch, every `state.every_s` seconds and on a signal (then `fit`
    raises `Interrupted`); a saved state found at the start is resumed from, so the result
    equals an uninterrupted run's. The state is removed at the end unless `keep_state` (the
    caller removes it once the result is stored elsewhere). `on_epoch(row)` gets each epoch's
    figures (on rank 0): epoch, step, loss (and a combo loss's terms as `loss_<name>`),
    `train_<metric>`, lr, images_per_s and seconds. The progress bar shows the running loss
    and score every `log_every` steps."""

    label: str
    task: Task
    device: torch.device
    state: TrainState | None = None
    keep_state: bool = False
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    log_every: int = 10


@dataclass
class FitResult:
    seconds: float
    images_per_s: float
    epochs: int
    final_loss: float
    final_train_score: float  # the task's training metric, e.g. top-1
    resumed_from: str | None = None  # where a saved state let training continue, if it did


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
    trainee: Trainee, recipe: Recipe, job: Job, knowledge: KnowledgeSource | None = None
) -> FitResult:
    """Train `trainee` for `recipe.epochs` epochs as `job`, with the teacher's `knowledge` of
    each batch when its loss needs it.

    Under torchrun every rank calls this together: each trains on its share of every batch
    through DDP (kdcli.engine.distributed), the logged figures are summed over ranks, and only
    rank 0 shows progress and saves the state.
    """
    training = Training(trainee, recipe, job, knowledge)
    loader, epochs, steps = training.loader, recipe.epochs, len(training.loader)
    start = training.resumed or Position()
    shown = Figures.saved_in(start.sums)  # the last logged figures
    images, started = 0, time.perf_counter()
    with (
        stage_progress(visible=distributed.is_main()) as progress,
        FeatureTap(trainee.model, trainee.loss_fn.student_layers) as tap,
        deferred(),  # a signal is acted on between steps: save, then stop
    ):
        bar = _add_bar(progress, job.label, epochs * steps, start.epoch * steps + start.step)
        for epoch in range(start.epoch, epochs):
            trainee.loss_fn.start_epoch(epoch, epochs)
            trainee.model.train()
            first = start.step if epoch == start.epoch else 0
            sums = EpochSums(start.sums if epoch == start.epoch else {}, job.device)
            for step, batch in enumerate(loader.epoch(epoch, first), start=first):
                logits, loss = training.step(epoch, step, batch, tap)
                sums.add(job.task, batch, logits, loss, trainee.loss_fn.last_terms)
                last = step + 1 == steps
                if (step + 1) % job.log_every == 0 or last:
                    shown = sums.figures(training.watch, epoch)
                    rate = (images + sums.images) / max(time.perf_counter() - started, 1e-9)
                    done = epoch * steps + step + 1
                    _show(progress, bar, done, f"{epoch + 1}/{epochs}", shown, rate)
                if not last and (training.state.due() or pending() is not None):
                    training.save_or_stop(Position(epoch, step + 1, sums.saved()))
            images += sums.images
            if job.on_epoch is not None and training.saving:
                lr = training.optimizer.param_groups[0]["lr"]
                job.on_epoch(sums.row(epoch, steps, shown, job.task.score_name, lr))
            training.end_epoch(epoch, shown)
    seconds = time.perf_counter() - started
    if training.saving and not job.keep_state:  # the caller's artifact holds the result now
        training.state.discard()
    resumed_from = training.resumed.describe() if training.resumed else None
    images_per_s = images / max(seconds, 1e-9)
    return FitResult(seconds, images_per_s, epochs, shown.loss, shown.score, resumed_from)


class Training:
    """What `fit` builds once, in this order: the model on its device and in its memory
    format, the optimizer (over the model's and the loss's parameters), the scheduler, fp16's
    loss scaler, the state (resumed from when a saved one is found), the model as trained
    (DDP, torch.compile) and the loader of this rank's share; then one step at a time."""

    def __init__(
        self, trainee: Trainee, recipe: Recipe, job: Job, knowledge: KnowledgeSource | None
    ) -> None:
        model, loss_fn, device = trainee.model, trainee.loss_fn, job.device
        if loss_fn.needs_teacher and knowledge is None:
            raise ValueError(f"{type(loss_fn).__name__} needs teacher knowledge; none was given")
        self.trainee, self.recipe, self.job, self.knowledge = trainee, recipe, job, knowledge
        numerics.prepare(model.to(device), recipe.precision)
        loss_fn.to(device)
        self.optimizer = recipe.optimizer([*model.parameters(), *loss_fn.parameters()])
        self.scheduler = build_scheduler(recipe.scheduler, self.optimizer, len(trainee.loader))
        self.per_batch = getattr(self.scheduler, "per_batch", False)
        self.scaler = numerics.grad_scaler(recipe.precision, device)
        self.state = job.state or TrainState(None)
        self.parts = Parts(model, loss_fn, self.optimizer, self.scheduler, self.scaler)
        self.resumed = self.state.resume(self.parts, device)
        # shares `model`'s weights
        self.trained: Callable[..., torch.Tensor] = distributed.wrap_model(model, device)
        if recipe.compile:
            self.trained = torch.compile(self.trained)
        self.loader = distributed.shard_loader(trainee.loader)
        lr = self.optimizer.defaults.get("lr")  # the configured rate, named in a NaN message
        self.watch = FiniteWatch(job.label, loss_fn, lr, recipe.precision.name)
        self.saving = distributed.is_main()

    def step(
        self, epoch: int, step: int, batch: Batch, tap: FeatureTap
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch: forward pass, loss, backward pass and update; its logits and loss."""
        precision, loss_fn = self.recipe.precision, self.trainee.loss_fn
        with numerics.autocast(precision, self.job.device):
            # fills tap.outputs with the student's layers
            logits = self.trained(numerics.inputs(batch.x, precision)).float()
        teacher_logits, features = _loss_inputs(loss_fn, self.knowledge, epoch, batch, tap)
        rows, teacher_rows, labels = self.job.task.flatten(logits, teacher_logits, batch.y)
        # the student's own text: nothing to learn from y
        targets = labels if batch.labelled else None
        loss = loss_fn(rows, teacher_rows, targets, features)
        self.watch.record(step, len(self.loader), teacher_logits, features, logits, loss)
        self.optimizer.zero_grad(set_to_none=True)
        self._update(loss)
        if self.per_batch:
            self.scheduler.step()
        return logits, loss

    def _update(self, loss: torch.Tensor) -> None:
        """Backward, gradient clipping and optimizer step (through fp16's loss scaler when
        there is one: gradients are unscaled before they are clipped)."""
        optimizer, scaler, clip = self.optimizer, self.scaler, self.recipe.clip_grad_norm
        (loss if scaler is None else scaler.scale(loss)).backward()
        distributed.average_gradients(self.trainee.loss_fn)
        if clip is not None:
            if scaler is not None:
                scaler.unscale_(optimizer)
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(parameters, clip)
        if scaler is None:
            optimizer.step()
            return
        scaler.step(optimizer)
        scaler.update()

    def end_epoch(self, epoch: int, shown: Figures) -> None:
        """Step a per-epoch scheduler, then save the state after `epoch` (or stop)."""
        if not self.per_batch:
            self.scheduler.step()
        self.save_or_stop(Position(epoch + 1, 0, shown.to_save()))

    def save_or_stop(self, position: Position) -> None:
        """Save the state at `position` (rank 0), then stop when a signal came in meanwhile."""
        if self.saving:
            self.state.save(self.parts, position)
        signum = pending()
        if signum is not None:
            saved = self.state.path if self.saving else None
            raise Interrupted(signum, saved, f"{self.job.label}, {position.describe()}")


def _add_bar(progress: Progress, label: str, total: int, completed: int) -> TaskID:
    return progress.add_task(
        label, total=total, completed=completed, epoch="-", loss="-", acc="-", speed="-"
    )


def _show(
    progress: Progress, bar: TaskID, completed: int, epoch: str, shown: Figures, rate: float
) -> None:
    loss, acc, speed = f"{shown.loss:.4f}", f"{shown.score:.3f}", f"{rate:,.0f}"
    progress.update(bar, completed=completed, epoch=epoch, loss=loss, acc=acc, speed=speed)


def _loss_inputs(
    loss_fn: DistillationLoss,
    knowledge: KnowledgeSource | None,
    epoch: int,
    batch: Batch,
    tap: FeatureTap,
) -> tuple[torch.Tensor | None, Features | None]:
    """The teacher's logits for the batch (when the loss needs them) and, for a feature loss,
    the tapped layers of both sides, all in fp32 (a reduced-precision forward pass's outputs
    are upcast: the losses' softmax, KL and norms run in fp32)."""
    # (`Training` has checked that a loss that needs the teacher has its knowledge)
    taught = knowledge(epoch, batch) if loss_fn.needs_teacher and knowledge is not None else None
    teacher_logits = taught.logits.float() if taught is not None else None
    if not loss_fn.uses_features:
        return teacher_logits, None
    teacher_features = taught.features if taught is not None else {}
    return teacher_logits, Features(_fp32(tap.outputs), _fp32(teacher_features))


def _fp32(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {path: value.float() for path, value in maps.items()}
