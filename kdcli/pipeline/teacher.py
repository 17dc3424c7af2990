"""Stage 1, the teacher: loaded from `teacher.checkpoint`, taken from the cache, or trained.

`train_or_reuse` also makes the baseline (the student trained with plain cross-entropy).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from kdcli.engine import distributed
from kdcli.engine.infer import predict
from kdcli.engine.loop import Job, Recipe, Trainee, fit
from kdcli.engine.precision import FP32, Precision
from kdcli.engine.state import Built
from kdcli.errors import RunError
from kdcli.losses import CrossEntropy
from kdcli.models.lm.endpoint import EndpointLM, tokenizer_fingerprint
from kdcli.pipeline.common import (
    Context,
    Model,
    StageReport,
    describe_model,
    entry_stage,
    epoch_recorder,
    eval_batch_size,
    get_or_make,
    log_stage,
    model_precision,
    train_state,
)
from kdcli.pipeline.evaluate import eval_splits
from kdcli.pipeline.keys import checkpoint_key, endpoint_key, teacher_key
from kdcli.store.atomic import write_json_atomic
from kdcli.store.checkpoint import load_model, save_model
from kdcli.store.evaluation import StoredEvaluation

log = logging.getLogger(__name__)


def train_or_reuse(
    ctx: Context,
    role: str,
    label: str,
    built: Built,
    training: Recipe,
    key_of: Callable[[DictConfig, Precision], str],
) -> tuple[Model, StageReport]:
    """Train `cfg[role]` with plain cross-entropy, or reuse the cached model (teacher, baseline).

    The cache entry lives under `<label>s/`, named by `key_of` (kdcli/pipeline/keys.py).
    """
    cfg, data, task, device = ctx.cfg, ctx.data, ctx.task, ctx.device
    started = time.perf_counter()
    stage_cfg = cfg[role]
    model = built.module
    precision = model_precision(ctx, model)
    key = key_of(cfg, precision)

    def make(tmp: Path) -> dict[str, Any]:
        built.restore_rng()
        result = fit(
            Trainee(model, data.train_loader(stage_cfg.batch_size, cfg.seed), CrossEntropy()),
            replace(training, precision=precision, compile=bool(cfg.compile)),
            Job(
                label,
                task,
                device,
                state=train_state(ctx, f"{label}s", stage_cfg.name, key),
                on_epoch=epoch_recorder(ctx, label, model),
            ),
        )
        save_model(tmp / "model.pt", model, **built.record, dataset=asdict(data.info))
        return {
            "name": stage_cfg.name,
            "seconds": result.seconds,
            "images_per_s": result.images_per_s,
            f"train_{task.score_name}": result.final_train_score,
            "precision": precision.name,
            "resumed_from": result.resumed_from,
        }

    entry = get_or_make(ctx.cache, f"{label}s", stage_cfg.name, key, make)
    if entry.reused:
        described = describe_model(stage_cfg, data.info)
        load_model(model, entry.file("model.pt"), f"cache entry {entry.path}", described)
    seconds = time.perf_counter() - started
    stage = entry_stage(entry, seconds, precision)
    log_stage(label, entry, stage)
    source = "cache" if entry.reused else "trained"
    path = entry.file("model.pt")
    weights = str(entry.manifest["files"].get("model.pt", ""))
    trained = Model(
        stage_cfg.name,
        model.to(device),
        path,
        key,
        source,
        precision,
        record=built.record,
        weights=weights,
    )
    return trained, stage


def teacher_stage(ctx: Context, built: Built, training: Recipe) -> tuple[Model, StageReport]:
    """Stage 1: load `teacher.checkpoint`, or train the teacher (or take it from the cache).

    A checkpoint was loaded, and its fit checked, when the teacher was built."""
    cfg = ctx.cfg
    started = time.perf_counter()
    if isinstance(built.module, EndpointLM):
        return served_teacher(ctx, built.module)
    if cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        model = built.module  # the checkpoint's weights (kdcli.config.objects loaded them)
        key = checkpoint_key(cfg)
        precision = model_precision(ctx, model)
        stage = StageReport(time.perf_counter() - started, None, True, precision.describe())
        log.info("teacher      loaded %s from %s", cfg.teacher.name, path)
        loaded = Model(cfg.teacher.name, model.to(ctx.device), path, key, "checkpoint", precision)
        return loaded, stage
    return train_or_reuse(ctx, "teacher", "teacher", built, training, teacher_key)


def served_teacher(ctx: Context, module: EndpointLM) -> tuple[Model, StageReport]:
    """`teacher=endpoint`: the server's model (checked before the run started), recorded in
    the run directory as `teacher-endpoint.json` (its address, model id, tokenizer hash)."""
    cfg = ctx.cfg
    tokenizer = tokenizer_fingerprint(getattr(ctx.data, "vocabulary", None))
    key = endpoint_key(cfg, tokenizer)
    record = ctx.run_dir / "teacher-endpoint.json"
    if distributed.is_main():
        described = {"url": str(cfg.teacher.url), "model": str(cfg.teacher.model)}
        write_json_atomic(record, {**described, "tokenizer": tokenizer, "key": key})
    log.info("teacher      %s at %s", cfg.teacher.model, cfg.teacher.url)
    stage = StageReport(0.0, None, False, "server")
    return Model(cfg.teacher.name, module.to(ctx.device), record, key, "endpoint"), stage


SPLIT_NAMES = {"val": "validation", "test": "test"}


def check_teacher(
    ctx: Context, teacher: Model, stored: StoredEvaluation | None = None
) -> dict[str, torch.Tensor]:
    """The teacher's outputs on each evaluation split, right after its stage (the evaluate
    stage reuses them), or its `stored` ones (kdcli/pipeline/stored_eval.py). Stops the run,
    before any soft labels are computed, when the teacher's headline metric falls short of
    `teacher.min_top1`."""
    cfg, data, task = ctx.cfg, ctx.data, ctx.task
    if stored is not None:
        logits = stored.logits
    else:
        size = eval_batch_size(ctx, teacher.module, FP32)  # evaluation runs in fp32
        logits = {
            split: predict(teacher.module, data.eval_loader(split, size), ctx.device)
            for split in eval_splits(data)
        }
    minimum = cfg.teacher.min_top1
    split = "val" if "val" in data.splits else "test"
    score = task.headline(teacher.module, logits[split], data, split)
    where = f"on the {SPLIT_NAMES[split]} split"
    log.info("teacher      %s %.2f%% %s", task.metric_label, 100 * score, where)
    if minimum is not None and score < minimum:
        raise RunError(
            f"teacher.min_top1={minimum}: the teacher ({teacher.name}) reaches {100 * score:.2f}% "
            f"{task.metric_label} {where}, below the {100 * minimum:.2f}% asked, so the run "
            "stopped before computing soft labels. Train a better teacher (e.g. more "
            "teacher.epochs or another teacher.optimizer.lr), load one with teacher.checkpoint, "
            "or lower teacher.min_top1 (the trained teacher is cached: a rerun reuses it)."
        )
    return logits
