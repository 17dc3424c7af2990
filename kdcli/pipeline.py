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

from kdcli import __version__, distributed
from kdcli import report as report_io
from kdcli.cache import ArtifactCache, Entry, file_sha256, fingerprint
from kdcli.checkpoint import load_model, save_model
from kdcli.data import DatasetInfo, InMemoryDataset
from kdcli.errors import UserError
from kdcli.evaluate import (
    accuracy,
    agreement,
    count_params,
    cpu_latency_ms,
    flops_per_image,
    predict,
)
from kdcli.losses import CrossEntropy, DistillationLoss
from kdcli.models import build_model
from kdcli.train import StoredLogits, fit

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
    data: InMemoryDataset,
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
    data: InMemoryDataset,
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


def soft_label_stage(
    cfg: DictConfig,
    data: InMemoryDataset,
    teacher: Model,
    cache: ArtifactCache,
    device: torch.device,
) -> tuple[torch.Tensor, Entry, Stage]:
    """Stage 2: the teacher's logits for every training sample, stored once (fp16 .npy)."""
    started = time.perf_counter()
    dtype = np.dtype(cfg.soft_labels.dtype)
    key = fingerprint("soft_labels", teacher.key, plain(cfg.dataset), "static", dtype.name)

    def make(tmp: Path) -> dict[str, Any]:
        begun = time.perf_counter()
        loader = data.eval_loader("train", cfg.eval.batch_size)
        logits = distributed.predict_sharded(teacher.module, loader, device)
        np.save(tmp / "logits.npy", logits.cpu().numpy().astype(dtype), allow_pickle=False)
        seconds = time.perf_counter() - begun
        return {
            "mode": "static",
            "teacher": teacher.key,
            "shape": list(logits.shape),
            "dtype": dtype.name,
            "seconds": seconds,
            "images_per_s": logits.shape[0] / max(seconds, 1e-9),
        }

    entry = distributed.get_or_make(cache, "soft_labels", teacher.name, key, make)
    logits = torch.from_numpy(np.load(entry.file("logits.npy"), allow_pickle=False)).to(device)
    if logits.shape != (len(data.train), data.info.num_classes):
        raise UserError(
            f"soft labels at {entry.path} have shape {tuple(logits.shape)}, expected "
            f"{(len(data.train), data.info.num_classes)}; delete that directory."
        )
    stage = Stage(time.perf_counter() - started, entry.manifest["images_per_s"], entry.reused)
    _log_stage("soft labels", entry, stage)
    return logits, entry, stage


def student_stage(
    cfg: DictConfig,
    data: InMemoryDataset,
    loss_fn: DistillationLoss,
    soft_labels: torch.Tensor | None,
    device: torch.device,
    run_dir: Path,
) -> tuple[Model, Stage]:
    """Stage 3: distill the student with `loss_fn`; the teacher does not run here."""
    seed_everything(cfg.seed)
    model = build_model(cfg.student.model, data.info)
    knowledge = StoredLogits(soft_labels) if soft_labels is not None else None
    result = fit(
        model,
        data.train_loader(cfg.student.batch_size, cfg.seed),
        loss_fn,
        cfg.student,
        device=device,
        label="student",
        teacher=knowledge,
        amp=cfg.device.amp,
        state_path=_state_path(cfg, run_dir, "student", _student_key(cfg, soft_labels)),
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
    data: InMemoryDataset,
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


def _student_key(cfg: DictConfig, soft_labels: torch.Tensor | None) -> str:
    """What determines the distilled student, for naming its per-epoch state."""
    teacher_part = None if soft_labels is None else list(soft_labels.shape)
    return fingerprint(
        "student",
        plain(cfg.student.model),
        training_settings(cfg.student),
        plain(cfg.loss),
        plain(cfg.dataset),
        cfg.seed,
        plain(cfg.teacher),
        teacher_part,
    )


def _log_stage(name: str, entry: Entry, stage: Stage) -> None:
    verb = "reused" if entry.reused else "computed"
    log.info("%-12s %s in %.1f s -> %s", name, verb, stage.seconds, entry.path)


def measure(
    model: Model, data: InMemoryDataset, test_logits: torch.Tensor, cfg: DictConfig
) -> dict[str, Any]:
    """The report's figures for one model."""
    acc = accuracy(test_logits, data.test.labels)
    return {
        "name": model.name,
        "top1": acc.top1,
        "nll": acc.nll,
        "params": count_params(model.module),
        "flops": flops_per_image(model.module, data.info),
        "latency_ms": cpu_latency_ms(model.module, data.info, runs=cfg.eval.latency_runs),
        "checkpoint_bytes": model.checkpoint.stat().st_size,
        "checkpoint": str(model.checkpoint),
        "source": model.source,
        "reused": model.source != "trained",
    }


def evaluate_stage(
    cfg: DictConfig, data: InMemoryDataset, models: dict[str, Model], device: torch.device
) -> dict[str, dict[str, Any]]:
    """Stage 4: every model's figures on the test split, with agreement against the teacher."""
    loader = data.eval_loader("test", cfg.eval.batch_size)
    logits = {role: predict(m.module, loader, device) for role, m in models.items()}
    results = {role: measure(m, data, logits[role], cfg) for role, m in models.items()}
    for role in results:
        if role != "teacher":
            results[role]["agreement"] = agreement(logits[role], logits["teacher"])
    return results


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
    soft_labels = None
    soft_report: dict[str, Any] = {"mode": "none", "reused": False}
    loss_fn: DistillationLoss = instantiate(cfg.loss)
    if loss_fn.needs_teacher:
        soft_labels, entry, stages["soft_labels"] = soft_label_stage(
            cfg, data, teacher, cache, device
        )
        soft_report = {
            "mode": entry.manifest["mode"],
            "reused": entry.reused,
            "path": str(entry.path),
            "bytes": entry.file("logits.npy").stat().st_size,
            "dtype": entry.manifest["dtype"],
        }
    student, stages["distill"] = student_stage(cfg, data, loss_fn, soft_labels, device, run_dir)
    models = {"teacher": teacher, "student": student}
    if cfg.baseline:
        models["baseline"], stages["baseline"] = baseline_stage(cfg, data, cache, device, run_dir)
    if not distributed.is_main():
        return None

    started = time.perf_counter()
    results = evaluate_stage(cfg, data, models, device)
    stages["evaluate"] = Stage(time.perf_counter() - started, None, reused=False)

    report = build_report(cfg, data.info, device, results, soft_report, stages, run_dir)
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
    return report
