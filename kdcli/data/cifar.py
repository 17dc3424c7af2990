"""CIFAR-10 and CIFAR-100 from torchvision's layout: the python-pickle batches of the originals.

    <root>/cifar-10-batches-py/data_batch_1 .. data_batch_5, test_batch
    <root>/cifar-100-python/train, test

Each batch is a pickled dict holding `data` (uint8 [N, 3072], the 32x32 planes R, G, B) and
`labels` (CIFAR-100: `fine_labels`). The unpickler accepts only what such a dict holds
(numpy arrays, lists, strings), so a tampered file cannot run code.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import ClassVar

import numpy as np

from kdcli.data.base import DatasetInfo
from kdcli.data.memory import Split
from kdcli.data.standard import StandardDataset, split_tensors
from kdcli.errors import UserError


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, bytes and numpy arrays; refuses any other class."""

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} has no place in a CIFAR batch")
        return super().find_class(module, name)


def read_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> uint8 images [N, 3, 32, 32] and int64 labels [N]."""
    corrupt = (
        f"{path} is not a readable CIFAR batch"
        " ({reason}); delete it and fetch it again (dataset.download=true)."
    )
    try:
        with open(path, "rb") as file:
            entry = _BatchUnpickler(file, encoding="latin1").load()
    except Exception as error:  # a damaged pickle can fail in many ways; all mean 'corrupt'
        raise UserError(corrupt.format(reason=f"{type(error).__name__}: {error}")) from None
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise UserError(corrupt.format(reason=f"no 'data' and '{label_key}' entries"))
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise UserError(corrupt.format(reason=f"data is {data.dtype} {data.shape}"))
    if labels.shape != (data.shape[0],):
        raise UserError(corrupt.format(reason=f"{len(data)} images but {labels.size} labels"))
    return data.reshape(-1, 3, 32, 32), labels


class CIFAR10(StandardDataset):
    """`dataset=cifar10`: 50,000 training and 10,000 test 32x32 colour images, 10 classes."""

    info = DatasetInfo(
        name="cifar10",
        num_classes=10,
        channels=3,
        image_size=32,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
    )
    title = "CIFAR-10"
    folders = ("cifar-10-batches-py", "")
    train_files = tuple(f"data_batch_{i}" for i in range(1, 6))
    test_files = ("test_batch",)
    download_size = "about 170 MB"
    label_key = "labels"

    def read(self, directory: Path, split: str) -> Split:
        names = self.train_files if split == "train" else self.test_files
        batches = [read_batch(directory / name, self.label_key) for name in names]
        images = np.concatenate([images for images, _ in batches])
        labels = np.concatenate([labels for _, labels in batches])
        return split_tensors(images, labels)

    def fetch(self) -> None:
        from torchvision.datasets import CIFAR10 as Download

        Download(str(self.root), train=True, download=True)


class CIFAR100(CIFAR10):
    """`dataset=cifar100`: 50,000 training and 10,000 test 32x32 colour images, 100 classes."""

    info = DatasetInfo(
        name="cifar100",
        num_classes=100,
        channels=3,
        image_size=32,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
    )
    title = "CIFAR-100"
    folders = ("cifar-100-python", "")
    train_files = ("train",)
    test_files = ("test",)
    download_size = "about 170 MB"
    label_key = "fine_labels"

    def fetch(self) -> None:
        from torchvision.datasets import CIFAR100 as Download

        Download(str(self.root), train=True, download=True)
