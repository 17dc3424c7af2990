"""Writers of small datasets in the real on-disk formats, and `kd train` overrides for a short
run on them (run through the `kd` fixture of tests/conftest.py).

Imported as `from dataset_files import ...` (tests/conftest.py's folder is on the path).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """A CIFAR python batch: a pickled dict of uint8 data [N, 3072] and a list of labels."""
    entry = {
        "batch_label": path.name,
        label_key: labels.tolist(),
        "data": images.reshape(len(images), -1),
        "filenames": [f"{i}.png" for i in range(len(images))],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))


def random_images(count: int, shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


def cycling_labels(count: int, classes: int) -> np.ndarray:
    return np.arange(count, dtype=np.int64) % classes


def write_cifar10(root: Path, per_batch: int = 4, test: int = 10) -> dict[str, np.ndarray]:
    """torchvision's CIFAR-10 layout with `per_batch` images in each of the 5 training batches."""
    folder = root / "cifar-10-batches-py"
    written = {}
    for i in range(1, 6):
        images = random_images(per_batch, (3, 32, 32), seed=i)
        labels = cycling_labels(per_batch, 10)
        cifar_batch(folder / f"data_batch_{i}", images, labels, "labels")
        written[f"data_batch_{i}"] = images
    images = random_images(test, (3, 32, 32), seed=0)
    cifar_batch(folder / "test_batch", images, cycling_labels(test, 10), "labels")
    written["test_batch"] = images
    return written


def write_cifar100(root: Path, train: int = 20, test: int = 10) -> None:
    folder = root / "cifar-100-python"
    for name, count in (("train", train), ("test", test)):
        labels = cycling_labels(count, 100) * 3 % 100  # not just 0..count-1
        cifar_batch(folder / name, random_images(count, (3, 32, 32), 1), labels, "fine_labels")


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file of unsigned bytes: magic (0, 0, 0x08, ndim), big-endian dims, values."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str = "MNIST", train: int = 30, test: int = 10) -> Path:
    """torchvision's raw layout, gzipped: <root>/<folder>/raw/*-ubyte.gz."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images = random_images(count, (28, 28), seed=count)
        labels = cycling_labels(count, 10)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))
    return raw


def write_image(path: Path, colour: tuple[int, ...] | int, mode: str = "RGB", size=(20, 14)):
    """A solid image with a little noise; the suffix picks the format (PNG or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    channels = 3 if mode == "RGB" else 1
    base = np.broadcast_to(np.array(colour, dtype=np.int64), (size[1], size[0], channels))
    pixels = np.clip(base + rng.integers(-10, 11, base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)


COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "owl": (40, 40, 200)}


def write_imagefolder(root: Path, per_class: int = 4, splits=("train", "val")) -> Path:
    """Class folders of PNG and JPEG files under each of `splits` (or under root for ())."""
    for split in splits or ("",):
        for name, colour in COLOURS.items():
            for i in range(per_class):
                suffix = ".png" if i % 2 == 0 else ".jpg"
                write_image(root / split / name / f"{i}{suffix}", colour)
    return root


def tiny_train_args(tmp_path: Path, *extra: str) -> list[str]:
    """`kd train` overrides for a run of a few seconds: MLPs, one epoch, no baseline."""
    return [
        "train",
        "teacher=mlp",
        "student=mlp",
        "teacher.model.hidden=[16]",
        "student.model.hidden=[8]",
        "teacher.epochs=1",
        "student.epochs=1",
        "teacher.batch_size=8",
        "student.batch_size=8",
        "baseline=false",
        "eval.latency_runs=2",
        "plots=false",
        "device=cpu",
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        *extra,
    ]
