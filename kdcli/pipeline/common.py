"""What the stages share: their results (`StageReport`, `Model`), config helpers, and the cache
lookup that every torchrun rank takes part in."""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdcli.data import Dataset, DatasetInfo
from kdcli.engine import distributed
from kdcli.engine.infer import fastest_batch_size, predict
from kdcli.engine.loop import KnowledgeSource
from kdcli.engine.measure import count_params, flops_per_image
from kdcli.engine.precision import FP32, Precision, native_bf16, resolve
from kdcli.engine.state import TrainState
from kdcli.models.lm.endpoint import EndpointLM
from kdcli.pipeline.metrics import JsonlLog
from kdcli.store.cache import ArtifactCache, Entry
from kdcli.tasks import Task

log = logging.getLogger(__name__)


@dataclass
class StageReport:
    """How a stage went: wall time in this run, throughput when computed, reused or not."""

    seconds: float
    images_per_s: float | None
    reused: bool
    precision: str | None = None  # how its forward passes ran, e.g. "bf16, channels_last"
    resumed_from: str | None = None  # where a saved state let it continue, e.g. "epoch 3, batch 7"


@dataclass
class Model:
    """A model that a stage produced, with its checkpoint file and cache fingerprint."""

    name: str
    module: nn.Module
    checkpoint: Path
    key: str
    source: str  # "trained", "cache" or "checkpoint"
    precision: Precision = FP32  # its forward passes' (training, soft labels, online teacher)
    sparsity: float | None = None  # the fraction of zero weights (a compressed model)
    record: dict[str, Any] = field(default_factory=dict)  # how it was built (engine.state.Built)
    weights: str = ""  # its checkpoint's SHA-256, when a cache entry records it


@dataclass
class Context:
    """What every stage of one run works with."""

    cfg: DictConfig
    data: Dataset
    task: Task
    cache: ArtifactCache
    device: torch.device
    run_dir: Path
    # states of finished stages whose result lives only in the run directory (the student):
    # kept until the report is written, so that a kill before then loses no training
    finished: list[TrainState] = field(default_factory=list)
    # where each training stage's per-epoch rows go (metrics.jsonl, and the `logger` choice)
    metrics: JsonlLog | None = None
    # the data as the teacher reads it, when its tokenizer is not the student's; else None
    teacher_data: Dataset | None = None

    def for_teacher(self) -> Context:
        """This context for the teacher's stages: the data as the teacher reads it (the
        cache, the batch sizes and the finished states shared)."""
        if self.teacher_data is None:
            return self
        return dataclasses.replace(self, data=self.teacher_data)

    def data_of(self, role: str) -> Dataset:
        """The data as `role` reads it."""
        return self.teacher_data if role == "teacher" and self.teacher_data else self.data


def epoch_recorder(ctx: Context, stage: str, module: nn.Module) -> Callable[[dict], None]:
    """`fit`'s `on_epoch` for a stage: its row, with the validation metric when there is a
    validation split (the model in fp32, as the evaluation runs it), into `ctx.metrics`."""

    def record(row: dict[str, Any]) -> None:
        if ctx.metrics is None:
            return
        if "val" in ctx.data.splits:
            loader = ctx.data.eval_loader("val", eval_batch_size(ctx, module, FP32))
            logits = predict(module, loader, ctx.device)
            metric = ctx.task.headline(module, logits, ctx.data, "val")
            row = {**row, f"val_{ctx.task.metric}": metric}
        ctx.metrics.row({"stage": stage, **row})

    return record


def to_container(node: Any) -> Any:
    """A config node as resolved plain containers (for fingerprints and reports)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def config_choice(group: str, node: DictConfig) -> str:
    """The option picked for a config group (`loss=dkd` -> "dkd"), else the target's class."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices[group])
    return str(node._target_).rsplit(".", 1)[-1]


def draws_plots(setting: Any) -> bool:
    """`plots`: true, false, or auto: true in a single run, false in a point of a `-m` sweep
    (Hydra's multirun), whose PNGs cost a second or more each and `kd report --plot` replaces."""
    if str(setting) != "auto":
        return bool(setting)
    if not HydraConfig.initialized():
        return True
    return HydraConfig.get().mode != RunMode.MULTIRUN


def made_by(run_dir: Path) -> dict[str, str]:
    """What a cache entry records of the run that built it (`kd cache ls` shows it)."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return {"command": " ".join(["kd train", *overrides]), "run_dir": str(run_dir)}


def model_precision(ctx: Context, module: nn.Module) -> Precision:
    """The precision `module` trains and predicts in (`precision=`, `channels_last=`; `auto`
    decides by the hardware and, on a CPU, by the model's FLOPs per image and per weight)."""
    cfg, device = ctx.cfg, ctx.device
    sized = cfg.precision == "auto" and device.type == "cpu" and native_bf16(device)
    flops = flops_per_image(module, ctx.data.info) if sized else 0
    return resolve(cfg.precision, cfg.channels_last, device, module, flops, count_params(module))


PROBE_MIN_SAMPLES = 4096  # below this a pass is too short for the probe to pay for itself

# (architecture, the data's facts, device, precision) -> the fastest inference batch size measured
# in this process: the points of a `-m` sweep (one process) differ in weights, not in speed
FASTEST: dict[tuple[str, str, str, Precision], int] = {}


def architecture(module: nn.Module) -> str:
    """What a model's inference speed depends on: its class and its tensors' shapes."""
    shapes = [(name, tuple(t.shape)) for name, t in module.state_dict().items()]
    return f"{type(module).__qualname__} {shapes}"


def eval_batch_size(ctx: Context, module: nn.Module, precision: Precision) -> int:
    """`eval.batch_size` for inference passes of `module` (soft labels, evaluation); `auto`
    measures the fastest (engine/infer.py) once per architecture in a process (`FASTEST`), on
    training images, or takes 256 when the training split is too small for the probe to pay."""
    setting = ctx.cfg.eval.batch_size
    if setting != "auto":
        return int(setting)
    if isinstance(module, EndpointLM):  # a server's: as many rows as its requests hold at once
        return module.batch_size * module.concurrency
    if ctx.data.num_train < PROBE_MIN_SAMPLES:
        return 256
    key = (architecture(module), repr(ctx.data.info), str(ctx.device), precision)
    if key not in FASTEST:
        images = next(ctx.data.eval_loader("train", 32).epoch(0)).x
        size = fastest_batch_size(module, images, ctx.device, precision)
        log.info("eval batch   %d, the fastest measured for %s", size, type(module).__name__)
        FASTEST[key] = size
    return FASTEST[key]


def describe_model(stage_cfg: DictConfig, info: DatasetInfo) -> str:
    return f"{stage_cfg.name} on {info.describe()}"


def train_state(ctx: Context, kind: str, name: str, key: str) -> TrainState:
    """A training stage's in-progress state, kept in the cache beside the stage's entry and
    named by its fingerprint: the same command finds it from any run directory, and other
    settings never resume it (`checkpoint.save=false`: none)."""
    if not ctx.cfg.checkpoint.save:
        return TrainState(None)
    return TrainState(ctx.cache.state_path(kind, name, key), float(ctx.cfg.checkpoint.every_s))


def entry_stage(entry: Entry, seconds: float, precision: Precision) -> StageReport:
    """How a stage whose artifact is a cache entry went in this run (its throughput and
    where it resumed are those of the run that built the entry; a reused one resumed
    nothing here)."""
    resumed_from = None if entry.reused else entry.manifest.get("resumed_from")
    rate = entry.manifest["images_per_s"]
    return StageReport(seconds, rate, entry.reused, precision.describe(), resumed_from)


def log_stage(name: str, entry: Entry, stage: StageReport) -> None:
    verb = "reused" if entry.reused else "computed"
    how = f" ({stage.precision})" if stage.precision and not entry.reused else ""
    if stage.resumed_from:
        how += f", resumed at {stage.resumed_from}"
    log.info("%-12s %s in %.1f s%s -> %s", name, verb, stage.seconds, how, entry.path)


def get_or_make(
    cache: ArtifactCache,
    kind: str,
    name: str,
    key: str,
    make: Callable[[Path], dict[str, Any]],
) -> Entry:
    """`cache.get_or_make` for a `make` that every rank must run together (it trains or predicts).

    Rank 0 takes the entry's lock as usual. When it has to build, it tells the other ranks,
    which run `make` into a throwaway directory; then all ranks use the entry rank 0 wrote.
    Rank 0's use lock also covers the other ranks' reads of the entry: it is taken before rank 0
    checks the entry, so before any rank reads it, and held until rank 0's run ends, after
    theirs (they skip the evaluation; a rank that dies takes the whole group down).
    """
    if not distributed.active():
        return cache.get_or_make(kind, name, key, make)
    if distributed.is_main():
        announced = []

        def make_together(tmp: Path) -> dict[str, Any]:
            distributed.broadcast(True)  # the others join the build
            announced.append(True)
            return make(tmp)

        entry = cache.get_or_make(kind, name, key, make_together)
        if not announced:
            distributed.broadcast(False)
        distributed.broadcast((str(entry.path), entry.manifest, entry.reused))
        return entry
    if distributed.broadcast(None):
        with tempfile.TemporaryDirectory(prefix="kd-rank-") as scratch:
            make(Path(scratch))
    path, manifest, reused = distributed.broadcast(None)
    return Entry(Path(path), manifest, reused)


def distill_data(ctx: Context, knowledge: KnowledgeSource | None) -> Dataset:
    """What the student trains on: the run's data, or the text the teacher wrote for it
    (`soft_labels.mode=generate`; the knowledge's indices refer to that)."""
    return (knowledge.train_data if knowledge is not None else None) or ctx.data
