"""What the stages share: their results (`Stage`, `Model`), config helpers, and the cache
lookup that every torchrun rank takes part in."""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch import nn

from kdcli.data import Dataset, DatasetInfo
from kdcli.engine import distributed
from kdcli.store.cache import ArtifactCache, Entry
from kdcli.tasks import Task

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


@dataclass
class Context:
    """What every stage of one run works with."""

    cfg: DictConfig
    data: Dataset
    task: Task
    cache: ArtifactCache
    device: torch.device
    run_dir: Path


def plain(node: Any) -> Any:
    """A config node as resolved plain containers (for fingerprints and reports)."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def config_choice(group: str, node: DictConfig) -> str:
    """The option picked for a config group (`loss=dkd` -> "dkd"), else the target's class."""
    if HydraConfig.initialized():
        return str(HydraConfig.get().runtime.choices[group])
    return str(node._target_).rsplit(".", 1)[-1]


def describe_model(stage_cfg: DictConfig, info: DatasetInfo) -> str:
    return f"{stage_cfg.name} on {info.describe()}"


def training_settings(stage_cfg: DictConfig) -> dict[str, Any]:
    """What, besides model and data, determines a trained model."""
    return {k: plain(stage_cfg[k]) for k in ("epochs", "batch_size", "optimizer", "scheduler")}


def _state_path(cfg: DictConfig, run_dir: Path, label: str, key: str) -> Path | None:
    """Where a training stage keeps its per-epoch state (None when switched off).

    The name holds the stage's fingerprint, so a rerun in the same directory with other
    settings starts afresh instead of resuming someone else's state.
    """
    if not cfg.epoch_checkpoints:
        return None
    return run_dir / "checkpoints" / f"{label}-{key}.pt"


def _log_stage(name: str, entry: Entry, stage: Stage) -> None:
    verb = "reused" if entry.reused else "computed"
    log.info("%-12s %s in %.1f s -> %s", name, verb, stage.seconds, entry.path)


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
