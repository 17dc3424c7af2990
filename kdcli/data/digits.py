"""The embedded default dataset: scikit-learn's bundled UCI handwritten digits (no network).

1,797 grayscale 8x8 images with pixel values 0..16 in 10 classes, rescaled to uint8 0..255
and split into train and test by a fixed seed, stratified by class.
"""

from __future__ import annotations

import numpy as np
import torch

from kdcli.data.augment import ShiftFlip
from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split, with_validation


class Digits:
    """`dataset=digits`. `test_fraction` of each class is held out with `split_seed`, and
    `val_fraction` of the remaining training samples of each class for validation."""

    def __init__(
        self,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        augment: bool = True,
        max_shift: int = 1,
        val_fraction: float = 0.0,
    ) -> None:
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        self.augment = augment
        self.max_shift = max_shift
        self.val_fraction = val_fraction
        self.info = DatasetInfo(
            name="digits", num_classes=10, channels=1, image_size=8, mean=(0.305,), std=(0.376,)
        )

    def check(self) -> None:
        """Nothing to check: scikit-learn ships the data."""

    def load(self) -> InMemoryDataset:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        bunch = load_digits()
        images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
        labels = bunch.target.astype(np.int64)
        train_x, test_x, train_y, test_y = train_test_split(
            images,
            labels,
            test_size=self.test_fraction,
            random_state=self.split_seed,
            stratify=labels,
        )
        augmentation = ShiftFlip(max_shift=self.max_shift) if self.augment else None
        return with_validation(
            self.info,
            Split(torch.from_numpy(train_x), torch.from_numpy(train_y)),
            Split(torch.from_numpy(test_x), torch.from_numpy(test_y)),
            augmentation,
            self.val_fraction,
            self.split_seed,
        )
