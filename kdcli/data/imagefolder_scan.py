"""Scanning an ImageFolder tree: class folders, image files, their modes, and the splits.

Everything here is checked before any work (exit 2, naming the file or folder); see
kdcli/data/imagefolder.py for the layouts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from kdcli.data.split import stratified_split
from kdcli.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
GRAYSCALE_MODES = {"1", "L", "LA", "I", "I;16", "F"}
MAX_NAMED = 5  # files named in a message about many files


@dataclass
class Files:
    """The image files of one split and their class indices."""

    paths: list[Path]
    labels: torch.Tensor  # int64 [N]

    def subset(self, index: torch.Tensor) -> Files:
        return Files([self.paths[i] for i in index.tolist()], self.labels[index])


@dataclass
class Tree:
    """What a scan of the root found: the classes, the splits' files, the channel count."""

    classes: list[str]
    train: Files
    test: Files
    channels: int


# ---- scanning the tree ----------------------------------------------------------------------


def class_folders(tree: Path) -> list[str]:
    return sorted(p.name for p in tree.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_files(tree: Path, classes: Sequence[str]) -> Files:
    """Every image file under each class folder (recursively), in a stable order."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        images = sorted(p for p in (tree / name).rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not images:
            raise UserError(
                f"class folder {tree / name} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder."
            )
        paths += images
        labels += [label] * len(images)
    return Files(paths, torch.tensor(labels, dtype=torch.int64))


def image_modes(paths: Sequence[Path]) -> list[str]:
    """Each file's PIL mode, read from its header; unreadable files are a `UserError`."""
    modes, unreadable = [], []
    for path in paths:
        try:
            with Image.open(path) as image:
                modes.append(image.mode)
        except (OSError, ValueError, SyntaxError):
            unreadable.append(path)
    if unreadable:
        named = ", ".join(str(p) for p in unreadable[:MAX_NAMED])
        raise UserError(
            f"{len(unreadable)} file(s) could not be opened as images: {named}"
            f"{' ...' if len(unreadable) > MAX_NAMED else ''}; remove or replace them."
        )
    return modes


def channel_count(paths: Sequence[Path], modes: Sequence[str], channels: int | str) -> int:
    """1 or 3: `channels` when given, else what every image has (a mix is a `UserError`)."""
    if channels != "auto":
        if channels not in (1, 3):
            raise UserError(f"dataset.channels={channels!r} must be auto, 1 or 3.")
        return int(channels)
    gray = [p for p, m in zip(paths, modes, strict=True) if m in GRAYSCALE_MODES]
    colour = [p for p, m in zip(paths, modes, strict=True) if m not in GRAYSCALE_MODES]
    if gray and colour:
        raise UserError(
            f"the tree mixes {len(gray)} grayscale image(s) (e.g. {gray[0]}) with {len(colour)} "
            f"colour image(s) (e.g. {colour[0]}); set dataset.channels=3 to convert all to RGB "
            "(or dataset.channels=1 to grayscale)."
        )
    return 1 if gray else 3


def scan(root: Path, channels: int | str, test_fraction: float, split_seed: int) -> Tree:
    """Find the layout, the classes and the files, and open every image's header once."""
    if not root.is_dir():
        raise UserError(
            f"dataset.root={root} is not a folder; point it at an ImageFolder tree "
            "(train/ and val/ class folders, or class folders directly)."
        )
    train_dir, eval_dir = root, None
    if (root / "train").is_dir():
        train_dir = root / "train"
        eval_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    classes = class_folders(train_dir)
    if not classes:
        raise UserError(f"{train_dir} has no class folders; expected {train_dir}/<class>/*.jpg.")
    train = list_files(train_dir, classes)
    if eval_dir is not None:
        eval_classes = class_folders(eval_dir)
        if eval_classes != classes:
            only_train = sorted(set(classes) - set(eval_classes)) or "none"
            only_eval = sorted(set(eval_classes) - set(classes)) or "none"
            raise UserError(
                f"{train_dir} and {eval_dir} have different class folders (only in "
                f"{train_dir.name}/: {only_train}; only in {eval_dir.name}/: {only_eval}); "
                "give both the same classes."
            )
        test = list_files(eval_dir, classes)
    else:
        kept, held = stratified_split(train.labels, test_fraction, split_seed)
        train, test = train.subset(kept), train.subset(held)
    paths = train.paths + test.paths
    count = channel_count(paths, image_modes(paths), channels)
    return Tree(classes, train, test, count)
