"""A cached model's evaluation, reused: the teacher's and the baseline's logits on the
evaluation splits, parameters, FLOPs and latency are stored in the cache when first computed
(`evaluations/<name>-<key>`, the key holding the model's own key and weights' hash,
kdcli/pipeline/keys.py) and read by later runs that take the same model from the cache, so a
sweep point runs and measures its student alone. The figures are those the evaluation
computes from the logits, so they are identical; latency is the stored measurement.

Classification only: a text task's evaluation also writes and judges answers with the models
themselves (and its logits are [tokens, vocabulary]), so text tasks compute theirs each run.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

from kdcli.engine import distributed
from kdcli.pipeline.common import Context, Model
from kdcli.pipeline.keys import evaluation_key
from kdcli.store.evaluation import StoredEvaluation, read_evaluation, write_evaluation
from kdcli.tasks.classify import Classify

KIND = "evaluations"
STORED_ROLES = ("teacher", "baseline")  # the models a later run can take from the cache


def device_kind(device: torch.device) -> str:
    """What the logits were computed on (a GPU's model can change the last bits)."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return device.type


def cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; platform.processor() is empty there)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_kind() -> str:
    """What the CPU latency was timed on (model, the cores this process may use, threads),
    under which torch: a cache shared by several nodes keeps one latency per kind of node."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = torch.get_num_threads()
    return f"{cpu_model()}, {cores} cpus, {threads} threads, torch {torch.__version__}"


def storable(ctx: Context, model: Model) -> bool:
    """Whether `model`'s evaluation is kept in the cache: a classifier from the cache, trained
    into it, or loaded from teacher.checkpoint (whose key is the file's hash)."""
    if not isinstance(ctx.task, Classify) or ctx.teacher_data is not None:
        return False
    return bool(model.key) and model.source in ("trained", "cache", "checkpoint")


def _key(ctx: Context, model: Model) -> str:
    return evaluation_key(
        ctx.cfg,
        model=model.key,
        weights=model.weights,
        device=device_kind(ctx.device),
        machine=machine_kind(),
    )


def read_stored(ctx: Context, model: Model, splits: list[str]) -> StoredEvaluation | None:
    """`model`'s stored evaluation on `splits`, on the run's device, or None (not stored, or
    damaged: then it is computed again)."""
    if not storable(ctx, model):
        return None
    entry = ctx.cache.get(KIND, model.name, _key(ctx, model))
    if entry is None:
        return None
    classes = ctx.data.info.num_classes
    shapes: dict[str, tuple[int, ...]] = {
        split: (len(ctx.data.labels(split)), classes) for split in splits
    }
    stored = read_evaluation(entry.path, shapes)
    if stored is not None:
        stored.logits = {split: v.to(ctx.device) for split, v in stored.logits.items()}
    return stored


def store(
    ctx: Context, model: Model, logits: dict[str, torch.Tensor], figures: dict[str, Any]
) -> None:
    """Keep `model`'s evaluation in the cache for later runs (rank 0; an entry another run
    wrote meanwhile is kept). A damaged entry is rebuilt by the cache."""
    if not storable(ctx, model) or not distributed.is_main():
        return

    def make(tmp: Path) -> dict[str, Any]:
        write_evaluation(tmp, logits, figures)
        return {"model": model.name, "model_key": model.key}

    ctx.cache.get_or_make(KIND, model.name, _key(ctx, model), make)
