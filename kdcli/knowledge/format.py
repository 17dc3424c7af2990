"""The soft-label format, its one owner: what is stored, how it is written and read back.

An entry directory holds plain .npy arrays (never pickles), one row per training sample:
- `logits.npy` [N, *out] (`static`) or [E, N, *out] (`views`: the teacher's output on the
  exact view the student draws in each of E epochs), in `soft_labels.dtype`; or, with top-k,
  `topk_probs.npy` and `topk_classes.npy` [..., k] in its place;
- `feature-<path>.npy` [N, ...]: tapped teacher layers, for feature losses (`static` only);
- `windows.npy` [N, T + 1] (`generate`): the token windows the teacher wrote, which the
  stored outputs are of.
`out` is the task's per-sample output shape (classes for classification); the class axis
is the last one. The writers return the manifest fields that describe the store (its mode,
top-k, dtype, encoding version, features); `read_store` reads the arrays back by them.

Stored logits are shifted by each row's maximum (`encode_soft_labels`), so they fit the
storage dtype whatever the teacher's scale; stores are checked finite when written and loaded.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from kdcli.data import Loader
from kdcli.engine.precision import FP32, Precision
from kdcli.errors import UserError
from kdcli.knowledge.predict import predict_views
from kdcli.store.atomic import write_json_atomic

log = logging.getLogger(__name__)

T = TypeVar("T")

SOFT_LABEL_FORMAT = 2
"""The stored encoding's version, part of the soft-label cache key so that entries written in
another encoding are not reused (1: raw logits; 2: logits shifted by their row maximum)."""
WINDOWS = "windows.npy"  # soft_labels.mode=generate: the teacher-written training windows
STORED_MODES = ("static", "views", "generate")


@dataclass
class SoftLabels:
    """Stored teacher outputs, per sample [N, ...] (`static`) or per epoch and sample
    [E, N, ...] (`views`).

    Without compression `values` holds logits. With top-k, `values` holds the k largest
    probabilities and `indices` their classes; the rest of the mass is spread evenly over the
    other classes, and `logits` returns log-probabilities: softmax-based losses see the same
    distribution as from logits, since the two differ by a per-sample constant.
    """

    values: torch.Tensor
    indices: torch.Tensor | None = None
    num_classes: int = 0
    per_epoch: bool = False

    def logits(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        values = self.values[epoch] if self.per_epoch else self.values
        if self.indices is None:
            return values[index].float()
        indices = self.indices[epoch] if self.per_epoch else self.indices
        top = values[index].float()
        rest = (1.0 - top.sum(-1, keepdim=True)).clamp_min(1e-6) / (
            self.num_classes - top.shape[-1]
        )
        probs = rest.expand(*top.shape[:-1], self.num_classes).clone()
        probs.scatter_(-1, indices[index].long(), top)
        # a kept probability below float16's smallest is stored as 0: log(0) = -inf would make
        # KL terms 0 * inf = NaN, so floor it at float32's smallest normal (log = -87.3)
        return probs.clamp_min(torch.finfo(torch.float32).tiny).log()


def topk_probabilities(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest softmax probabilities of each row and their class indices."""
    values, indices = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return values, indices


def stored_topk(k: int | None, num_classes: int) -> int | None:
    """How many probabilities a store keeps per row for `soft_labels.topk`: None (all the
    logits) when unset or when it keeps every class anyway."""
    return None if k is None or k >= num_classes else int(k)


def views_bytes(
    epochs: int, num_samples: int, num_classes: int, topk: int | None, dtype: np.dtype
) -> int:
    """What `views` soft labels take: [E, N, K] values, or [E, N, k] values plus indices."""
    if topk is None:
        return epochs * num_samples * num_classes * dtype.itemsize
    return epochs * num_samples * topk * (dtype.itemsize + index_dtype(num_classes).itemsize)


def index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)


def encode_soft_labels(
    logits: torch.Tensor, topk: int | None, dtype: np.dtype
) -> tuple[dict[str, np.ndarray], int]:
    """The arrays stored for a batch of finite teacher logits [..., K], and how many rows were
    clamped.

    All logits: each row shifted by its maximum. Softmax is shift-invariant, so every
    softmax-based loss sees the teacher's exact distribution; the largest logit becomes 0 and
    the rest <= 0, which float16 holds however large the teacher's logits are (raw logits
    above 65504 would be inf, and inf - inf = NaN downstream). A row spanning more than the
    dtype's range has its tail clamped to the dtype's lowest value (-65504 for float16),
    where exp(z / T) is 0 in float32 anyway for any T < 600. Top-k: the k largest softmax
    probabilities (in [0, 1], finite) and their classes.
    """
    if topk is not None:
        probs, classes = topk_probabilities(logits, topk)
        return {
            "topk_probs": probs.cpu().numpy().astype(dtype),
            "topk_classes": classes.cpu().numpy().astype(index_dtype(logits.shape[-1])),
        }, 0
    shifted = logits.float() - logits.float().amax(dim=-1, keepdim=True)
    lowest = float(np.finfo(dtype).min)
    clamped = int((shifted < lowest).any(dim=-1).sum())
    return {"logits": shifted.clamp_min(lowest).cpu().numpy().astype(dtype)}, clamped


def nonfinite_rows(values: torch.Tensor) -> int:
    """How many samples (rows of the first dimension) hold a NaN or an inf."""
    return int((~torch.isfinite(values)).reshape(values.shape[0], -1).any(dim=1).sum())


def all_finite(array: np.ndarray, chunk: int = 1 << 24) -> bool:
    """No NaN or inf in `array` (integer arrays always pass), checked a chunk at a time so a
    large memory-mapped store is never copied whole."""
    if not np.issubdtype(array.dtype, np.floating):
        return True
    flat = array.reshape(-1)
    return all(np.isfinite(flat[i : i + chunk]).all() for i in range(0, flat.size, chunk))


def store_features(
    directory: Path, features: dict[str, torch.Tensor], dtype: np.dtype
) -> dict[str, str]:
    """Save each tapped layer's (finite) maps as feature-<path>.npy; returns their dtypes.

    Feature maps are compared value for value, not through a softmax, so they are not
    shifted; a layer whose values exceed `dtype`'s range (65504 for float16), where the cast
    would give inf, is stored as float32 instead, with a warning.
    """
    dtypes = {}
    for path, values in features.items():
        kind = dtype
        if values.numel() and float(values.abs().max()) > float(np.finfo(dtype).max):
            kind = np.dtype(np.float32)
            log.warning(
                "soft labels  teacher layer %s outputs values beyond %s's range; stored as float32",
                path,
                dtype.name,
            )
        array = values.cpu().numpy().astype(kind)
        np.save(directory / f"feature-{path}.npy", array, allow_pickle=False)
        dtypes[path] = kind.name
    return dtypes


def nonfinite_files(directory: Path) -> list[str]:
    """The .npy files in `directory` that hold a NaN or an inf, read back from disk."""
    paths = sorted(directory.glob("*.npy"))
    return [p.name for p in paths if not all_finite(np.load(p, mmap_mode="r", allow_pickle=False))]


def load_array(path: Path) -> torch.Tensor:
    """A stored array, checked finite: it was when written, so NaN or inf means a damaged
    cache entry."""
    array = np.load(path, allow_pickle=False)
    if not all_finite(array):
        raise UserError(
            f"{path} holds NaN or inf values: that cache entry is damaged (soft labels are "
            f"checked finite when written); delete {path.parent} and run again to recompute it."
        )
    return torch.from_numpy(array)


def write_static(
    directory: Path,
    logits: torch.Tensor,
    features: dict[str, torch.Tensor],
    topk: int | None,
    dtype: np.dtype,
    windows: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write one clean view's outputs of every training sample and its tapped layers
    (`static`), or of the token windows the teacher wrote (`windows`: `generate`); returns
    the store's manifest fields."""
    arrays, clamped = encode_soft_labels(logits, topk, dtype)
    for name, array in arrays.items():
        np.save(directory / f"{name}.npy", array, allow_pickle=False)
    if windows is not None:
        np.save(directory / WINDOWS, windows.cpu().numpy().astype(np.int32), allow_pickle=False)
    feature_dtypes = store_features(directory, features, dtype)
    mode = "static" if windows is None else "generate"
    shapes = {path: list(values.shape) for path, values in features.items()}
    return manifest_fields(mode, topk, dtype, clamped, feature_dtypes, shapes)


def manifest_fields(
    mode: str,
    topk: int | None,
    dtype: np.dtype,
    clamped: int,
    feature_dtypes: dict[str, str],
    feature_shapes: dict[str, list[int]],
) -> dict[str, Any]:
    """The manifest fields that describe a store (`read_store` reads them back)."""
    if clamped:
        log.warning(
            "soft labels  %d row(s) of teacher logits span more than %s holds: their tail "
            "is clamped (exact for softmax over all classes; for dkd or kd_ls use "
            "soft_labels.dtype=float32)",
            clamped,
            dtype.name,
        )
    return {
        "mode": mode,
        "topk": topk,
        "dtype": dtype.name,
        "soft_label_format": SOFT_LABEL_FORMAT,
        "clamped_rows": clamped,
        "feature_dtypes": feature_dtypes,
        "features": feature_shapes,
    }


def write_views(
    directory: Path,
    model: nn.Module,
    loader: Loader,
    epochs: int,
    num_samples: int,
    output_shape: tuple[int, ...],
    topk: int | None,
    dtype: np.dtype,
    check: Callable[[torch.Tensor], None],
    precision: Precision = FP32,
    progress: Path | None = None,
) -> tuple[dict[str, Any], int, int]:
    """Write the teacher's outputs on every epoch's views (`views`) straight into .npy files on
    disk, each batch passed to `check` first; returns the store's manifest fields, the images
    seen and the epochs that an earlier, interrupted build had already stored.

    With `progress` (a directory that outlives a killed build), the arrays are filled there
    and the epochs already done are recorded after each one, so a rerun continues with the
    next epoch; the finished arrays are then moved into `directory`."""
    num_classes = output_shape[-1]
    shape = (epochs, num_samples, *output_shape[:-1], topk or num_classes)
    dtypes = (
        {"logits": dtype}
        if topk is None
        else {"topk_probs": dtype, "topk_classes": index_dtype(num_classes)}
    )
    work = progress or directory
    plan = {"shape": list(shape), "dtypes": {k: np.dtype(v).str for k, v in dtypes.items()}}
    done = _views_done(progress, plan) if progress is not None else None
    mode = "r+" if done is not None else "w+"
    if done is None:
        work.mkdir(parents=True, exist_ok=True)
        done = {"epochs": 0, "images": 0, "clamped": 0}
    arrays = {
        name: np.lib.format.open_memmap(work / f"{name}.npy", mode=mode, dtype=kind, shape=shape)
        for name, kind in dtypes.items()
    }
    clamped, resumed = done["clamped"], done["epochs"]

    def write(epoch: int, index: torch.Tensor, logits: torch.Tensor) -> None:
        nonlocal clamped
        check(logits)
        rows = index.cpu().numpy()
        parts, clamped_here = encode_soft_labels(logits, topk, dtype)
        clamped += clamped_here
        for name, part in parts.items():
            arrays[name][epoch, rows] = part

    images = done["images"]
    for epoch in range(done["epochs"], epochs):
        images += predict_views(model, loader, epoch + 1, write, precision, first_epoch=epoch)
        for array in arrays.values():
            array.flush()
        if progress is not None:
            done = {"epochs": epoch + 1, "images": images, "clamped": clamped}
            write_json_atomic(progress / PROGRESS, {**plan, **done})
    arrays.clear()  # close the memory maps before the files move
    if progress is not None:
        for name in dtypes:
            os.replace(progress / f"{name}.npy", directory / f"{name}.npy")
        shutil.rmtree(progress, ignore_errors=True)
    return manifest_fields("views", topk, dtype, clamped, {}, {}), images, resumed


PROGRESS = "progress.json"  # in a killed build's directory: its plan and what it finished


def resumed_progress(
    progress: Path, plan: dict[str, Any], what: str, finished: Callable[[dict[str, Any]], T]
) -> T | None:
    """What an earlier, killed build of the same store in `progress` had `finished`, read from
    its record, when it wrote to the same `plan` (the arrays' shape and dtypes, and what else
    the plan names); None, and the directory removed, to start afresh."""
    record_path = progress / PROGRESS
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
        if {key: record[key] for key in plan} != plan:
            raise ValueError("another plan: rows, shape or dtypes")
        for name in plan["dtypes"]:
            stored = np.load(progress / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            if list(stored.shape) != plan["shape"]:
                raise ValueError(f"{name}.npy has another shape")
        return finished(record)
    except (OSError, ValueError, KeyError, TypeError) as error:
        log.warning("ignoring the unfinished %s in %s (%s); starting afresh", what, progress, error)
        shutil.rmtree(progress, ignore_errors=True)
        return None


def _views_done(progress: Path, plan: dict) -> dict | None:
    """What an earlier, interrupted build of the same views stored (None: start afresh)."""
    done = resumed_progress(
        progress, plan, "views", lambda r: {k: int(r[k]) for k in ("epochs", "images", "clamped")}
    )
    if done is not None:
        log.info("soft labels  continuing after epoch %d of the views", done["epochs"])
    return done


@dataclass
class Store:
    """What a soft-label entry holds, read back: the soft labels, the tapped teacher layers and,
    for `generate`, the token windows [N, T + 1] the teacher wrote (else None)."""

    soft_labels: SoftLabels
    features: dict[str, torch.Tensor]
    windows: torch.Tensor | None


def read_store(
    directory: Path,
    manifest: dict[str, Any],
    num_samples: int,
    num_classes: int,
    layers: Sequence[str],
    device: torch.device,
) -> Store:
    """The arrays of the soft-label entry at `directory`, laid out as its `manifest` says,
    checked against the training split."""
    mode, topk = manifest.get("mode"), manifest.get("topk")
    if mode not in STORED_MODES:
        raise UserError(
            f"soft labels at {directory}: the manifest names no stored mode ({mode!r}); that "
            "cache entry is damaged: delete that directory."
        )
    names = ["logits"] if topk is None else ["topk_probs", "topk_classes"]
    arrays = [_load_array(directory / f"{name}.npy", device) for name in names]
    per_epoch = mode == "views"
    samples = arrays[0].shape[1 if per_epoch else 0]
    if samples != num_samples:
        raise UserError(
            f"soft labels at {directory} hold {samples} samples, the training split "
            f"{num_samples}; delete that directory."
        )
    indices = arrays[1] if topk is not None else None
    windows = None
    if mode == "generate":
        windows = torch.from_numpy(np.load(directory / WINDOWS, allow_pickle=False))
        windows = windows.long().to(device)
    features = load_features(directory, layers, device)
    return Store(SoftLabels(arrays[0], indices, num_classes, per_epoch), features, windows)


def stored_bytes(directory: Path) -> int:
    """What the arrays of the entry at `directory` take on disk."""
    return sum(f.stat().st_size for f in directory.glob("*.npy"))


def _load_array(path: Path, device: torch.device) -> torch.Tensor:
    return load_array(path).to(device)


def load_features(
    directory: Path, layers: Sequence[str], device: torch.device
) -> dict[str, torch.Tensor]:
    """The stored teacher layers of a soft-label entry."""
    return {path: _load_array(directory / f"feature-{path}.npy", device) for path in layers}
