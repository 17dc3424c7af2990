"""The teacher's outputs on the batches the soft-label store holds: every epoch's view the
student draws (`views`), or one clean pass with tapped layers (`static` with a feature loss).
kdcli/knowledge/format.py stores what these return."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from kdcli.data import Loader
from kdcli.engine.infer import outputs
from kdcli.engine.precision import FP32, Precision


def predict_views(
    model: nn.Module,
    loader: Loader,
    epochs: int,
    write: Callable[[int, torch.Tensor, torch.Tensor], None],
    precision: Precision = FP32,
    first_epoch: int = 0,
) -> int:
    """Run the teacher on exactly the batches the student will draw in epochs
    first_epoch..epochs-1.

    `loader` is the student's own training loader, so each view is the one the student sees
    (the augmentation of sample i in epoch e is a pure function of (seed, e, i)). Calls
    `write(epoch, index, logits)` per batch; returns the number of images seen.
    """
    seen = 0
    device = next(model.parameters()).device
    epoch_range = range(first_epoch, epochs)
    for epoch, batch, logits, _ in outputs(model, loader, device, epoch_range, (), precision):
        write(epoch, batch.index, logits)
        seen += batch.index.numel()
    return seen


def predict_with_features(
    model: nn.Module,
    loader: Loader,
    layers: Sequence[str],
    device: torch.device,
    precision: Precision = FP32,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and tapped `layers` for every sample of the loader's split, in split order."""
    logits: list[torch.Tensor] = []
    features: dict[str, list[torch.Tensor]] = {path: [] for path in layers}
    for _, _, batch_logits, tapped in outputs(model, loader, device, (0,), layers, precision):
        logits.append(batch_logits)
        for path in layers:
            features[path].append(tapped[path])
    return torch.cat(logits), {path: torch.cat(parts) for path, parts in features.items()}
