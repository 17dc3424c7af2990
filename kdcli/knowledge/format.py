"""The soft-label format, its one owner: what is stored, how it is written and read back.

An entry directory holds plain .npy arrays (never pickles), one row per training sample:
- `logits.npy` [N, *out] (`static`) or [E, N, *out] (`views`: the teacher's output on the
  exact view the student draws in each of E epochs), in `soft_labels.dtype`; or, with top-k,
  `topk_probs.npy` and `topk_classes.npy` [..., k] in its place;
- `feature-<path>.npy` [N, ...]: tapped teacher layers, for feature losses (`static` only).
`out` is the task's per-sample output shape (classes for classification); the class axis
is the last one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcli.data import Loader
from kdcli.engine.infer import outputs
from kdcli.errors import UserError


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
        return probs.scatter_(-1, indices[index].long(), top).log()


def topk_probabilities(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest softmax probabilities of each row and their class indices."""
    values, indices = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return values, indices


def views_bytes(
    epochs: int, num_samples: int, num_classes: int, topk: int | None, dtype: np.dtype
) -> int:
    """What `views` soft labels take: [E, N, K] values, or [E, N, k] values plus indices."""
    if topk is None:
        return epochs * num_samples * num_classes * dtype.itemsize
    return epochs * num_samples * topk * (dtype.itemsize + index_dtype(num_classes).itemsize)


def index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)


def _compress(logits: torch.Tensor, topk: int | None, dtype: np.dtype) -> dict[str, np.ndarray]:
    """The arrays stored for a batch of teacher logits: all of them, or the top-k."""
    if topk is None:
        return {"logits": logits.cpu().numpy().astype(dtype)}
    probs, classes = topk_probabilities(logits, topk)
    return {
        "topk_probs": probs.cpu().numpy().astype(dtype),
        "topk_classes": classes.cpu().numpy().astype(index_dtype(logits.shape[-1])),
    }


def save_static(
    directory: Path,
    logits: torch.Tensor,
    features: dict[str, torch.Tensor],
    topk: int | None,
    dtype: np.dtype,
) -> None:
    """Write one clean view's outputs (and tapped layers) of every training sample."""
    for name, array in _compress(logits, topk, dtype).items():
        np.save(directory / f"{name}.npy", array, allow_pickle=False)
    for path, values in features.items():
        array = values.cpu().numpy().astype(dtype)
        np.save(directory / f"feature-{path}.npy", array, allow_pickle=False)


def _store_views(
    directory: Path,
    model: nn.Module,
    loader: Loader,
    epochs: int,
    num_samples: int,
    output_shape: tuple[int, ...],
    topk: int | None,
    dtype: np.dtype,
) -> int:
    """Write the teacher's outputs on every epoch's views straight into .npy files on disk."""
    num_classes = output_shape[-1]
    shape = (epochs, num_samples, *output_shape[:-1], topk or num_classes)
    dtypes = (
        {"logits": dtype}
        if topk is None
        else {"topk_probs": dtype, "topk_classes": index_dtype(num_classes)}
    )
    arrays = {
        name: np.lib.format.open_memmap(
            directory / f"{name}.npy", mode="w+", dtype=kind, shape=shape
        )
        for name, kind in dtypes.items()
    }

    def write(epoch: int, index: torch.Tensor, logits: torch.Tensor) -> None:
        rows = index.cpu().numpy()
        for name, part in _compress(logits, topk, dtype).items():
            arrays[name][epoch, rows] = part

    images = predict_views(model, loader, epochs, write)
    for array in arrays.values():
        array.flush()
    return images


def predict_views(
    model: nn.Module,
    loader: Loader,
    epochs: int,
    write: Callable[[int, torch.Tensor, torch.Tensor], None],
) -> int:
    """Run the teacher on exactly the batches the student will draw in epochs 0..epochs-1.

    `loader` is the student's own training loader, so each view is the one the student sees
    (the augmentation of sample i in epoch e is a pure function of (seed, e, i)). Calls
    `write(epoch, index, logits)` per batch; returns the number of images seen.
    """
    seen = 0
    device = next(model.parameters()).device
    for epoch, batch, logits, _ in outputs(model, loader, device, range(epochs)):
        write(epoch, batch.index, logits)
        seen += batch.index.numel()
    return seen


def predict_with_features(
    model: nn.Module, loader: Loader, layers: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and tapped `layers` for every sample of the loader's split, in split order."""
    logits, features = [], {path: [] for path in layers}
    for _, _, batch_logits, tapped in outputs(model, loader, device, layers=layers):
        logits.append(batch_logits)
        for path in layers:
            features[path].append(tapped[path])
    return torch.cat(logits), {path: torch.cat(parts) for path, parts in features.items()}


def _load_soft_labels(
    directory: Path, num_samples: int, num_classes: int, mode: str, device: torch.device
) -> SoftLabels:
    """The stored arrays of a soft-label entry, checked against the dataset."""
    names = ["logits"] if (directory / "logits.npy").is_file() else ["topk_probs", "topk_classes"]
    arrays = [_load_array(directory / f"{name}.npy", device) for name in names]
    per_epoch = mode == "views"
    samples = arrays[0].shape[1 if per_epoch else 0]
    if samples != num_samples:
        raise UserError(
            f"soft labels at {directory} hold {samples} samples, the training split "
            f"{num_samples}; delete that directory."
        )
    indices = arrays[1] if len(arrays) == 2 else None
    return SoftLabels(arrays[0], indices, num_classes, per_epoch)


def _load_array(path: Path, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.load(path, allow_pickle=False)).to(device)


def load_features(
    directory: Path, layers: Sequence[str], device: torch.device
) -> dict[str, torch.Tensor]:
    """The stored teacher layers of a soft-label entry."""
    return {path: _load_array(directory / f"feature-{path}.npy", device) for path in layers}
