"""MNIST and Fashion-MNIST from torchvision's layout: the original IDX files, gzipped or not.

    <root>/MNIST/raw/train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz],
                     t10k-images-idx3-ubyte[.gz],  t10k-labels-idx1-ubyte[.gz]
    <root>/FashionMNIST/raw/ (the same names)

An IDX file is a 4-byte magic (0, 0, type 0x08 = uint8, number of dimensions), one
big-endian uint32 per dimension, then the values.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from kdcli.data.base import DatasetInfo
from kdcli.data.memory import Split
from kdcli.data.standard import StandardDataset, split_tensors
from kdcli.errors import UserError

UINT8 = 0x08


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (optionally gzipped) as a numpy array of its shape."""
    corrupt = f"{path} is not a readable IDX file ({{reason}}); delete it and fetch it again."
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as file:
            raw = file.read()
    except (OSError, EOFError) as error:  # gzip reports truncation as EOFError
        raise UserError(corrupt.format(reason=f"{type(error).__name__}: {error}")) from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != UINT8:
        raise UserError(corrupt.format(reason="bad magic number"))
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(corrupt.format(reason="truncated header"))
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape))
    if len(raw) - header != expected:
        raise UserError(
            corrupt.format(reason=f"{len(raw) - header} bytes of data, {expected} expected")
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class MNIST(StandardDataset):
    """`dataset=mnist`: 60,000 training and 10,000 test 28x28 grayscale digits."""

    info = DatasetInfo(
        name="mnist", num_classes=10, channels=1, image_size=28, mean=(0.1307,), std=(0.3081,)
    )
    title = "MNIST"
    folders = ("MNIST/raw", "MNIST", "")
    train_files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    test_files = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    download_size = "about 12 MB"

    def locate(self, directory: Path, name: str) -> Path | None:
        for path in (directory / name, directory / f"{name}.gz"):
            if path.is_file():
                return path
        return None

    def _located(self, directory: Path, name: str) -> Path:
        """`locate`, for a file that `directory()` found there."""
        path = self.locate(directory, name)
        if path is None:
            raise UserError(f"{directory}: {name} (or {name}.gz) is gone; fetch it again.")
        return path

    def read(self, directory: Path, split: str) -> Split:
        image_name, label_name = self.train_files if split == "train" else self.test_files
        image_path = self._located(directory, image_name)
        images, labels = read_idx(image_path), read_idx(self._located(directory, label_name))
        size = self.info.image_size
        if images.shape[1:] != (size, size) or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(
                f"{image_path}: images {images.shape} and labels {labels.shape} in {directory} "
                f"do not match (expected [N, {size}, {size}] and [N]); the files are corrupt "
                "or mixed up."
            )
        return split_tensors(images[:, None, :, :], labels)

    def fetch(self) -> None:
        from torchvision.datasets import MNIST as Download

        for train in (True, False):
            Download(str(self.root), train=train, download=True)


class FashionMNIST(MNIST):
    """`dataset=fashion_mnist`: 60,000 training and 10,000 test 28x28 grayscale clothes."""

    info = DatasetInfo(
        name="fashion_mnist",
        num_classes=10,
        channels=1,
        image_size=28,
        mean=(0.2860,),
        std=(0.3530,),
    )
    title = "Fashion-MNIST"
    folders = ("FashionMNIST/raw", "FashionMNIST", "")
    download_size = "about 30 MB"

    def fetch(self) -> None:
        from torchvision.datasets import FashionMNIST as Download

        for train in (True, False):
            Download(str(self.root), train=train, download=True)
