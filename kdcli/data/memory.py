"""Datasets that fit in memory: uint8 tensors on the training device, batched and augmented there.

There are no DataLoader workers: a batch is an index into the tensors, normalised and
augmented with a few tensor ops. Every loader yields `Batch(x, y, index)`, where `index`
is the sample's position in its split, so stored soft labels can be looked up per sample.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from kdcli.data.augment import ShiftFlip, epoch_generator


@dataclass(frozen=True)
class DatasetInfo:
    """The facts about a dataset that model construction and normalisation need."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def model_kwargs(self) -> dict[str, int]:
        """The keyword arguments every model config receives from the dataset."""
        return {
            "num_classes": self.num_classes,
            "in_channels": self.channels,
            "image_size": self.image_size,
        }


@dataclass
class Split:
    """One split: uint8 images [N, C, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))


@dataclass
class Batch:
    x: torch.Tensor  # float, normalised, [B, C, H, W]
    y: torch.Tensor  # int64 [B]
    index: torch.Tensor  # int64 [B], positions in the split


class EpochLoader:
    """Batches of one split. `epoch(e)` yields that epoch's batches, in a seeded order.

    With `train=True` the order is shuffled and the augmentation applied, both as pure
    functions of (seed, epoch); the last incomplete batch is dropped (BatchNorm needs more
    than one sample). Otherwise batches come in split order, un-augmented, all kept.
    """

    def __init__(
        self,
        split: Split,
        info: DatasetInfo,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        augmentation: ShiftFlip | None = None,
    ) -> None:
        self.split = split
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.augmentation = augmentation if train else None
        device = split.images.device
        self._mean = torch.tensor(info.mean, device=device).view(1, -1, 1, 1)
        self._std = torch.tensor(info.std, device=device).view(1, -1, 1, 1)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def __len__(self) -> int:
        if self.train:
            return max(1, self.num_samples // self.batch_size)
        return -(-self.num_samples // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        device = self.split.images.device
        if self.train:
            order = torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch, 0))
        else:
            order = torch.arange(self.num_samples)
        params = None
        if self.augmentation is not None:
            params = self.augmentation.sample(self.num_samples, self.seed, epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            if index.numel() == 0:
                break
            index_dev = index.to(device)
            images = self.split.images[index_dev]
            if params is not None:
                images = self.augmentation.apply(images, params[index])
            yield Batch(self.normalise(images), self.split.labels[index_dev], index_dev)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255.0 - self._mean) / self._std


class InMemoryDataset:
    """Train and test splits held as uint8 tensors, plus the dataset's training augmentation."""

    def __init__(
        self, info: DatasetInfo, train: Split, test: Split, augmentation: ShiftFlip | None
    ) -> None:
        self.info = info
        self.train = train
        self.test = test
        self.augmentation = augmentation

    def to(self, device: torch.device) -> InMemoryDataset:
        return InMemoryDataset(
            self.info, self.train.to(device), self.test.to(device), self.augmentation
        )

    def train_loader(self, batch_size: int, seed: int) -> EpochLoader:
        """Shuffled, augmented batches of the training split."""
        return EpochLoader(
            self.train, self.info, batch_size, train=True, seed=seed, augmentation=self.augmentation
        )

    def eval_loader(self, split: str, batch_size: int) -> EpochLoader:
        """Batches of `split` ('train' or 'test') in order, un-augmented."""
        return EpochLoader(getattr(self, split), self.info, batch_size, train=False)
