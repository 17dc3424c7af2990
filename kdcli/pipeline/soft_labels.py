"""Stage 2, soft labels: the teacher's outputs stored once in the cache (`static`: one clean
view; `views`: every epoch's augmented view; `generate`: on text the teacher wrote), or the
teacher run online while distilling. The mode is kdcli/knowledge/mode.py's decision, the
store kdcli/knowledge/format.py's, the cache key kdcli/pipeline/keys.py's."""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from kdcli.data import Dataset, InMemoryDataset
from kdcli.data.instruct import InstructDataset, prompt_lengths, sequences
from kdcli.data.text import window_split
from kdcli.engine import distributed
from kdcli.engine.loop import KnowledgeSource
from kdcli.errors import RunError
from kdcli.knowledge.format import (
    nonfinite_files,
    nonfinite_rows,
    read_store,
    stored_bytes,
    stored_topk,
    views_bytes,
    write_static,
    write_views,
)
from kdcli.knowledge.generate import generate_windows
from kdcli.knowledge.mode import on_policy_setting, soft_label_mode
from kdcli.knowledge.predict import predict_with_features
from kdcli.knowledge.served import generate_served, write_served
from kdcli.knowledge.teacher import (
    OnlineTeacher,
    StoredKnowledge,
    example_batch,
    feature_shapes,
    stored_feature_bytes,
)
from kdcli.losses import DistillationLoss
from kdcli.losses.schedule import Schedule
from kdcli.models.lm.endpoint import EndpointLM
from kdcli.pipeline.common import (
    Context,
    Model,
    StageReport,
    entry_stage,
    eval_batch_size,
    get_or_make,
    log_stage,
    to_container,
)
from kdcli.pipeline.keys import soft_labels_key
from kdcli.store.cache import Entry

log = logging.getLogger(__name__)


class OnPolicySettings(TypedDict, total=False):
    """What has the student write some of its text, as an online run records it."""

    on_policy: float  # loss.lmbda
    on_policy_schedule: dict[str, Any]  # loss.schedule.lmbda, when set


class _Summary(TypedDict):
    mode: str  # static, views, generate, online, or none (the loss needs no teacher)
    reused: bool


class SoftLabelSummary(_Summary, OnPolicySettings, total=False):
    """How the student got the teacher's outputs: report.json's `soft_labels`. A store
    records where it is and what it holds (`path`, `bytes`, `dtype`, `topk`); `features`:
    whether the tapped teacher layers are stored, computed online, or none."""

    features: str
    layers: list[str]
    path: str
    bytes: int
    dtype: str
    topk: int | None


def teacher_knowledge(
    ctx: Context, teacher: Model, loss_fn: DistillationLoss
) -> tuple[KnowledgeSource, SoftLabelSummary, StageReport | None]:
    """What the student stage learns from: stored soft labels (`static`, `views` or
    `generate`, and stored teacher features when they match the student's view and fit the
    budget), or the teacher run online (`soft_labels.mode=online`, on-policy distillation,
    a store over `soft_labels.max_gb`, or features that cannot be stored)."""
    layers = loss_fn.teacher_layers
    mode = resolved_mode(ctx, teacher, layers)
    if mode == "online":
        return _online(ctx, teacher, layers), _online_report(ctx.cfg, layers), None
    knowledge, entry, stage = soft_label_stage(ctx, teacher, mode, layers)
    report: SoftLabelSummary = {
        "mode": mode,
        "features": "stored" if layers else "none",
        "layers": list(layers),
        "reused": entry.reused,
        "path": str(entry.path),
        "bytes": stored_bytes(entry.path),
        "dtype": entry.manifest["dtype"],
        "topk": entry.manifest["topk"],
    }
    return knowledge, report, stage


def on_policy(cfg: DictConfig) -> str | None:
    """The setting that has the student write some of its text, None when nothing does."""
    lmbda = OmegaConf.select(cfg, "loss.lmbda", default=0)
    return on_policy_setting(lmbda, OmegaConf.select(cfg, "loss.schedule.lmbda", default=None))


def resolved_mode(ctx: Context, teacher: Model, layers: tuple[str, ...]) -> str:
    """`soft_labels.mode` as this run's data, task and loss decide it (kdcli/knowledge/mode.py)."""
    cfg, data, settings = ctx.cfg, ctx.data, ctx.cfg.soft_labels
    dtype, num_classes = np.dtype(settings.dtype), data.info.num_classes
    rows = data.num_train * math.prod(ctx.task.output_shape(data.info)[:-1])  # text: T each
    topk = stored_topk(settings.topk, num_classes)
    feature_bytes = 0
    if layers:
        shapes = feature_shapes(teacher.module, layers, example_batch(data))
        feature_bytes = stored_feature_bytes(shapes, data.num_train, dtype)
    return soft_label_mode(
        settings.mode,
        language_model=data.info.modality == "text",
        on_policy=on_policy(cfg),
        augmented=data.augmented,
        epoch_bytes=views_bytes(1, rows, num_classes, topk, dtype),  # one view of each sample
        epochs=cfg.student.epochs,
        max_gb=settings.max_gb,
        features=settings.features if layers else None,
        feature_bytes=feature_bytes,
        feature_budget_mb=settings.feature_budget_mb,
    )


def _online(ctx: Context, teacher: Model, layers: tuple[str, ...]) -> OnlineTeacher:
    """The teacher run on the student's batches (none stored)."""
    cfg = ctx.cfg
    share = _on_policy_share(cfg) if on_policy(cfg) else None
    log.info(
        "soft labels  none stored: the teacher runs online on the student's %s",
        f"batches, {share}" if share else "views",
    )
    return OnlineTeacher(teacher.module, layers, teacher.precision)


def _online_report(cfg: DictConfig, layers: tuple[str, ...]) -> SoftLabelSummary:
    settings: OnPolicySettings = {}
    if on_policy(cfg):
        settings["on_policy"] = to_container(cfg.loss.lmbda)
        if cfg.loss.schedule.get("lmbda") is not None:
            settings["on_policy_schedule"] = to_container(cfg.loss.schedule.lmbda)
    return {
        "mode": "online",
        "features": "online" if layers else "none",
        **settings,
        "layers": list(layers),
        "reused": False,
        "bytes": 0,
    }


def _on_policy_share(cfg: DictConfig) -> str:
    """How much of the student's text it writes itself, in words, for the log: with a
    schedule, the shares of its first and last epochs, as the schedule sets them."""
    if cfg.loss.schedule.get("lmbda") is None:
        return f"{cfg.loss.lmbda:.0%} of them written by the student (loss.lmbda)"
    ramp, epochs = Schedule(**to_container(cfg.loss.schedule.lmbda)), cfg.student.epochs
    first, last = ramp.at(0, epochs), ramp.at(epochs - 1, epochs)
    return f"{first:.0%} to {last:.0%} of them written by the student (loss.schedule.lmbda)"


def soft_label_stage(
    ctx: Context, teacher: Model, mode: str, layers: tuple[str, ...] = ()
) -> tuple[StoredKnowledge, Entry, StageReport]:
    """Stage 2: the teacher's outputs for every training sample, stored once as plain arrays
    (kdcli/knowledge/format.py), or taken from the cache.

    `static`: on the clean image, plus the outputs of `layers` when a feature loss stores
    them. `views`: on the exact augmented view the student draws in each of its epochs (the
    student's loader, seed and batch size are in the key). `generate`: on windows whose
    continuation the teacher wrote first.
    """
    cfg, data = ctx.cfg, ctx.data
    started = time.perf_counter()
    key = soft_labels_key(
        cfg,
        teacher=teacher.key,
        mode=mode,
        num_classes=data.info.num_classes,
        precision=teacher.precision,  # its forward passes'
        layers=layers,
    )
    # the views of finished epochs outlive a killed build (the entry's lock covers them)
    served = isinstance(teacher.module, EndpointLM)  # its answers outlive a killed build too
    saving = (mode == "views" or served) and cfg.checkpoint.save and distributed.is_main()
    progress = ctx.cache.partial_path("soft_labels", teacher.name, key) if saving else None
    make = functools.partial(_build, ctx, teacher, mode, layers, progress)
    entry = get_or_make(ctx.cache, "soft_labels", teacher.name, key, make)
    num_classes = data.info.num_classes
    store = read_store(entry.path, entry.manifest, data.num_train, num_classes, layers, ctx.device)
    stage = entry_stage(entry, time.perf_counter() - started, teacher.precision)
    log_stage("soft labels", entry, stage)
    train_data = None
    if store.windows is not None:  # the teacher's text: what the stored indices refer to
        train_data = written_data(data, store.windows)
    return StoredKnowledge(store.soft_labels, store.features, train_data), entry, stage


def _build(
    ctx: Context,
    teacher: Model,
    mode: str,
    layers: tuple[str, ...],
    progress: Path | None,
    directory: Path,
) -> dict[str, Any]:
    """Compute and write the store into `directory`; returns its manifest fields."""
    begun = time.perf_counter()
    resumed = 0
    if isinstance(teacher.module, EndpointLM):
        fields, images, resumed = _write_served(ctx, teacher, mode, directory, progress)
    elif mode == "views":
        fields, images, resumed = _write_views(ctx, teacher, directory, progress)
    else:
        fields, images = _write_static(ctx, teacher, mode, layers, directory)
    _check_store(directory, teacher)
    seconds = time.perf_counter() - begun
    return {
        **fields,
        "teacher": teacher.key,
        "seconds": seconds,
        "images_per_s": images / max(seconds, 1e-9),
        "resumed_from": _resumed(teacher, resumed),
    }


def _resumed(teacher: Model, resumed: int) -> str | None:
    """Where an interrupted build continued: after `resumed` rows (a server's) or epochs."""
    if isinstance(teacher.module, EndpointLM):
        return f"row {resumed}" if resumed else None
    return f"epoch {resumed + 1}, batch 0" if resumed else None


def _write_served(
    ctx: Context, teacher: Model, mode: str, directory: Path, progress: Path | None
) -> tuple[dict[str, Any], int, int]:
    """A server's top-k on each training sample (`static`), or on the text it wrote first
    (`generate`), resumable (kdcli/knowledge/served.py)."""
    assert isinstance(teacher.module, EndpointLM)
    windows = _generate_windows(ctx, teacher, 1) if mode == "generate" else None
    rows = (_text(ctx.data) if windows is None else written_data(ctx.data, windows)).train.images
    vocabulary, dtype = ctx.data.info.num_classes, np.dtype(ctx.cfg.soft_labels.dtype)
    k = stored_topk(ctx.cfg.soft_labels.topk, vocabulary) or vocabulary
    fields, resumed = write_served(directory, teacher.module, rows, k, dtype, progress, windows)
    return fields, rows.shape[0], resumed


def _write_views(
    ctx: Context, teacher: Model, directory: Path, progress: Path | None
) -> tuple[dict[str, Any], int, int]:
    """The teacher's outputs on every view the student draws, each batch checked finite."""
    cfg, data = ctx.cfg, ctx.data
    return write_views(
        directory,
        teacher.module,
        data.train_loader(cfg.student.batch_size, cfg.seed),
        cfg.student.epochs,
        data.num_train,
        ctx.task.output_shape(data.info),
        stored_topk(cfg.soft_labels.topk, data.info.num_classes),
        np.dtype(cfg.soft_labels.dtype),
        lambda logits: _check_teacher_output(teacher, logits, "logits"),
        teacher.precision,
        progress=progress,
    )


def _write_static(
    ctx: Context, teacher: Model, mode: str, layers: tuple[str, ...], directory: Path
) -> tuple[dict[str, Any], int]:
    """The teacher's outputs (and `layers`) on one clean view of each training sample, or
    (`generate`) on the windows it writes first; returns the store's manifest fields and the
    samples seen."""
    cfg, data, device = ctx.cfg, ctx.data, ctx.device
    size = eval_batch_size(ctx, teacher.module, teacher.precision)
    windows = _generate_windows(ctx, teacher, size) if mode == "generate" else None
    source = data if windows is None else written_data(data, windows)
    loader = source.eval_loader("train", size)
    features: dict[str, torch.Tensor] = {}
    if layers:
        logits, features = predict_with_features(
            teacher.module, loader, layers, device, teacher.precision
        )
    else:  # split across ranks under torchrun
        logits = distributed.predict_sharded(teacher.module, loader, device, teacher.precision)
    _check_teacher_output(teacher, logits, "logits")
    for path, values in features.items():
        _check_teacher_output(teacher, values, f"outputs at layer {path}")
    topk = stored_topk(cfg.soft_labels.topk, data.info.num_classes)
    dtype = np.dtype(cfg.soft_labels.dtype)
    return write_static(directory, logits, features, topk, dtype, windows), logits.shape[0]


def _generate_windows(ctx: Context, teacher: Model, batch_size: int) -> torch.Tensor:
    """Each training sample's prompt, continued by the teacher (knowledge/generate.py): a
    window's first `prompt_fraction`, or an instruction's prompt, whose answer the teacher then
    writes up to its end-of-sequence token. The store keeps them, so a rerun trains on the
    same text."""
    settings, data = ctx.cfg.soft_labels.generate, _text(ctx.data)
    train = data.train
    if isinstance(data, InstructDataset):
        tokens = data.vocabulary
        windows = sequences(train.images, train.labels, tokens.pad_id)
        prompt: int | torch.Tensor = prompt_lengths(train.labels)
        stop, pad = tokens.eos_id, tokens.pad_id
    else:
        windows = torch.cat([train.images, train.labels[:, -1:]], dim=1)  # [N, T + 1]
        prompt = max(1, round(settings.prompt_fraction * windows.shape[1]))
        stop, pad = None, 0
    if isinstance(teacher.module, EndpointLM):  # the server writes them
        temperature, seed = float(settings.temperature), int(ctx.cfg.seed)
        written = generate_served(teacher.module, windows, prompt, temperature, seed, stop, pad)
        log.info("soft labels  the server wrote %d samples' continuations", written.shape[0])
        return written
    written = generate_windows(
        teacher.module,
        windows,
        prompt,
        float(settings.temperature),
        int(ctx.cfg.seed),
        batch_size,
        teacher.precision,
        stop,
        pad,
    )
    log.info("soft labels  the teacher wrote %d samples' continuations", written.shape[0])
    return written


def written_data(data: Dataset, written: torch.Tensor) -> InMemoryDataset:
    """The run's data with the text the teacher wrote as its training split."""
    text = _text(data)
    if isinstance(text, InstructDataset):
        return text.with_train(text.written_split(written))
    return text.with_train(window_split(written))


def _text(data: Dataset) -> InMemoryDataset:
    """The run's data where the teacher writes text (`generate`): text is held in memory."""
    if not isinstance(data, InMemoryDataset):
        raise RunError(f"dataset {data.info.name}: the teacher writes text only into text data")
    return data


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
