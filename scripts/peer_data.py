"""Data for scripts/bench_peer.py: CIFAR-shaped images with learnable structure, written in
the real CIFAR-10 python layout; kdcli's digits split; the test top-1 of a kdcli model config."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate


def _smooth(rng: np.random.Generator, count: int, grid: int) -> np.ndarray:
    """`count` smooth random colour patterns [count, 3, 32, 32], zero mean, unit std each."""
    coarse = torch.from_numpy(rng.standard_normal((count, 3, grid, grid)).astype(np.float32))
    fine = F.interpolate(coarse, size=32, mode="bicubic", align_corners=False)
    fine = fine - fine.mean(dim=(1, 2, 3), keepdim=True)
    return (fine / fine.std(dim=(1, 2, 3), keepdim=True)).numpy()


def cifar_shaped(count: int, seed: int, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [count, 3, 32, 32] and labels: class template (blended up to half with
    another class's, which gives the teacher's soft labels something to say), shifted by up to
    4 pixels, over class-free clutter and pixel noise. The templates are the same for every seed."""
    templates = _smooth(np.random.default_rng(12345), classes, 4)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % classes)
    other = (labels + rng.integers(1, classes, count)) % classes
    weight = rng.uniform(0.0, 0.5, (count, 1, 1, 1)).astype(np.float32)
    pattern = (1 - weight) * templates[labels] + weight * templates[other]
    for i, (dy, dx) in enumerate(rng.integers(-4, 5, (count, 2))):
        pattern[i] = np.roll(pattern[i], (int(dy), int(dx)), axis=(1, 2))
    noise = rng.standard_normal(pattern.shape).astype(np.float32)
    values = pattern + _smooth(rng, count, 8) + 0.5 * noise
    return np.clip(128 + 48 * values, 0, 255).astype(np.uint8), labels.astype(np.int64)


def write_cifar10(root: Path, train: tuple, test: tuple) -> None:
    """The real CIFAR-10 python layout: five pickled training batches, a test batch, the meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)  # the same seeded data again (--workdir)
    parts = [("test_batch", *test)]
    for i, index in enumerate(np.array_split(np.arange(len(train[1])), 5)):
        parts.append((f"data_batch_{i + 1}", train[0][index], train[1][index]))
    for name, images, labels in parts:
        entry = {
            "batch_label": name,
            "labels": labels.tolist(),
            "data": images.reshape(len(images), -1),
            "filenames": [f"{name}_{i}.png" for i in range(len(images))],
        }
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    meta = {"label_names": [f"class{c}" for c in range(10)], "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def digits_arrays(test_fraction: float, split_seed: int) -> tuple[tuple, tuple]:
    """kdcli's `dataset=digits` split: uint8 0..255, stratified by class."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    tx, ex, ty, ey = train_test_split(
        images,
        bunch.target.astype(np.int64),
        test_size=test_fraction,
        random_state=split_seed,
        stratify=bunch.target,
    )
    return (tx, ty), (ex, ey)


@torch.no_grad()
def test_top1(model, split: tuple, info: dict[str, Any], device: torch.device) -> float:
    model.eval()
    mean = torch.tensor(info["mean"]).view(1, -1, 1, 1) * 255
    std = torch.tensor(info["std"]).view(1, -1, 1, 1) * 255
    images, labels = split
    correct = 0
    for i in range(0, len(labels), 256):
        x = (torch.from_numpy(images[i : i + 256]).float() - mean) / std
        predicted = model(x.to(device)).argmax(1).cpu()
        correct += int((predicted == torch.from_numpy(labels[i : i + 256])).sum())
    return correct / len(labels)


def build_model(node, info: dict[str, Any], state: dict | None = None) -> torch.nn.Module:
    """A kdcli model config built as kdcli builds it: the dataset's facts as arguments."""
    model = instantiate(
        node,
        num_classes=info["num_classes"],
        in_channels=info["channels"],
        image_size=info["image_size"],
    )
    if state is not None:
        model.load_state_dict(state)
    return model
