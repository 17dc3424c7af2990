"""The one inference helper: a model's outputs (and tapped layers) batch by batch, no grad."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from kdcli.data import Batch, Loader
from kdcli.models.features import FeatureTap


@torch.no_grad()
def outputs(
    model: nn.Module,
    loader: Loader,
    device: torch.device,
    epochs: Iterable[int] = (0,),
    layers: Sequence[str] = (),
) -> Iterator[tuple[int, Batch, torch.Tensor, dict[str, torch.Tensor]]]:
    """(epoch, batch, float32 logits, tapped `layers`) for every batch of `epochs`, in eval mode."""
    model.to(device).eval()
    with FeatureTap(model, layers) as tap:
        for epoch in epochs:
            for batch in loader.epoch(epoch):
                logits = model(batch.x).float()
                yield epoch, batch, logits, {path: tap.outputs[path].float() for path in layers}


def predict(model: nn.Module, loader: Loader, device: torch.device) -> torch.Tensor:
    """Logits for every sample of the loader's split, in split order, as float32 on `device`."""
    return torch.cat([logits for _, _, logits, _ in outputs(model, loader, device)])
