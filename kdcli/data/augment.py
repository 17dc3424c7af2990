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
        params = params.to(images.device)
        if self.max_shift > 0:
            images = _shift(images, params[:, 0], params[:, 1], self.max_shift)
        if self.flip:
            flip = params[:, 2].bool().view(-1, 1, 1, 1)
            images = torch.where(flip, images.flip(-1), images)
        return images


def _shift(images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop an HxW window at offset (dy, dx) out of each zero-padded image, all at once."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = dy.view(-1, 1) + torch.arange(height, device=images.device)  # [B, H]
    cols = dx.view(-1, 1) + torch.arange(width, device=images.device)  # [B, W]
    index = torch.arange(batch, device=images.device).view(-1, 1, 1)
    cropped = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]]  # [B,H,W,C]
    return cropped.permute(0, 3, 1, 2).contiguous()
