"""Stage 2, soft labels: the teacher's outputs stored once in the cache (`static`: one clean
view; `views`: every epoch's augmented view), or the teacher run online while distilling.
The format is kdcli/knowledge/format.py's; this stage decides the mode and the cache key."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from kdcli.data import Dataset
from kdcli.data.memory import Split
from kdcli.data.text import window_split
from kdcli.engine import distributed
from kdcli.errors import RunError
from kdcli.knowledge.format import (
    SOFT_LABEL_FORMAT,
    _load_soft_labels,
    _store_views,
    load_features,
    nonfinite_files,
    nonfinite_rows,
    predict_with_features,
    save_static,
    views_bytes,
)
from kdcli.knowledge.generate import generate_windows
from kdcli.knowledge.teacher import (
    OnlineTeacher,
    StoredKnowledge,
    TeacherKnowledge,
    choose_feature_source,
    example_batch,
    feature_shapes,
    stored_feature_bytes,
)
from kdcli.losses import DistillationLoss
from kdcli.losses.schedule import Schedule
from kdcli.pipeline.common import (
    Context,
    Model,
    Stage,
    _log_stage,
    entry_stage,
    eval_batch_size,
    get_or_make,
    plain,
    precision_key,
)
from kdcli.store.cache import Entry, fingerprint
from kdcli.tasks import Task

log = logging.getLogger(__name__)


def soft_label_mode(cfg: DictConfig, data: Dataset, task: Task) -> str:
    """`soft_labels.mode`, with `auto` resolved: one clean view (`static`) when the data is not
    augmented (every view is the clean one), else the teacher's output on every epoch's view
    (`views`), when that store fits in `soft_labels.max_gb`; else the teacher runs `online`
    (a language model's full distributions over a large vocabulary rarely fit: top-k does)."""
    mode = cfg.soft_labels.mode
    if mode != "auto":
        return mode
    epochs, stored = (cfg.student.epochs, "views") if data.augmented else (1, "static")
    needed = views_bytes(
        epochs,
        data.num_train * math.prod(task.output_shape(data.info)[:-1]),  # rows: text has T each
        data.info.num_classes,
        _topk(cfg, data),
        np.dtype(cfg.soft_labels.dtype),
    )
    return stored if needed <= cfg.soft_labels.max_gb * 2**30 else "online"


def _topk(cfg: DictConfig, data: Dataset) -> int | None:
    """How many probabilities to keep per view; None keeps all the logits."""
    k = cfg.soft_labels.topk
    return None if k is None or k >= data.info.num_classes else int(k)


def _on_policy_share(cfg: DictConfig) -> str:
    """How much of the student's text it writes itself, in words, for the log: with a
    schedule, the shares of its first and last epochs, as the schedule sets them."""
    if cfg.loss.schedule.get("lmbda") is None:
        return f"{cfg.loss.lmbda:.0%} of them written by the student (loss.lmbda)"
    ramp, epochs = Schedule(**plain(cfg.loss.schedule.lmbda)), cfg.student.epochs
    first, last = ramp.at(0, epochs), ramp.at(epochs - 1, epochs)
    return f"{first:.0%} to {last:.0%} of them written by the student (loss.schedule.lmbda)"


def soft_label_stage(
    ctx: Context, teacher: Model, mode: str, layers: tuple[str, ...] = ()
) -> tuple[StoredKnowledge, Entry, Stage]:
    """Stage 2: the teacher's outputs for every training sample, stored once as plain arrays.

    `static`: on the clean image, plus the outputs of `layers` when a feature loss stores
    them (feature-<path>.npy). `views`: on the exact augmented view the student draws in each
    of its epochs ([E, N, ...]: the student's loader, seed and batch size are in the key).
    """
    cfg, data, task, device = ctx.cfg, ctx.data, ctx.task, ctx.device
    started = time.perf_counter()
    dtype = np.dtype(cfg.soft_labels.dtype)
    topk = _topk(cfg, data)
    key_parts = [SOFT_LABEL_FORMAT, teacher.key, plain(cfg.dataset), mode, dtype.name, topk]
    if mode == "views":
        key_parts += [cfg.student.epochs, cfg.student.batch_size, cfg.seed]
    if mode == "generate":
        key_parts += [plain(cfg.soft_labels.generate), cfg.seed]
    key_parts += precision_key(teacher.precision)  # the teacher's forward passes' precision
    key = fingerprint("soft_labels", *key_parts, *([list(layers)] if layers else []))
    # the views of finished epochs outlive a killed build (the entry's lock covers them)
    saving = mode == "views" and cfg.checkpoint.save and distributed.is_main()
    views_progress = ctx.cache.partial_path("soft_labels", teacher.name, key) if saving else None

    def make(tmp: Path) -> dict[str, Any]:
        begun = time.perf_counter()
        features: dict[str, torch.Tensor] = {}
        feature_dtypes: dict[str, str] = {}
        if mode == "views":
            images, clamped, resumed = _store_views(
                tmp,
                teacher.module,
                data.train_loader(cfg.student.batch_size, cfg.seed),
                cfg.student.epochs,
                data.num_train,
                task.output_shape(data.info),
                topk,
                dtype,
                lambda logits: _check_teacher_output(teacher, logits, "logits"),
                teacher.precision,
                progress=views_progress,
            )
        else:
            resumed = 0
            size = eval_batch_size(ctx, teacher.module, teacher.precision)
            source = data
            if mode == "generate":  # the teacher writes the text it then labels
                source = data.with_train(_write_windows(ctx, teacher, size, tmp))
            loader = source.eval_loader("train", size)
            if layers:
                logits, features = predict_with_features(
                    teacher.module, loader, layers, device, teacher.precision
                )
            else:  # split across ranks under torchrun
                logits = distributed.predict_sharded(
                    teacher.module, loader, device, teacher.precision
                )
            _check_teacher_output(teacher, logits, "logits")
            for path, values in features.items():
                _check_teacher_output(teacher, values, f"outputs at layer {path}")
            clamped, feature_dtypes = save_static(tmp, logits, features, topk, dtype)
            images = logits.shape[0]
        if clamped:
            log.warning(
                "soft labels  %d row(s) of teacher logits span more than %s holds: their tail "
                "is clamped (exact for softmax over all classes; for dkd or kd_ls use "
                "soft_labels.dtype=float32)",
                clamped,
                dtype.name,
            )
        _check_store(tmp, teacher)
        seconds = time.perf_counter() - begun
        return {
            "mode": mode,
            "teacher": teacher.key,
            "topk": topk,
            "dtype": dtype.name,
            "soft_label_format": SOFT_LABEL_FORMAT,
            "clamped_rows": clamped,
            "feature_dtypes": feature_dtypes,
            "features": {path: list(values.shape) for path, values in features.items()},
            "seconds": seconds,
            "images_per_s": images / max(seconds, 1e-9),
            "resumed_from": f"epoch {resumed + 1}, batch 0" if resumed else None,
        }

    entry = get_or_make(ctx.cache, "soft_labels", teacher.name, key, make)
    soft_labels = _load_soft_labels(entry.path, data.num_train, data.info.num_classes, mode, device)
    features = load_features(entry.path, layers, device)
    stage = entry_stage(entry, time.perf_counter() - started, teacher.precision)
    _log_stage("soft labels", entry, stage)
    train_data = None
    if mode == "generate":
        windows = torch.from_numpy(np.load(entry.file(WINDOWS), allow_pickle=False)).long()
        train_data = data.with_train(window_split(windows.to(device)))
    return StoredKnowledge(soft_labels, features, train_data), entry, stage


WINDOWS = "windows.npy"  # soft_labels.mode=generate: the teacher-written training windows


def _write_windows(ctx: Context, teacher: Model, batch_size: int, directory: Path) -> Split:
    """Each training window's prompt, continued by the teacher (knowledge/generate.py); saved
    in the entry being built, so a rerun trains on the same text."""
    settings, train = ctx.cfg.soft_labels.generate, ctx.data.train  # text: in memory
    windows = torch.cat([train.images, train.labels[:, -1:]], dim=1)  # [N, T + 1]
    prompt = max(1, round(settings.prompt_fraction * windows.shape[1]))
    written = generate_windows(
        teacher.module,
        windows,
        prompt,
        float(settings.temperature),
        int(ctx.cfg.seed),
        batch_size,
        teacher.precision,
    )
    np.save(directory / WINDOWS, written.cpu().numpy().astype(np.int32), allow_pickle=False)
    log.info(
        "soft labels  the teacher wrote %d windows (%d prompt tokens each, %d sampled)",
        written.shape[0],
        prompt,
        written.shape[1] - prompt,
    )
    return window_split(written)


def _check_teacher_output(teacher: Model, values: torch.Tensor, what: str) -> None:
    """Non-finite teacher outputs are the teacher's fault: stop with the fix for its source."""
    bad = nonfinite_rows(values)
    if not bad:
        return
    if teacher.source == "checkpoint":
        fix = f"check teacher.checkpoint={teacher.checkpoint}: does it hold a trained model?"
    else:
        fix = (
            f"retrain it (e.g. a lower teacher.optimizer.lr or more teacher.epochs), or delete "
            f"its cache entry {teacher.checkpoint.parent} to train it afresh."
        )
    raise RunError(
        f"the teacher {teacher.name} gave NaN or inf {what} on {bad} training image(s) while "
        f"its soft labels were computed (stage soft_labels), so it cannot teach; {fix}"
    )


def _check_store(directory: Path, teacher: Model) -> None:
    """Every stored array is finite, read back from disk before the manifest is written."""
    if bad := nonfinite_files(directory):
        raise RunError(
            f"the soft labels of teacher {teacher.name} hold NaN or inf in {', '.join(bad)} "
            "after encoding (stage soft_labels), though the teacher's outputs were finite; "
            "nothing was cached. Please report this as a kdcli bug."
        )


def teacher_knowledge(
    ctx: Context, teacher: Model, loss_fn: DistillationLoss
) -> tuple[TeacherKnowledge, dict[str, Any], Stage | None]:
    """What the student stage learns from: stored soft labels (`static` or `views`, and stored
    teacher features when they match the student's view and fit the budget), or the teacher
    run online (`soft_labels.mode=online`, or features that cannot be stored)."""
    cfg, data = ctx.cfg, ctx.data
    layers = loss_fn.teacher_layers
    mode = soft_label_mode(cfg, data, ctx.task)
    on_policy = getattr(loss_fn, "on_policy", False)
    if on_policy:  # no store can hold the teacher's view of text the student writes
        mode = "online"
    if layers and mode != "online":
        shapes = feature_shapes(teacher.module, layers, example_batch(data))
        needed = stored_feature_bytes(shapes, data.num_train, np.dtype(cfg.soft_labels.dtype))
        source = choose_feature_source(
            cfg.soft_labels.features,
            augmented=data.augmented,
            needed_bytes=needed,
            budget_mb=cfg.soft_labels.feature_budget_mb,
        )
        if source == "online":  # the teacher runs anyway: take its logits on the same view
            mode = "online"
    if mode == "online":
        share = _on_policy_share(cfg) if on_policy else None
        log.info(
            "soft labels  none stored: the teacher runs online on the student's %s",
            f"batches, {share}" if on_policy else "views",
        )
        report = {"mode": "online", "features": "online" if layers else "none"}
        if on_policy:
            report["on_policy"] = plain(cfg.loss.lmbda)
            if cfg.loss.schedule.get("lmbda") is not None:
                report["on_policy_schedule"] = plain(cfg.loss.schedule.lmbda)
        return (
            OnlineTeacher(teacher.module, layers, teacher.precision),
            {**report, "layers": list(layers), "reused": False, "bytes": 0},
            None,
        )
    knowledge, entry, stage = soft_label_stage(ctx, teacher, mode, layers)
    report = {
        "mode": mode,
        "features": "stored" if layers else "none",
        "layers": list(layers),
        "reused": entry.reused,
        "path": str(entry.path),
        "bytes": sum(f.stat().st_size for f in entry.path.glob("*.npy")),
        "dtype": entry.manifest["dtype"],
        "topk": entry.manifest["topk"],
    }
    return knowledge, report, stage
