"""Datasets that fit in memory: uint8 tensors on the training device, batched and augmented there.

There are no DataLoader workers: a batch is an index into the tensors, normalised and
augmented with a few tensor ops. Every loader yields `Batch(x, y, index)`, where `index`
is the sample's position in its split, so stored soft labels can be looked up per sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from kdcli.data.augment import ShiftFlip, epoch_generator
from kdcli.data.base import Batch, DatasetInfo, normaliser
from kdcli.data.split import check_fraction, stratified_split


@dataclass
class Split:
    """One split: uint8 images [N, C, H, W] and int64 labels [N]."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device) -> Split:
        return Split(self.images.to(device), self.labels.to(device))

    def subset(self, index: torch.Tensor) -> Split:
        return Split(self.images[index], self.labels[index])


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
        self.normalise = normaliser(info, split.images.device)

    @property
    def num_samples(self) -> int:
        return len(self.split)

    def __len__(self) -> int:
        if self.train:
            return max(1, self.num_samples // self.batch_size)
        return -(-self.num_samples // self.batch_size)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        device = self.split.images.device
        if self.train:
            order = torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch, 0))
        else:
            order = torch.arange(self.num_samples)
        order = order.to(device)
        augmentation, params = self.augmentation, None
        if augmentation is not None:
            params = augmentation.sample(self.num_samples, self.seed, epoch).to(device)
        for first in range(start * self.batch_size, len(self) * self.batch_size, self.batch_size):
            index = order[first : first + self.batch_size]
            if index.numel() == 0:
                break
            images = self.split.images[index]
            if augmentation is not None and params is not None:
                images = augmentation.apply(images, params[index])
            yield Batch(self.normalise(images), self.split.labels[index], index)


@dataclass(eq=False)  # splits are tensors: identity, not element-wise equality
class InMemoryDataset:
    """Train, test and (optionally) validation splits held as uint8 tensors.

    `augmentation` applies to the training split only; validation and test are never augmented.
    """

    info: DatasetInfo
    train: Split
    test: Split
    augmentation: ShiftFlip | None
    val: Split | None = None
    vocabulary: Any = None  # text: what turns token ids back into characters

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", "val", "test") if self.val is not None else ("train", "test")

    @property
    def num_train(self) -> int:
        return len(self.train)

    @property
    def augmented(self) -> bool:
        return self.augmentation is not None

    def labels(self, split: str) -> torch.Tensor:
        return self._split(split).labels

    def to(self, device: torch.device) -> InMemoryDataset:
        val = self.val.to(device) if self.val is not None else None
        return dataclasses.replace(
            self, train=self.train.to(device), test=self.test.to(device), val=val
        )

    def train_loader(self, batch_size: int, seed: int) -> EpochLoader:
        """Shuffled, augmented batches of the training split."""
        return EpochLoader(
            self.train, self.info, batch_size, train=True, seed=seed, augmentation=self.augmentation
        )

    def with_train(self, train: Split) -> InMemoryDataset:
        """The same dataset with another training split (e.g. teacher-written text)."""
        return dataclasses.replace(self, train=train)

    def eval_loader(self, split: str, batch_size: int) -> EpochLoader:
        """Batches of `split` ('train', 'val' or 'test') in order, un-augmented."""
        return EpochLoader(self._split(split), self.info, batch_size, train=False)

    def _split(self, name: str) -> Split:
        if name not in self.splits:
            raise ValueError(f"no {name!r} split; this dataset has {', '.join(self.splits)}")
        return getattr(self, name)


def with_validation(
    info: DatasetInfo,
    train: Split,
    test: Split,
    augmentation: ShiftFlip | None,
    val_fraction: float,
    split_seed: int,
) -> InMemoryDataset:
    """An `InMemoryDataset`, with `val_fraction` of each training class held out as `val`."""
    # config/values.py checks it on a config; kept for Python callers (stratified_split would
    # clamp a fraction outside [0, 1) without a word)
    check_fraction("dataset.val_fraction", val_fraction, allow_zero=True)
    if val_fraction == 0:
        return InMemoryDataset(info, train, test, augmentation)
    kept, held = stratified_split(train.labels, val_fraction, split_seed)
    return InMemoryDataset(info, train.subset(kept), test, augmentation, train.subset(held))
