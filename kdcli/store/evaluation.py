"""The stored evaluation of a cached model (its one owner): what a later run reads instead of
running the model again over the evaluation splits and measuring it again.

A directory (a cache entry's, built by kdcli/store/cache.py) holding `logits-<split>.npy`
(float32, as computed) per evaluation split and `figures.json`:

    {"format": 1, "shapes": {"test": [1000, 10], ...}, "figures": {"params": ..., ...}}

Arrays are read with `allow_pickle=False`; any file that is missing, unreadable, of another
shape or dtype, or not finite makes the whole evaluation absent (it is computed again).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kdcli.store.atomic import write_json_atomic

log = logging.getLogger(__name__)

EVALUATION_FORMAT = 1
FIGURES = "figures.json"
STORED_FIGURES = ("params", "flops", "latency_ms")  # a model's costs, beside its logits


@dataclass
class StoredEvaluation:
    """A model's logits per evaluation split and its costs (`STORED_FIGURES`)."""

    logits: dict[str, torch.Tensor]
    figures: dict[str, float]


def logits_file(split: str) -> str:
    return f"logits-{split}.npy"


def write_evaluation(directory: Path, logits: dict[str, torch.Tensor], figures: dict) -> None:
    """Store `logits` (split -> [N, K] float32) and the `STORED_FIGURES` of `figures`."""
    for split, values in logits.items():
        array = values.detach().cpu().numpy()
        np.save(directory / logits_file(split), array, allow_pickle=False)
    write_json_atomic(
        directory / FIGURES,
        {
            "format": EVALUATION_FORMAT,
            "shapes": {split: list(values.shape) for split, values in logits.items()},
            "figures": {name: figures[name] for name in STORED_FIGURES},
        },
    )


def read_evaluation(directory: Path, shapes: dict[str, tuple[int, ...]]) -> StoredEvaluation | None:
    """The evaluation stored in `directory` when it holds logits of exactly `shapes`
    (split -> shape) and every figure; else None (logged: it is computed again)."""
    try:
        return _read(directory, shapes)
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        log.warning("stored evaluation %s is unusable (%s); computing it again", directory, error)
        return None


def _read(directory: Path, shapes: dict[str, tuple[int, ...]]) -> StoredEvaluation:
    record = json.loads((directory / FIGURES).read_text())
    if not isinstance(record, dict) or record.get("format") != EVALUATION_FORMAT:
        raise ValueError(f"{FIGURES} is not format {EVALUATION_FORMAT}")
    figures = record["figures"]
    for name in STORED_FIGURES:
        value = figures[name]
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise ValueError(f"{name} holds a {type(value).__name__}")
    logits = {}
    for split, shape in shapes.items():
        # mapped, not read: a header may claim any shape, checked before the copy
        mapped = np.load(directory / logits_file(split), mmap_mode="r", allow_pickle=False)
        if mapped.dtype != np.float32 or mapped.shape != tuple(shape):
            raise ValueError(f"{split} logits are {mapped.dtype} {mapped.shape}, not {shape}")
        array = np.array(mapped)
        del mapped
        if not np.isfinite(array).all():
            raise ValueError(f"{split} logits hold NaN or inf")
        logits[split] = torch.from_numpy(array)
    return StoredEvaluation(logits, {name: figures[name] for name in STORED_FIGURES})
