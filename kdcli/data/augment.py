"""Batch-wise augmentation on uint8 image tensors, on whatever device the images live.

The random parameters of sample i at epoch e are drawn for the whole epoch from a generator
seeded by (seed, e), so they are a pure function of (seed, e, i): the soft-label stage can
reproduce exactly the view the student will see.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator for one (seed, epoch, purpose) triple; streams keep purposes apart."""
    generator = torch.Generator()
    generator.manual_seed((seed * 1_000_003 + epoch * 7_919 + stream) % (2**63))
    return generator


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """One seed per (seed, epoch, sample), for augmentations drawn one sample at a time."""
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729 + 1) % (2**63)


@dataclass(frozen=True)
class ShiftFlip:
    """Random translation by up to `max_shift` pixels (zero padding) and optional h-flip.

    With `max_shift=4` this is CIFAR's "pad 4 pixels, random 32x32 crop": the crop window's
    offset in the padded image is the shift.
    """

    max_shift: int = 0
    flip: bool = False

    def sample(self, num_samples: int, seed: int, epoch: int) -> torch.Tensor:
        """Per-sample parameters [N, 3]: dy, dx in [0, 2*max_shift] and a flip bit."""
        generator = epoch_generator(seed, epoch, stream=1)
        shifts = torch.randint(0, 2 * self.max_shift + 1, (num_samples, 2), generator=generator)
        flips = torch.randint(0, 2, (num_samples, 1), generator=generator) * int(self.flip)
        return torch.cat([shifts, flips], dim=1)

    def apply(self, images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        """Augment a uint8 batch [B, C, H, W] with its rows of `sample`'s parameters."""
        if self.max_shift == 0 and not self.flip:
            return images
        params = params.to(images.device)
        flip = (
            params[:, 2].bool() if self.flip else torch.zeros_like(params[:, 2], dtype=torch.bool)
        )
        return _shift_flip(images, params[:, 0], params[:, 1], flip, self.max_shift)


def _shift_flip(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Crop an HxW window at offset (dy, dx) out of each zero-padded image, mirrored where
    `flip`, all in one `gather` over each image's flattened pixels."""
    batch, channels, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad)).flatten(2)  # [B, C, (H+2p)*(W+2p)]
    arange_w = torch.arange(width, device=images.device)
    columns = torch.where(flip.view(-1, 1), arange_w.flip(0), arange_w)  # [B, W]
    rows = dy.view(-1, 1, 1) + torch.arange(height, device=images.device).view(1, -1, 1)
    cols = (dx.view(-1, 1) + columns).view(batch, 1, width)
    flat = (rows * (width + 2 * pad) + cols).view(batch, 1, height * width)
    cropped = padded.gather(2, flat.expand(batch, channels, height * width))
    return cropped.view(batch, channels, height, width)
