"""`kd train`: teacher -> soft labels -> student (and baseline) -> evaluation.

Each stage is a plain function: config and inputs in, an artifact out. The teacher, the soft
labels and the baseline student come from the artifact cache when an earlier run made them
with the same settings; the report says whether each was computed or reused.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from torch import nn

from kdcli import __version__, distributed, stats
from kdcli import report as report_io
from kdcli.cache import ArtifactCache, Entry, file_sha256, fingerprint
from kdcli.checkpoint import load_model, save_model
from kdcli.data import Dataset, DatasetInfo
from kdcli.errors import RunError, UserError
from kdcli.evaluate import (
    accuracy,
    agreement,
    count_params,
    cpu_latency_ms,
    expected_calibration_error,
    flops_per_image,
    predict,
)
from kdcli.knowledge import (
    SOFT_LABEL_FORMAT,
    OnlineTeacher,
    SoftLabels,
    StoredKnowledge,
    TeacherKnowledge,
    build_feature_loss,
    choose_feature_source,
    encode_soft_labels,
    example_batch,
    feature_shapes,
    index_dtype,
    load_array,
    nonfinite_files,
    nonfinite_rows,
    predict_views,
    predict_with_features,
    store_features,
    stored_feature_bytes,
    views_bytes,
)
from kdcli.losses import CrossEntropy, DistillationLoss
from kdcli.models import build_model
from kdcli.train import fit

log = logging.getLogger(__name__)


@dataclass
class Stage:
    """How a stage went: wall time in this run, throughput when computed, reused or not."""

    seconds: float
    images_per_s: float | None
    reused: bool


@dataclass
class Model:
    """A model that a stage produced, with its checkpoint file and cache fingerprint."""

    name: str
    module: nn.Module
    checkpoint: Path
    key: str
    source: str  # "trained", "cache" or "checkpoint"


def plain(node: Any) -> Any:
    """A config node as resolved plain containers (for fingerprints and reports)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def config_choice(group: str, node: DictConfig) -> str:
    """The option picked for a config group (`loss=dkd` -> "dkd"), else the target's class."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices[group])
    return str(node._target_).rsplit(".", 1)[-1]


def resolve_device(device_cfg: DictConfig) -> torch.device:
    kind = device_cfg.type
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA GPU is visible; use device=auto or device=cpu.")
    return torch.device(kind)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def describe_model(stage_cfg: DictConfig, info: DatasetInfo) -> str:
    return (
        f"{stage_cfg.name} on {info.name} ({info.num_classes} classes, {info.channels} "
        f"channel(s), {info.image_size}x{info.image_size})"
    )


def training_settings(stage_cfg: DictConfig) -> dict[str, Any]:
    """What, besides model and data, determines a trained model."""
    return {k: plain(stage_cfg[k]) for k in ("epochs", "batch_size", "optimizer", "scheduler")}


def train_or_reuse(
    cfg: DictConfig,
    role: str,
    label: str,
    data: Dataset,
    cache: ArtifactCache,
    device: torch.device,
    run_dir: Path,
) -> tuple[Model, Stage]:
    """Train `cfg[role]` with plain cross-entropy, or reuse the cached model (teacher, baseline).

    The cache entry lives under `<label>s/`, keyed by model, training settings, data and seed.
    """
    started = time.perf_counter()
    stage_cfg = cfg[role]
    key = fingerprint(
        label, plain(stage_cfg.model), training_settings(stage_cfg), plain(cfg.dataset), cfg.seed
    )
    seed_everything(cfg.seed)
    model = build_model(stage_cfg.model, data.info)

    def make(tmp: Path) -> dict[str, Any]:
        result = fit(
            model,
            data.train_loader(stage_cfg.batch_size, cfg.seed),
            CrossEntropy(),
            stage_cfg,
            device=device,
            label=label,
            amp=cfg.device.amp,
            state_path=_state_path(cfg, run_dir, label, key),
        )
        save_model(
            tmp / "model.pt", model, model_config=plain(stage_cfg.model), dataset=asdict(data.info)
        )
        return {
            "name": stage_cfg.name,
            "seconds": result.seconds,
            "images_per_s": result.images_per_s,
            "train_top1": result.final_train_top1,
        }

    entry = distributed.get_or_make(cache, f"{label}s", stage_cfg.name, key, make)
    if entry.reused:
        described = describe_model(stage_cfg, data.info)
        load_model(model, entry.file("model.pt"), f"cache entry {entry.path}", described)
    stage = Stage(time.perf_counter() - started, entry.manifest["images_per_s"], entry.reused)
    _log_stage(label, entry, stage)
    source = "cache" if entry.reused else "trained"
    return Model(stage_cfg.name, model.to(device), entry.file("model.pt"), key, source), stage


def teacher_stage(
    cfg: DictConfig,
    data: Dataset,
    cache: ArtifactCache,
    device: torch.device,
    run_dir: Path,
) -> tuple[Model, Stage]:
    """Stage 1: load `teacher.checkpoint`, or train the teacher (or take it from the cache)."""
    started = time.perf_counter()
    if cfg.teacher.checkpoint:
        path = Path(cfg.teacher.checkpoint).expanduser()
        model = build_model(cfg.teacher.model, data.info)
        load_model(model, path, "teacher.checkpoint", describe_model(cfg.teacher, data.info))
        key = fingerprint("checkpoint", plain(cfg.teacher.model), file_sha256(path))
        stage = Stage(time.perf_counter() - started, None, reused=True)
        log.info("teacher      loaded %s from %s", cfg.teacher.name, path)
        return Model(cfg.teacher.name, model.to(device), path, key, "checkpoint"), stage
    return train_or_reuse(cfg, "teacher", "teacher", data, cache, device, run_dir)


SPLIT_NAMES = {"val": "validation", "test": "test"}


def eval_splits(data: Dataset) -> list[str]:
    """The splits every model is evaluated on: test, and validation when there is one."""
    return ["test", *(["val"] if "val" in data.splits else [])]


def selection_split(data: Dataset) -> str:
    """The split that decisions are made on: validation when there is one, else test."""
    return "val" if "val" in data.splits else "test"


def check_teacher(
    cfg: DictConfig, data: Dataset, teacher: Model, device: torch.device
) -> dict[str, torch.Tensor]:
    """The teacher's logits on each evaluation split, right after its stage (the evaluate stage
    reuses them). Stops the run, before any soft labels are computed, when the teacher's top-1
    falls short of `teacher.min_top1`."""
    logits = {
        split: predict(teacher.module, data.eval_loader(split, cfg.eval.batch_size), device)
        for split in eval_splits(data)
    }
    minimum = cfg.teacher.min_top1
    split = selection_split(data)
    top1 = accuracy(logits[split], data.labels(split)).top1
    log.info("teacher      top-1 %.2f%% on the %s split", 100 * top1, SPLIT_NAMES[split])
    if minimum is not None and top1 < minimum:
        raise RunError(
            f"teacher.min_top1={minimum}: the teacher ({teacher.name}) reaches {100 * top1:.2f}% "
            f"top-1 on the {SPLIT_NAMES[split]} split, below the {100 * minimum:.2f}% asked, so "
            "the run stopped before computing soft labels. Train a better teacher (e.g. more "
            "teacher.epochs or another teacher.optimizer.lr), load one with teacher.checkpoint, "
            "or lower teacher.min_top1 (the trained teacher is cached: a rerun reuses it)."
        )
    return logits


def soft_label_mode(cfg: DictConfig, data: Dataset) -> str:
    """`soft_labels.mode`, with `auto` resolved: one clean view (`static`) when the data is not
    augmented (every view is the clean one), else the teacher's output on every epoch's view
    (`views`) when that fits in `soft_labels.max_gb`, else the teacher run `online`."""
    mode = cfg.soft_labels.mode
    if mode != "auto":
        return mode
    if not data.augmented:
        return "static"
    needed = views_bytes(
        cfg.student.epochs,
        data.num_train,
        data.info.num_classes,
        _topk(cfg, data),
        np.dtype(cfg.soft_labels.dtype),
    )
    return "views" if needed <= cfg.soft_labels.max_gb * 2**30 else "online"


def _topk(cfg: DictConfig, data: Dataset) -> int | None:
    """How many probabilities to keep per view; None keeps all the logits."""
    k = cfg.soft_labels.topk
    return None if k is None or k >= data.info.num_classes else int(k)


def _compress(
    logits: torch.Tensor, topk: int | None, dtype: np.dtype, teacher: Model
) -> tuple[dict[str, np.ndarray], int]:
    """The arrays stored for a batch of teacher logits (all of them shifted by their row
    maximum, or the top-k probabilities) and how many rows were clamped; non-finite logits
    are the teacher's fault."""
    _check_teacher_output(teacher, logits, "logits")
    return encode_soft_labels(logits, topk, dtype)


def _check_teacher_output(teacher: Model, values: torch.Tensor, what: str) -> None:
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


def soft_label_stage(
    cfg: DictConfig,
    data: Dataset,
    teacher: Model,
    cache: ArtifactCache,
    device: torch.device,
    mode: str,
    layers: tuple[str, ...] = (),
) -> tuple[StoredKnowledge, Entry, Stage]:
    """Stage 2: the teacher's outputs for every training sample, stored once as plain arrays.

    `static`: on the clean image, plus the outputs of `layers` when a feature loss stores
    them (feature-<path>.npy). `views`: on the exact augmented view the student draws in each
    of its epochs ([E, N, ...]: the student's loader, seed and batch size are in the key).
    """
    started = time.perf_counter()
    dtype = np.dtype(cfg.soft_labels.dtype)
    topk = _topk(cfg, data)
    key_parts = [SOFT_LABEL_FORMAT, teacher.key, plain(cfg.dataset), mode, dtype.name, topk]
    if mode == "views":
        key_parts += [cfg.student.epochs, cfg.student.batch_size, cfg.seed]
    key = fingerprint("soft_labels", *key_parts, *([list(layers)] if layers else []))

    def make(tmp: Path) -> dict[str, Any]:
        begun = time.perf_counter()
        if mode == "views":
            images, clamped = _store_views(cfg, data, teacher, tmp, topk, dtype)
            features: dict[str, torch.Tensor] = {}
        else:
            loader = data.eval_loader("train", cfg.eval.batch_size)
            if layers:
                logits, features = predict_with_features(teacher.module, loader, layers, device)
            else:  # split across ranks under torchrun
                logits, features = distributed.predict_sharded(teacher.module, loader, device), {}
            arrays, clamped = _compress(logits, topk, dtype, teacher)
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array, allow_pickle=False)
            images = logits.shape[0]
        if clamped:
            log.warning(
                "soft labels  %d row(s) of teacher logits span more than %s holds: their tail "
                "is clamped (exact for softmax over all classes; for dkd or kd_ls use "
                "soft_labels.dtype=float32)",
                clamped,
                dtype.name,
            )
        for path, values in features.items():
            _check_teacher_output(teacher, values, f"outputs at layer {path}")
        feature_dtypes = store_features(tmp, features, dtype)
        _check_store(tmp, teacher)
        seconds = time.perf_counter() - begun
        return {
            "mode": mode,
            "teacher": teacher.key,
            "soft_label_format": SOFT_LABEL_FORMAT,
            "topk": topk,
            "dtype": dtype.name,
            "clamped_rows": clamped,
            "features": {path: list(values.shape) for path, values in features.items()},
            "feature_dtypes": feature_dtypes,
            "seconds": seconds,
            "images_per_s": images / max(seconds, 1e-9),
        }

    entry = distributed.get_or_make(cache, "soft_labels", teacher.name, key, make)
    soft_labels = _load_soft_labels(entry, data, mode, device)
    features = {path: _load_array(entry.file(f"feature-{path}.npy"), device) for path in layers}
    stage = Stage(time.perf_counter() - started, entry.manifest["images_per_s"], entry.reused)
    _log_stage("soft labels", entry, stage)
    return StoredKnowledge(soft_labels, features), entry, stage


def _store_views(
    cfg: DictConfig, data: Dataset, teacher: Model, tmp: Path, topk: int | None, dtype: np.dtype
) -> tuple[int, int]:
    """Write the teacher's outputs on every epoch's views straight into .npy files on disk;
    returns the images seen and the rows clamped."""
    epochs, num_samples = cfg.student.epochs, data.num_train
    width = topk or data.info.num_classes
    dtypes = (
        {"logits": dtype}
        if topk is None
        else {"topk_probs": dtype, "topk_classes": index_dtype(data.info.num_classes)}
    )
    arrays = {
        name: np.lib.format.open_memmap(
            tmp / f"{name}.npy", mode="w+", dtype=kind, shape=(epochs, num_samples, width)
        )
        for name, kind in dtypes.items()
    }

    clamped = 0

    def write(epoch: int, index: torch.Tensor, logits: torch.Tensor) -> None:
        nonlocal clamped
        rows = index.cpu().numpy()
        parts, clamped_here = _compress(logits, topk, dtype, teacher)
        clamped += clamped_here
        for name, part in parts.items():
            arrays[name][epoch, rows] = part

    loader = data.train_loader(cfg.student.batch_size, cfg.seed)
    images = predict_views(teacher.module, loader, epochs, write)
    for array in arrays.values():
        array.flush()
    return images, clamped


def _load_soft_labels(entry: Entry, data: Dataset, mode: str, device: torch.device) -> SoftLabels:
    """The stored arrays of a soft-label entry, checked against the dataset."""
    names = ["logits"] if entry.file("logits.npy").is_file() else ["topk_probs", "topk_classes"]
    arrays = [_load_array(entry.file(f"{name}.npy"), device) for name in names]
    per_epoch = mode == "views"
    samples = arrays[0].shape[1 if per_epoch else 0]
    if samples != data.num_train:
        raise UserError(
            f"soft labels at {entry.path} hold {samples} samples, the training split "
            f"{data.num_train}; delete that directory."
        )
    indices = arrays[1] if len(arrays) == 2 else None
    return SoftLabels(arrays[0], indices, data.info.num_classes, per_epoch)


def _load_array(path: Path, device: torch.device) -> torch.Tensor:
    return load_array(path).to(device)


def teacher_knowledge(
    cfg: DictConfig,
    data: Dataset,
    teacher: Model,
    loss_fn: DistillationLoss,
    cache: ArtifactCache,
    device: torch.device,
) -> tuple[TeacherKnowledge, dict[str, Any], Stage | None]:
    """What the student stage learns from: stored soft labels (`static` or `views`, and stored
    teacher features when they match the student's view and fit the budget), or the teacher
    run online (`soft_labels.mode=online`, or features that cannot be stored)."""
    layers = loss_fn.teacher_layers
    mode = soft_label_mode(cfg, data)
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
        log.info("soft labels  none stored: the teacher runs online on the student's views")
        report = {"mode": "online", "features": "online" if layers else "none"}
        return (
            OnlineTeacher(teacher.module, layers),
            {**report, "layers": list(layers), "reused": False, "bytes": 0},
            None,
        )
    knowledge, entry, stage = soft_label_stage(cfg, data, teacher, cache, device, mode, layers)
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


def student_stage(
    cfg: DictConfig,
    data: Dataset,
    loss_fn: DistillationLoss,
    knowledge: TeacherKnowledge | None,
    teacher: Model,
    device: torch.device,
    run_dir: Path,
) -> tuple[Model, Stage]:
    """Stage 3: distill the student with `loss_fn` from `knowledge` (for logit losses, the
    stored soft labels: the teacher does not run here)."""
    seed_everything(cfg.seed)
    model = build_model(cfg.student.model, data.info).to(device)
    if loss_fn.uses_features:
        build_feature_loss(loss_fn, model, teacher.module, example_batch(data))
    result = fit(
        model,
        data.train_loader(cfg.student.batch_size, cfg.seed),
        loss_fn,
        cfg.student,
        device=device,
        label="student",
        teacher=knowledge,
        amp=cfg.device.amp,
        state_path=_state_path(cfg, run_dir, "student", _student_key(cfg, teacher)),
    )
    path = run_dir / "student.pt"
    if distributed.is_main():
        save_model(path, model, model_config=plain(cfg.student.model), dataset=asdict(data.info))
    log.info(
        "student      distilled %s in %.1f s (%s img/s), train top-1 %.3f",
        cfg.student.name,
        result.seconds,
        f"{result.images_per_s:,.0f}",
        result.final_train_top1,
    )
    return (
        Model(cfg.student.name, model, path, "", "trained"),
        Stage(result.seconds, result.images_per_s, reused=False),
    )


def baseline_stage(
    cfg: DictConfig,
    data: Dataset,
    cache: ArtifactCache,
    device: torch.device,
    run_dir: Path,
) -> tuple[Model, Stage]:
    """The same student trained with plain cross-entropy, same settings and seed (cached)."""
    return train_or_reuse(cfg, "student", "baseline", data, cache, device, run_dir)


def _state_path(cfg: DictConfig, run_dir: Path, label: str, key: str) -> Path | None:
    """Where a training stage keeps its per-epoch state (None when switched off).

    The name holds the stage's fingerprint, so a rerun in the same directory with other
    settings starts afresh instead of resuming someone else's state.
    """
    if not cfg.epoch_checkpoints:
        return None
    return run_dir / "checkpoints" / f"{label}-{key}.pt"


def _student_key(cfg: DictConfig, teacher: Model) -> str:
    """What determines the distilled student, for naming its per-epoch state."""
    return fingerprint(
        "student",
        plain(cfg.student.model),
        training_settings(cfg.student),
        plain(cfg.loss),
        plain(cfg.dataset),
        cfg.seed,
        plain(cfg.soft_labels),
        teacher.key,
    )


def _log_stage(name: str, entry: Entry, stage: Stage) -> None:
    verb = "reused" if entry.reused else "computed"
    log.info("%-12s %s in %.1f s -> %s", name, verb, stage.seconds, entry.path)


def measure(
    model: Model, data: Dataset, test_logits: torch.Tensor, cfg: DictConfig
) -> dict[str, Any]:
    """The report's figures for one model."""
    labels = data.labels("test")
    acc = accuracy(test_logits, labels)
    return {
        "name": model.name,
        "top1": acc.top1,
        "nll": acc.nll,
        "ece": expected_calibration_error(test_logits, labels),
        "params": count_params(model.module),
        "flops": flops_per_image(model.module, data.info),
        "latency_ms": cpu_latency_ms(model.module, data.info, runs=cfg.eval.latency_runs),
        "checkpoint_bytes": model.checkpoint.stat().st_size,
        "checkpoint": str(model.checkpoint),
        "source": model.source,
        "reused": model.source != "trained",
    }


def evaluate_stage(
    cfg: DictConfig,
    data: Dataset,
    models: dict[str, Model],
    device: torch.device,
    known: dict[str, dict[str, torch.Tensor]] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Stage 4: every model's figures on the test split, with agreement against the teacher,
    and the KD gain's interval and p-value (student vs baseline on the same test images).

    `known`: logits already computed (role -> split -> logits), e.g. the teacher's.
    With a validation split (`dataset.val_fraction > 0`) each model's `val_top1` is reported
    too, so sweeps can be compared on validation accuracy and the test split kept for the end.
    """
    known = known or {}
    logits: dict[str, dict[str, torch.Tensor]] = {}
    for role, m in models.items():
        logits[role] = dict(known.get(role, {}))
        for split in eval_splits(data):
            if split not in logits[role]:
                loader = data.eval_loader(split, cfg.eval.batch_size)
                logits[role][split] = predict(m.module, loader, device)
    results = {role: measure(m, data, logits[role]["test"], cfg) for role, m in models.items()}
    if "val" in data.splits:
        for role in models:
            results[role]["val_top1"] = accuracy(logits[role]["val"], data.labels("val")).top1
    for role in results:
        if role != "teacher":
            results[role]["agreement"] = agreement(logits[role]["test"], logits["teacher"]["test"])
    gain = {}
    if "baseline" in logits:
        gain = gain_figures(logits["student"]["test"], logits["baseline"]["test"], data)
    return results, gain


def gain_figures(
    student_logits: torch.Tensor, baseline_logits: torch.Tensor, data: Dataset
) -> dict[str, Any]:
    """The KD gain's 95% paired bootstrap interval and exact McNemar p-value (report keys)."""
    labels = data.labels("test")
    student = (student_logits.argmax(1) == labels).cpu().numpy()
    baseline = (baseline_logits.argmax(1) == labels).cpu().numpy()
    gain = stats.compare(student, baseline)
    return {
        "kd_gain_ci": list(gain.ci),
        "kd_gain_p": gain.p,
        "kd_gain_images": {
            "student_only": gain.a_only,
            "baseline_only": gain.b_only,
            "total": gain.n,
        },
    }


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any] | None:
    """The whole pipeline; returns the report (also written to `run_dir`).

    Under torchrun, every rank trains; rank 0 alone writes, evaluates and returns the report
    (the other ranks return None).
    """
    device = distributed.setup(resolve_device(cfg.device))
    run_dir = distributed.shared_run_dir(run_dir)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    data = instantiate(cfg.dataset).load().to(device)
    cache = ArtifactCache(cfg.cache_dir)
    if distributed.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)

    teacher, teacher_time = teacher_stage(cfg, data, cache, device, run_dir)
    stages: dict[str, Stage] = {"teacher": teacher_time}
    started = time.perf_counter()
    teacher_logits = check_teacher(cfg, data, teacher, device)
    teacher_eval_seconds = time.perf_counter() - started
    knowledge = None
    soft_report: dict[str, Any] = {"mode": "none", "reused": False}
    loss_fn: DistillationLoss = instantiate(cfg.loss)
    if loss_fn.needs_teacher:
        knowledge, soft_report, soft_stage = teacher_knowledge(
            cfg, data, teacher, loss_fn, cache, device
        )
        if soft_stage is not None:
            stages["soft_labels"] = soft_stage
    student, stages["distill"] = student_stage(
        cfg, data, loss_fn, knowledge, teacher, device, run_dir
    )
    models = {"teacher": teacher, "student": student}
    if cfg.baseline:
        models["baseline"], stages["baseline"] = baseline_stage(cfg, data, cache, device, run_dir)
    if not distributed.is_main():
        return None

    started = time.perf_counter()
    results, gain = evaluate_stage(cfg, data, models, device, {"teacher": teacher_logits})
    seconds = time.perf_counter() - started + teacher_eval_seconds
    stages["evaluate"] = Stage(seconds, None, reused=False)

    report = build_report(cfg, data.info, device, results, soft_report, stages, run_dir, gain)
    report_io.write(report, run_dir, Console())  # the table goes to stdout
    return report


def build_report(
    cfg: DictConfig,
    info: DatasetInfo,
    device: torch.device,
    results: dict[str, dict[str, Any]],
    soft_labels: dict[str, Any],
    stages: dict[str, Stage],
    run_dir: Path,
    gain: dict[str, Any] | None = None,
) -> dict[str, Any]:
    teacher, student = results["teacher"], results["student"]
    report: dict[str, Any] = {
        "kdcli_version": __version__,
        "run_dir": str(run_dir),
        "seed": cfg.seed,
        "device": str(device),
        "processes": distributed.world_size(),
        "dataset": asdict(info),
        "loss": {
            "name": config_choice("loss", cfg.loss),
            **{k: v for k, v in plain(cfg.loss).items() if k != "_target_"},
        },
        **results,
        "soft_labels": soft_labels,
        "compression": {
            "params": teacher["params"] / student["params"],
            "flops": teacher["flops"] / max(student["flops"], 1),
            "latency_speedup": teacher["latency_ms"] / student["latency_ms"],
        },
        "stages": {name: asdict(stage) for name, stage in stages.items()},
    }
    if "baseline" in results:
        report["kd_gain"] = student["top1"] - results["baseline"]["top1"]
        report.update(gain or {})
    report["warnings"] = report_io.warnings(report)
    return report
