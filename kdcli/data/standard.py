"""What the standard sets (MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100) have in common.

Each reads torchvision's on-disk layout under `dataset.root`, is decoded once into uint8
tensors (the fast in-memory path) and can be fetched with `dataset.download=true`, which
calls torchvision's own dataset class (it downloads and checks the archive's MD5).
Subclasses say where the files lie and how to read one split.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from kdcli.data.augment import ShiftFlip
from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split, with_validation
from kdcli.errors import UserError


class StandardDataset(ABC):
    """A torchvision standard set kept in memory. Subclasses fill in the class attributes."""

    info: ClassVar[DatasetInfo]  # published facts, training-set normalisation statistics
    title: ClassVar[str]  # the name in messages, e.g. "CIFAR-10"
    folders: ClassVar[tuple[str, ...]]  # where the files lie under root ("" is root itself)
    train_files: ClassVar[tuple[str, ...]]
    test_files: ClassVar[tuple[str, ...]]
    download_size: ClassVar[str]  # for the "not found" message, e.g. "170 MB"

    def __init__(
        self,
        root: str,
        download: bool = False,
        augment: bool = True,
        max_shift: int = 0,
        flip: bool = False,
        val_fraction: float = 0.0,
        split_seed: int = 0,
    ) -> None:
        self.root = Path(str(root)).expanduser()
        self.download = download
        self.augmentation = ShiftFlip(max_shift, flip) if augment else None
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    # ---- what subclasses provide ------------------------------------------------------------

    @abstractmethod
    def read(self, directory: Path, split: str) -> Split:
        """Decode split 'train' or 'test' from `directory` into uint8 tensors (CPU)."""

    @abstractmethod
    def fetch(self) -> None:
        """Download the files into `self.root` with torchvision's dataset class."""

    def locate(self, directory: Path, name: str) -> Path | None:
        """The file `name` in `directory`, or None when it is not there."""
        path = directory / name
        return path if path.is_file() else None

    # ---- shared -------------------------------------------------------------------------------

    def directory(self) -> Path | None:
        """The first of `folders` under root that holds every expected file."""
        for folder in self.folders:
            directory = self.root / folder
            if all(self.locate(directory, n) for n in self.train_files + self.test_files):
                return directory
        return None

    def check(self) -> None:
        """Find the files (downloading them when asked) and decode them once to prove them sound.

        Raises `UserError` naming the folder or the file and the fix.
        """
        directory = self._find_or_fetch()
        for split in ("train", "test"):
            self._check_labels(self.read(directory, split), directory, split)

    def load(self) -> InMemoryDataset:
        directory = self._find_or_fetch()
        train, test = self.read(directory, "train"), self.read(directory, "test")
        for split, data in (("train", train), ("test", test)):
            self._check_labels(data, directory, split)
        return with_validation(
            self.info, train, test, self.augmentation, self.val_fraction, self.split_seed
        )

    def _find_or_fetch(self) -> Path:
        directory = self.directory()
        if directory is None and self.download:
            self._download()
            directory = self.directory()
        if directory is None:
            raise UserError(self._missing_message())
        return directory

    def _download(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self.fetch()
        except Exception as error:  # network, proxy, disk or checksum: all end here
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise UserError(
                f"could not download {self.title} into {self.root} ({first_line}). Check the "
                f"network, or put the files there yourself and drop dataset.download=true."
            ) from None

    def _missing_message(self) -> str:
        where = self.root / self.folders[0]
        names = ", ".join(self.train_files + self.test_files)
        return (
            f"{self.title} not found: expected {names} in {where} (torchvision's layout). "
            f"Set dataset.root to the folder that holds them, or add dataset.download=true "
            f"to fetch them ({self.download_size})."
        )

    def _check_labels(self, data: Split, directory: Path, split: str) -> None:
        labels = data.labels
        if len(labels) and (labels.min() < 0 or labels.max() >= self.info.num_classes):
            raise UserError(
                f"the {split} labels in {directory} lie in [{int(labels.min())}, "
                f"{int(labels.max())}], outside 0..{self.info.num_classes - 1} for "
                f"{self.title}; the files are corrupt or belong to another dataset."
            )


def split_tensors(images, labels) -> Split:
    """A `Split` from numpy arrays: uint8 images [N, C, H, W] and integer labels [N]."""
    images = torch.from_numpy(np.array(images, dtype=np.uint8))  # a writable copy
    return Split(images, torch.from_numpy(np.array(labels, dtype=np.int64)))
