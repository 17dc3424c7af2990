"""Scanning an ImageFolder tree: class folders, image files, their modes, and the splits.

Everything here is checked before any work (exit 2, naming the file or folder); see
kdcli/data/imagefolder.py for the layouts.
"""

from __future__ import annotations

import warnings
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
# Pillow's decompression-bomb limit, max_pixels' default (Pillow's default value where a program
# has turned the limit off: None)
MAX_PIXELS: int = Image.MAX_IMAGE_PIXELS or 1024 * 1024 * 1024 // 4 // 3


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


# ---- opening an image -------------------------------------------------------------------------


class TooLarge(Exception):
    """An image with more pixels than the dataset's `max_pixels` (its size is the message)."""


def open_image(path: Path, max_pixels: int) -> Image.Image:
    """`path` opened with its header read and its pixels not yet decoded; `TooLarge` when it
    has more than `max_pixels` pixels, so a small file that would decode into gigabytes (a
    decompression bomb) is refused before it is decoded. Pillow's own limit would warn above
    MAX_PIXELS and refuse above twice that; this one replaces the warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except Image.DecompressionBombError:
            raise TooLarge(f"more than {2 * MAX_PIXELS} pixels") from None
    if image.width * image.height > max_pixels:
        image.close()
        raise TooLarge(f"{image.width} x {image.height} pixels")
    return image


def too_large(named: Sequence[str], count: int, max_pixels: int) -> UserError:
    more = " ..." if count > len(named) else ""
    return UserError(
        f"{count} image(s) have more pixels than dataset.max_pixels={max_pixels}: "
        f"{', '.join(named)}{more}. Decoding one would take gigabytes of memory (a small file "
        "can be made to, a decompression bomb); shrink or remove them, or raise "
        "dataset.max_pixels if they are real images you want read."
    )


# ---- scanning the tree ----------------------------------------------------------------------


def class_folders(tree: Path) -> list[str]:
    return sorted(p.name for p in tree.iterdir() if p.is_dir() and not p.name.startswith("."))


def check_classes(tree: Path, classes: Sequence[str]) -> None:
    """At least two class folders: with one, every model predicts it and there is nothing to
    distil (a root one level too high, e.g. data/ holding images/<class>/, looks like that)."""
    if not classes:
        raise UserError(f"{tree} has no class folders; expected {tree}/<class>/*.jpg.")
    if len(classes) == 1:
        raise UserError(
            f"{tree} has one class folder ({classes[0]}/) and distillation needs at least two: "
            "with one class every model predicts it and there is nothing to learn. Point "
            "dataset.root at the folder whose sub-folders are the classes (if they are inside "
            f"{classes[0]}/: dataset.root={tree / classes[0]})."
        )


def _image_files(folder: Path) -> list[Path]:
    """The regular files with an image extension below `folder` (a pipe or a device named
    x.png would block or never end when opened), in a stable order."""
    return sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
    )


def list_files(tree: Path, classes: Sequence[str]) -> Files:
    """Every image file under each class folder (recursively), in a stable order."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        images = _image_files(tree / name)
        if not images:
            raise UserError(
                f"class folder {tree / name} holds no images "
                f"({', '.join(sorted(IMAGE_EXTENSIONS))}); add images or remove the folder."
            )
        paths += images
        labels += [label] * len(images)
    return Files(paths, torch.tensor(labels, dtype=torch.int64))


def image_modes(paths: Sequence[Path], max_pixels: int = MAX_PIXELS) -> list[str]:
    """Each file's PIL mode, read from its header; unreadable files, and images with more
    than `max_pixels` pixels, are a `UserError` naming them."""
    modes, unreadable, large = [], [], []
    for path in paths:
        try:
            with open_image(path, max_pixels) as image:
                modes.append(image.mode)
        except TooLarge as error:
            large.append(f"{path} ({error})")
        except Exception:  # whatever Pillow raises reading a header it cannot make sense of
            unreadable.append(path)
    if large:
        raise too_large(large[:MAX_NAMED], len(large), max_pixels)
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


def _is_folder(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False


def scan(
    root: Path,
    channels: int | str,
    test_fraction: float,
    split_seed: int,
    max_pixels: int = MAX_PIXELS,
) -> Tree:
    """Find the layout, the classes and the files, and open every image's header once."""
    if not _is_folder(root):
        raise UserError(
            f"dataset.root={root} is not a folder; point it at an ImageFolder tree "
            "(train/ and val/ class folders, or class folders directly)."
        )
    train_dir, eval_dir = root, None
    if (root / "train").is_dir():
        train_dir = root / "train"
        eval_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    classes = class_folders(train_dir)
    check_classes(train_dir, classes)
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
    count = channel_count(paths, image_modes(paths, max_pixels), channels)
    return Tree(classes, train, test, count)
