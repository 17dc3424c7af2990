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

Gradient accumulation (`Recipe.accumulate` = N): each optimizer step sums the gradients of N
batches (micro-batches), each one's mean loss weighted by its share of the items the N count
(`counted_items`: the rows whose target is not -100, e.g. a prompt's tokens do not count), so
the loss and the gradients are those of one batch N times larger. That holds for losses that
are means over rows (cross-entropy, KD and the other logit losses, the token losses, feature
losses' per-sample terms), not for losses with batch statistics (DIST's correlations across
the batch) nor for models with BatchNorm (its statistics are the micro-batch's). An epoch is
`len(loader) // N` steps of N micro-batches (the last incomplete step is dropped as the loader
drops its last incomplete batch, so batch B with N steps as batch N*B does); the learning rate
schedule counts steps, the state is saved only between steps (a resumed epoch starts on one).

LoRA (`Recipe.lora`, kdcli/models/lora.py): adapters are attached to the model before the
optimizer is built, over the trainable parameters only (the adapters'), and merged into the
weights when training ends, so the caller gets the plain model back, trained.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from kdcli.data import Batch, Dataset, Loader
from kdcli.engine import distributed, sharding
from kdcli.engine import precision as numerics
from kdcli.engine.epoch_sums import EpochSums, Figures
from kdcli.engine.finite import FiniteWatch
from kdcli.engine.interrupt import Interrupted, deferred, pending
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.progress import add_bar, show, stage_progress
from kdcli.engine.rows import counted_items, learned_rows
from kdcli.engine.state import Parts, Position, TrainState
from kdcli.losses import DistillationLoss, Features
from kdcli.models.features import FeatureTap
from kdcli.models.lora import Adapters, Lora
from kdcli.tasks import Task

CPU = torch.device("cpu")


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
    the model's; the first steps pay for the compilation). `accumulate` batches make one
    optimizer step (see the module); `lora` trains LoRA adapters merged at the end instead of
    the model's weights. `strategy` (under torchrun): `ddp` keeps the whole model on every
    process, `fsdp` shards it (kdcli/engine/sharding.py)."""

    epochs: int
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer]
    scheduler: Callable[..., Any]
    clip_grad_norm: float | None = None
    precision: Precision = FP32
    compile: bool = False
    accumulate: int = 1
    lora: Lora | None = None
    strategy: str = "ddp"


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
    epochs, batches = recipe.epochs, training.batches
    start = training.resumed or Position()
    shown = Figures.saved_in(start.sums)  # the last logged figures
    images, started = 0, time.perf_counter()
    with (
        stage_progress(visible=distributed.is_main()) as progress,
        FeatureTap(trainee.model, trainee.loss_fn.student_layers) as tap,
        deferred(),  # a signal is acted on between steps: save, then stop
    ):
        bar = add_bar(progress, job.label, epochs * batches, start.epoch * batches + start.step)
        for epoch in range(start.epoch, epochs):
            trainee.loss_fn.start_epoch(epoch, epochs)
            training.model.train()
            first = start.step if epoch == start.epoch else 0
            sums = EpochSums(start.sums if epoch == start.epoch else {}, job.device)
            for window in training.windows(epoch, first):
                for step, batch, logits, loss, counted in training.update(epoch, window, tap):
                    sums.add(job.task, batch, logits, loss, counted, trainee.loss_fn.last_terms)
                    if (step + 1) % job.log_every == 0 or step + 1 == batches:
                        shown = sums.figures(training.watch, epoch)
                        rate = (images + sums.images) / max(time.perf_counter() - started, 1e-9)
                        done = epoch * batches + step + 1
                        show(
                            progress,
                            bar,
                            done,
                            f"{epoch + 1}/{epochs}",
                            shown.loss,
                            shown.score,
                            rate,
                        )
                end = window.start + len(window.batches)  # saved only between steps
                if end < batches and training.save_due():
                    training.save_or_stop(Position(epoch, end, sums.saved()))
            images += sums.images
            with training.whole(job.on_epoch is not None):  # the weights so far, whole
                if job.on_epoch is not None and training.saving:
                    lr = training.optimizer.param_groups[0]["lr"]
                    job.on_epoch(sums.row(epoch, training.steps, shown, job.task.score_name, lr))
            training.end_epoch(epoch, shown)
    training.merge()
    seconds = time.perf_counter() - started
    if training.saving and not job.keep_state:  # the caller's artifact holds the result now
        training.state.discard()
    resumed_from = training.resumed.describe() if training.resumed else None
    images_per_s = images / max(seconds, 1e-9)
    return FitResult(seconds, images_per_s, epochs, shown.loss, shown.score, resumed_from)


@dataclass
class Window:
    """The batches of one optimizer step; `start` is the first one's number in the epoch."""

    start: int
    batches: list[Batch]


Trained = tuple[int, Batch, torch.Tensor, torch.Tensor, torch.Tensor]
"""One trained batch: its number in the epoch, the batch, its logits, its (mean) loss and its
counted items."""


class Training:
    """What `fit` builds once, in this order: the model on its device and in its memory
    format (with LoRA adapters, when asked), the optimizer (over the trainable parameters of
    the model and the loss), the scheduler, fp16's loss scaler, the state (resumed from when a
    saved one is found), the model as trained (DDP, torch.compile) and the loader of this
    rank's share; then one optimizer step at a time."""

    def __init__(
        self, trainee: Trainee, recipe: Recipe, job: Job, knowledge: KnowledgeSource | None
    ) -> None:
        model, loss_fn, device = trainee.model, trainee.loss_fn, job.device
        if loss_fn.needs_teacher and knowledge is None:
            raise ValueError(f"{type(loss_fn).__name__} needs teacher knowledge; none was given")
        self.trainee, self.recipe, self.job, self.knowledge = trainee, recipe, job, knowledge
        self.sharded = recipe.strategy == "fsdp" and distributed.active()
        numerics.prepare(model.to(device), recipe.precision)
        # LoRA: the model's own weights frozen until `merge`
        self.adapters = Adapters(model, recipe.lora) if recipe.lora is not None else None
        # FSDP trains a sharded copy, gathered back into `model` by `merge`
        self.model = sharding.shard(model, device, recipe.precision) if self.sharded else model
        loss_fn.to(device)
        every = (*self.model.parameters(), *loss_fn.parameters())
        trainable = [p for p in every if p.requires_grad]
        self.optimizer = recipe.optimizer(trainable)
        self.loader = distributed.shard_loader(trainee.loader)
        # optimizer steps per epoch (at least one), and the batches they take
        self.steps = max(1, len(self.loader) // recipe.accumulate)
        self.batches = min(len(self.loader), self.steps * recipe.accumulate)
        self.scheduler = build_scheduler(recipe.scheduler, self.optimizer, self.steps)
        self.per_batch = getattr(self.scheduler, "per_batch", False)
        self.scaler = numerics.grad_scaler(recipe.precision, device)
        self.state = job.state or TrainState(None)
        parts = sharding.ShardedParts if self.sharded else Parts
        self.parts = parts(self.model, loss_fn, self.optimizer, self.scheduler, self.scaler)
        # a sharded state is read whole by every rank: into host memory
        self.resumed = self.state.resume(self.parts, CPU if self.sharded else device)
        # DDP shares `model`'s weights; FSDP's copy is trained as it is
        self.ddp = self.model if self.sharded else distributed.wrap_model(model, device)
        self.trained: Callable[..., torch.Tensor] = self.ddp
        if recipe.compile:
            self.trained = torch.compile(self.ddp)
        lr = self.optimizer.defaults.get("lr")  # the configured rate, named in a NaN message
        self.watch = FiniteWatch(job.label, loss_fn, lr, recipe.precision.name)
        self.saving = distributed.is_main()

    def windows(self, epoch: int, first: int) -> Iterator[Window]:
        """The epoch's batches from the `first`-th on, `accumulate` at a time (drawn before
        the step that trains on them, which counts their items first)."""
        size, batches = self.recipe.accumulate, self.loader.epoch(epoch, first)
        for start in range(first, self.batches, size):
            window = list(itertools.islice(batches, min(size, self.batches - start)))
            if not window:
                return
            yield Window(start, window)

    def update(self, epoch: int, window: Window, tap: FeatureTap) -> Iterator[Trained]:
        """One optimizer step on `window`: each batch's forward pass, loss and backward pass
        of its share of the window's loss (yielded as it is done), then the update."""
        counts = [counted_items(batch) for batch in window.batches]
        total = torch.stack(counts).sum().clamp_min(1)
        last = len(window.batches) - 1
        self.optimizer.zero_grad(set_to_none=True)
        for offset, (batch, counted) in enumerate(zip(window.batches, counts, strict=True)):
            step = window.start + offset
            # DDP averages the gradients over the processes once, at the last backward pass
            with distributed.no_sync(self.ddp) if offset < last else nullcontext():
                logits, loss = self._loss(epoch, step, batch, tap)
                share = loss if last == 0 else loss * (counted / total)
                (share if self.scaler is None else self.scaler.scale(share)).backward()
            yield step, batch, logits, loss, counted
        self._step()
        if self.per_batch:
            self.scheduler.step()

    def _loss(
        self, epoch: int, step: int, batch: Batch, tap: FeatureTap
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One batch's forward pass: its logits and (mean) loss."""
        precision, loss_fn = self.recipe.precision, self.trainee.loss_fn
        with numerics.autocast(precision, self.job.device):
            # fills tap.outputs with the student's layers
            logits = self.trained(numerics.inputs(batch.x, precision)).float()
        teacher_logits, features = _loss_inputs(loss_fn, self.knowledge, epoch, batch, tap)
        flat = self.job.task.flatten(logits, teacher_logits, batch.y)
        loss = loss_fn(*learned_rows(*flat, batch.labelled), features)
        self.watch.record(step, self.batches, teacher_logits, features, logits, loss)
        return logits, loss

    def _step(self) -> None:
        """Gradient clipping and optimizer step (through fp16's loss scaler when there is
        one: gradients are unscaled before they are clipped)."""
        optimizer, scaler, clip = self.optimizer, self.scaler, self.recipe.clip_grad_norm
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

    def save_due(self) -> bool:
        """Whether to save within the epoch now: `every_s` has passed or a signal came in,
        on any rank (the ranks stop together; under FSDP they gather the state together)."""
        due = self.state.due() or pending() is not None
        return distributed.any_rank(due, self.job.device)

    def save_or_stop(self, position: Position) -> None:
        """Save the state at `position` (rank 0 writes; under FSDP every rank gathers it),
        then stop when a signal came in meanwhile."""
        if self.saving or self.sharded:
            self.state.save(self.parts, position, write=self.saving)
        signum = distributed.signal_on_any_rank(pending(), self.job.device)
        if signum is not None:
            saved = self.state.path if self.saving else None
            raise Interrupted(signum, saved, f"{self.job.label}, {position.describe()}")

    @contextmanager
    def whole(self, needed: bool) -> Iterator[None]:
        """When `needed`, the caller's model holds the weights trained so far within the block
        (under FSDP: gathered by every rank onto the device, back on the CPU after)."""
        if not (needed and self.sharded):
            yield
            return
        sharding.gather_into(self.model, self.trainee.model, self.job.device)
        try:
            yield
        finally:
            self.trainee.model.to(CPU)

    def merge(self) -> None:
        """The trained weights in the caller's model, whole on every rank (gathered from FSDP's
        shards), with LoRA adapters folded into them (the plain model again)."""
        if self.sharded:
            sharding.gather_into(self.model, self.trainee.model, self.job.device)
        if self.adapters is not None:
            self.adapters.merge()


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
