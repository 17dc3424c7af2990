"""Teacher knowledge for the student stage: what the loop gets from `teacher(epoch, batch)`.

- `StoredKnowledge`: the soft-label stage's arrays (logits, and for feature losses the tapped
  teacher layers), looked up by sample index; the teacher does not run while distilling.
  The logits are `SoftLabels`: one clean view per sample (`static`), or the teacher's output
  on the exact augmented view the student draws in every epoch (`views`), optionally kept
  as the top-k probabilities only.
- `OnlineTeacher`: the teacher runs on the student's own batch under no_grad. Feature losses
  use it when their stored maps would not match the student's view (the data is augmented:
  a shifted image has shifted feature maps, while logits barely move) or would not fit in
  `soft_labels.feature_budget_mb`.

Stored logits are shifted by each row's maximum (`encode_soft_labels`), so they fit the
storage dtype whatever the teacher's scale; stores are checked finite when written and loaded.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdcli.data import Batch, Dataset, Loader
from kdcli.errors import UserError
from kdcli.losses import DistillationLoss
from kdcli.models.features import FeatureTap

log = logging.getLogger(__name__)

SOFT_LABEL_FORMAT = 2
"""The stored encoding's version, part of the soft-label cache key so that entries written in
another encoding are not reused (1: raw logits; 2: logits shifted by their row maximum)."""


@dataclass
class Knowledge:
    """The teacher's outputs for one batch: logits [B, classes] and tapped layers by path."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor] = field(default_factory=dict)


TeacherKnowledge = Callable[[int, Batch], Knowledge]
"""(epoch, batch) -> the teacher's knowledge of that batch."""


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
        rest = (1.0 - top.sum(1, keepdim=True)).clamp_min(1e-6) / (self.num_classes - top.shape[1])
        probs = rest.expand(top.shape[0], self.num_classes).clone()
        probs.scatter_(1, indices[index].long(), top)
        # a kept probability below float16's smallest is stored as 0: log(0) = -inf would make
        # KL terms 0 * inf = NaN, so floor it at float32's smallest normal (log = -87.3)
        return probs.clamp_min(torch.finfo(torch.float32).tiny).log()


class StoredKnowledge:
    """Knowledge stored per training sample: soft labels and tapped teacher layers by index."""

    def __init__(
        self, soft_labels: SoftLabels, features: dict[str, torch.Tensor] | None = None
    ) -> None:
        self.soft_labels = soft_labels
        self.features = features or {}

    def __call__(self, epoch: int, batch: Batch) -> Knowledge:
        return Knowledge(
            self.soft_labels.logits(epoch, batch.index),
            {path: stored[batch.index].float() for path, stored in self.features.items()},
        )


class OnlineTeacher:
    """The teacher's logits and `layers` computed on the student's batch, in eval mode."""

    def __init__(self, model: nn.Module, layers: Sequence[str]) -> None:
        self.model = model
        self.layers = list(layers)

    @torch.no_grad()
    def __call__(self, epoch: int, batch: Batch) -> Knowledge:
        self.model.eval()
        with FeatureTap(self.model, self.layers) as tap:
            logits = self.model(batch.x)
        return Knowledge(logits.float(), dict(tap.outputs))


@torch.no_grad()
def feature_shapes(
    model: nn.Module, layers: Sequence[str], example: torch.Tensor
) -> dict[str, tuple[int, ...]]:
    """The per-sample output shape of each of `layers`, from one forward pass in eval mode."""
    was_training = model.training
    with FeatureTap(model.eval(), layers) as tap:
        model(example)
    model.train(was_training)
    return {path: tuple(output.shape[1:]) for path, output in tap.outputs.items()}


def example_batch(data: Dataset, size: int = 2) -> torch.Tensor:
    """A few un-augmented training images, to size the tapped layers."""
    return next(data.eval_loader("train", size).epoch(0)).x


def build_feature_loss(
    loss_fn: DistillationLoss, student: nn.Module, teacher: nn.Module, example: torch.Tensor
) -> None:
    """Size the loss's learned adapters from a dry run of both models (before the optimizer
    is made, so it trains them)."""
    loss_fn.build(
        feature_shapes(student, loss_fn.student_layers, example),
        feature_shapes(teacher, loss_fn.teacher_layers, example),
    )


def stored_feature_bytes(
    shapes: dict[str, tuple[int, ...]], num_samples: int, dtype: np.dtype
) -> int:
    """What storing `shapes` for every training sample takes."""
    return num_samples * sum(math.prod(shape) for shape in shapes.values()) * dtype.itemsize


def choose_feature_source(
    setting: str, augmented: bool, needed_bytes: int, budget_mb: float
) -> str:
    """'stored' or 'online' for `soft_labels.features` = auto, stored or online."""
    fits = needed_bytes <= budget_mb * 2**20
    if setting == "online":
        return "online"
    if setting == "stored":
        if augmented:
            raise UserError(
                "soft_labels.features=stored: the training data is augmented, so stored teacher "
                "features would not match the student's view; use soft_labels.features=online "
                "(or auto), or turn the augmentation off (e.g. dataset.augment=false)."
            )
        if not fits:
            raise UserError(
                f"soft_labels.features=stored needs {needed_bytes / 2**20:.1f} MiB, over "
                f"soft_labels.feature_budget_mb={budget_mb}; raise the budget or use "
                "soft_labels.features=online."
            )
        return "stored"
    return "stored" if fits and not augmented else "online"


def topk_probabilities(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest softmax probabilities of each row and their class indices."""
    values, indices = torch.softmax(logits.float(), dim=-1).topk(k, dim=-1)
    return values, indices


def encode_soft_labels(
    logits: torch.Tensor, topk: int | None, dtype: np.dtype
) -> tuple[dict[str, np.ndarray], int]:
    """The arrays stored for a batch of finite teacher logits [B, K], and how many rows were
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
            "topk_classes": classes.cpu().numpy().astype(index_dtype(logits.shape[1])),
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


def views_bytes(
    epochs: int, num_samples: int, num_classes: int, topk: int | None, dtype: np.dtype
) -> int:
    """What `views` soft labels take: [E, N, K] values, or [E, N, k] values plus indices."""
    if topk is None:
        return epochs * num_samples * num_classes * dtype.itemsize
    return epochs * num_samples * topk * (dtype.itemsize + index_dtype(num_classes).itemsize)


def index_dtype(num_classes: int) -> np.dtype:
    return np.dtype(np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32)


@torch.no_grad()
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
    model.eval()
    seen = 0
    for epoch in range(epochs):
        for batch in loader.epoch(epoch):
            write(epoch, batch.index, model(batch.x).float())
            seen += batch.index.numel()
    return seen


@torch.no_grad()
def predict_with_features(
    model: nn.Module, loader: Loader, layers: Sequence[str], device: torch.device
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and tapped `layers` for every sample of the loader's split, in split order."""
    model.to(device).eval()
    logits, features = [], {path: [] for path in layers}
    with FeatureTap(model, layers) as tap:
        for batch in loader.epoch(0):
            logits.append(model(batch.x).float())
            for path in layers:
                features[path].append(tap.outputs[path].float())
    return torch.cat(logits), {path: torch.cat(parts) for path, parts in features.items()}
