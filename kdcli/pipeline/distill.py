"""Stage 3, distillation: the student learns from the teacher's knowledge through the one
training loop; the baseline (the same student, plain cross-entropy) comes from the cache."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, replace

from torch import nn

from kdcli.data.base import Loader
from kdcli.data.instruct import InstructDataset
from kdcli.engine import distributed
from kdcli.engine.loop import Job, KnowledgeSource, Recipe, Trainee, fit
from kdcli.engine.precision import Precision
from kdcli.engine.state import Built, TrainState
from kdcli.knowledge.on_policy import OnPolicyBatches
from kdcli.losses import DistillationLoss
from kdcli.pipeline.common import (
    Context,
    Model,
    StageReport,
    distill_data,
    epoch_recorder,
    model_precision,
    train_state,
)
from kdcli.pipeline.keys import baseline_key, student_key
from kdcli.pipeline.teacher import train_or_reuse
from kdcli.store.cache import try_lock
from kdcli.store.checkpoint import save_model

log = logging.getLogger(__name__)


def student_stage(
    ctx: Context,
    built: Built,
    training: Recipe,
    loss_fn: DistillationLoss,
    knowledge: KnowledgeSource | None,
    teacher: Model,
) -> tuple[Model, StageReport]:
    """Stage 3: distill the student with `loss_fn` from `knowledge` (for logit losses, the
    stored soft labels: the teacher does not run here)."""
    cfg, task, run_dir = ctx.cfg, ctx.task, ctx.run_dir
    model = built.module
    precision = model_precision(ctx, model)
    key = student_key(cfg, teacher=teacher.key, precision=precision)
    lock = ctx.cache.lock_path("students", cfg.student.name, key)
    with try_lock(lock) if distributed.is_main() else nullcontext(True) as alone:
        alone = distributed.broadcast(alone) if distributed.active() else alone
        if alone:
            state = train_state(ctx, "students", cfg.student.name, key)
        else:  # two processes never resume (or save) the same state at once
            log.warning(
                "student      another process is distilling the same student (%s is locked); "
                "this one trains without a resumable state",
                lock,
            )
            state = TrainState(None)
        built.restore_rng()
        result = fit(
            Trainee(model, _training_batches(ctx, knowledge, loss_fn, model, precision), loss_fn),
            replace(training, precision=precision, compile=bool(cfg.compile)),
            Job(
                "student",
                task,
                ctx.device,
                state=state,
                keep_state=True,  # until the report is written (run.py)
                on_epoch=epoch_recorder(ctx, "student", model),
            ),
            knowledge,
        )
        ctx.finished.append(state)
    path = run_dir / "student.pt"
    if distributed.is_main():
        save_model(path, model, **built.record, dataset=asdict(ctx.data.info))
    log.info(
        "student      distilled %s in %.1f s (%s img/s, %s%s), train %s %.3f",
        cfg.student.name,
        result.seconds,
        f"{result.images_per_s:,.0f}",
        precision.describe(),
        f", resumed at {result.resumed_from}" if result.resumed_from else "",
        task.score_label,
        result.final_train_score,
    )
    return (
        Model(cfg.student.name, model, path, "", "trained", precision, record=built.record),
        StageReport(
            result.seconds,
            result.images_per_s,
            False,
            precision.describe(),
            result.resumed_from,
        ),
    )


def _training_batches(
    ctx: Context,
    knowledge: KnowledgeSource | None,
    loss_fn: DistillationLoss,
    model: nn.Module,
    precision: Precision,
) -> Loader:
    """The student's training batches: the run's data (or the teacher's text), with a
    `loss.lmbda` share of the batches rewritten by the student itself (on-policy)."""
    cfg = ctx.cfg
    data = distill_data(ctx, knowledge)
    loader = data.train_loader(cfg.student.batch_size, cfg.seed)
    if not loss_fn.on_policy:
        return loader
    writing = cfg.soft_labels.generate
    answers = None  # instruction data: the student writes each answer to its end
    if isinstance(data, InstructDataset):
        answers = (data.vocabulary.eos_id, data.vocabulary.pad_id)
    return OnPolicyBatches(
        loader,
        model,
        loss_fn.on_policy_share,  # as the loss's schedule sets it for the epoch
        float(writing.prompt_fraction),
        float(writing.temperature),
        int(cfg.seed),
        precision,
        answers,
    )


def baseline_stage(
    ctx: Context, build: Callable[[], Built], training: Recipe
) -> tuple[Model, StageReport]:
    """The same student trained with plain cross-entropy, same settings and seed (cached)."""
    return train_or_reuse(ctx, "student", "baseline", build(), training, baseline_key)
