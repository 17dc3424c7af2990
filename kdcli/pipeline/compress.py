"""Stage 3b, compression (`compress=int8|prune|prune_int8`): the distilled student pruned and
fine-tuned by distillation from the same teacher knowledge, and/or quantized to int8.

The compressed model is saved as `compressed.pt` in the run directory, a kdcli model file
that also records the compression (an int8 state holds the packed int8 weights and the
calibrated scales), and evaluated beside the others.
"""

from __future__ import annotations

import copy
import functools
import logging
import time
from dataclasses import asdict

import torch

from kdcli.engine import compress as compression
from kdcli.engine.loop import Job, KnowledgeSource, Recipe, Trainee, fit
from kdcli.engine.precision import FP32
from kdcli.losses import DistillationLoss
from kdcli.pipeline.common import Context, Model, StageReport, distill_data, epoch_recorder
from kdcli.store.checkpoint import save_model

log = logging.getLogger(__name__)


def compress_stage(
    ctx: Context,
    plan: compression.Compression,
    student: Model,
    training: Recipe,
    loss_fn: DistillationLoss,
    knowledge: KnowledgeSource | None,
) -> tuple[Model, StageReport]:
    """The compressed student (with its sparsity: the fraction of zero weights) and its
    stage."""
    started = time.perf_counter()
    model = copy.deepcopy(student.module)
    if plan.amount > 0:
        compression.prune_magnitude(model, plan.amount)
        if plan.epochs > 0:
            _fine_tune(ctx, plan, model, training, loss_fn, knowledge)
        compression.make_pruning_permanent(model)
    zeros = compression.sparsity(model)
    if plan.int8:
        model = compression.quantize_int8(model, _calibration_batches(ctx, plan))
    path = ctx.run_dir / "compressed.pt"
    save_model(  # a kdcli model file: kd eval and kd export rebuild it (config/from_files.py)
        path, model, **student.record, dataset=asdict(ctx.data.info), compression=asdict(plan)
    )
    seconds = time.perf_counter() - started
    log.info(
        "compress     %s (%s) in %.1f s, %.0f%% of weights zero -> %s",
        student.name,
        plan.describe(),
        seconds,
        100 * zeros,
        path,
    )
    name = f"{student.name} ({plan.describe()})"
    compressed = Model(name, model, path, "", "compressed", FP32, zeros)
    return compressed, StageReport(seconds, None, False, "int8" if plan.int8 else "fp32")


def _fine_tune(ctx, plan, model, training, loss_fn, knowledge) -> None:
    """A short distillation of the pruned model (the masks keep pruned weights at zero), at a
    lower learning rate, cosine-annealed over `plan.epochs`."""
    optimizer = training.optimizer
    lr = optimizer.keywords.get("lr") if isinstance(optimizer, functools.partial) else None
    if lr is not None:
        optimizer = functools.partial(optimizer, lr=lr * plan.lr_scale)
    scheduler = functools.partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=plan.epochs)
    loader = distill_data(ctx, knowledge).train_loader(ctx.cfg.student.batch_size, ctx.cfg.seed)
    fit(
        Trainee(model, loader, loss_fn),
        # fp32, no gradient clipping; the student's batches per step (never LoRA: checks.py)
        Recipe(plan.epochs, optimizer, scheduler, accumulate=training.accumulate),
        Job("fine-tune", ctx.task, ctx.device, on_epoch=epoch_recorder(ctx, "compressed", model)),
        knowledge if loss_fn.needs_teacher else None,
    )


def _calibration_batches(ctx: Context, plan: compression.Compression) -> list[torch.Tensor]:
    """Clean training images, `plan.calibration_images` of them, in batches of 64."""
    batches, seen = [], 0
    for batch in ctx.data.eval_loader("train", 64).epoch(0):
        batches.append(batch.x)
        seen += len(batch.x)
        if seen >= plan.calibration_images:
            break
    return batches
