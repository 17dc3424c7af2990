"""Any ImageFolder tree: one sub-folder of images per class, decoded by DataLoader workers.

Layouts under `dataset.root`:

    train/<class>/*.jpg  and  val/<class>/ (or test/)   those two splits
    <class>/*.jpg  (or only train/<class>/)             `test_fraction` of each class held out
                                                         by `split_seed` as the test split

Checked before any work (exit 2, naming the file or folder):
- fewer than two class folders; a class folder without images; train/ and val/ with
  different class sets;
- a file with an image extension that cannot be opened (all such files are counted, the
  first few named), and an image with more pixels than `max_pixels` (by its header, before
  anything is decoded: a decompression bomb is a small file that decodes into gigabytes).
  A file whose header opens but whose pixels do not decode (a truncated file) is reported,
  by name, when a loader reaches it, also from a DataLoader worker (exit 2 as well);
- grayscale and colour images mixed under `channels: auto`. `channels: 3` (or 1) converts
  every image to RGB (or grayscale) instead.

Training views: RandomResizedCrop to `image_size` plus horizontal flip, drawn from a
generator seeded by (seed, epoch, sample index), so a view is reproducible. Evaluation:
resize the short side to image_size / eval_crop, centre crop `image_size`.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Sampler
from torchvision import transforms

from kdcli.data.augment import epoch_generator, sample_seed
from kdcli.data.base import Batch, DatasetInfo, normaliser
from kdcli.data.imagefolder_scan import (
    MAX_NAMED,
    MAX_PIXELS,
    Files,
    TooLarge,
    Tree,
    open_image,
    scan,
    too_large,
)
from kdcli.data.split import check_fraction, stratified_split
from kdcli.errors import UserError

# ---- reading images ---------------------------------------------------------------------------

# what an item carries instead of its label when its file cannot be read
DECODE_FAILED, TOO_LARGE = -1, -2


class ImageFiles(torch.utils.data.Dataset):
    """Decodes one image per key (epoch, index) into uint8 [C, H, W].

    With `augment`, the random transform runs under a generator seeded by (seed, epoch,
    index). A file that fails to decode, or has more than `max_pixels` pixels, comes back
    with the label DECODE_FAILED or TOO_LARGE: an exception raised in a DataLoader worker
    would reach the main process as a traceback, a label reaches it as data, and the loader
    names the file (`failure`).
    """

    def __init__(
        self,
        files: Files,
        transform,
        channels: int,
        image_size: int,
        augment: bool,
        seed: int,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.files = files
        self.transform = transform
        self.mode = "L" if channels == 1 else "RGB"
        self.shape = (channels, image_size, image_size)
        self.augment = augment
        self.seed = seed
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.files.paths)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, int, int]:
        epoch, index = key
        try:
            with open_image(self.files.paths[index], self.max_pixels) as image:
                image = image.convert(self.mode)  # decodes the pixels
        except TooLarge:
            return torch.zeros(self.shape, dtype=torch.uint8), TOO_LARGE, index
        except Exception:  # whatever Pillow raises on a file it cannot decode
            return torch.zeros(self.shape, dtype=torch.uint8), DECODE_FAILED, index
        if self.augment:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed(self.seed, epoch, index))
                pixels = self.transform(image)
        else:
            pixels = self.transform(image)
        return pixels, int(self.files.labels[index]), index

    def failure(self, indices: list[int], codes: list[int]) -> UserError:
        """The message for items that came back with a failure code instead of a label."""
        paths = [self.files.paths[i] for i in indices]
        large = [str(p) for p, code in zip(paths, codes, strict=True) if code == TOO_LARGE]
        if large:
            return too_large(large[:MAX_NAMED], len(large), self.max_pixels)
        named = ", ".join(str(p) for p in paths[:MAX_NAMED])
        return UserError(f"could not decode {named}; remove or replace the file(s).")


class EpochBatches(Sampler):
    """Batches of (epoch, index) keys: shuffled per (seed, epoch) and last partial batch dropped
    when `shuffle`, else in order and all kept. The loader sets `epoch` before each pass."""

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool, seed: int) -> None:
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.start = 0  # the first batch to give (a resumed epoch skips those done)

    def __len__(self) -> int:
        if self.shuffle:
            return max(1, self.num_samples // self.batch_size)
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        if self.shuffle:
            generator = epoch_generator(self.seed, self.epoch, 0)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        size = self.batch_size
        for first in range(self.start * size, len(self) * size, size):
            chunk = order[first : first + size]
            if chunk:
                yield [(self.epoch, i) for i in chunk]


class FolderLoader:
    """Batches of one split from a DataLoader with workers, normalised on the training device."""

    def __init__(
        self,
        images: ImageFiles,
        info: DatasetInfo,
        batch_size: int,
        *,
        train: bool,
        seed: int,
        workers: int,
        device: torch.device,
    ) -> None:
        self.images = images
        self.device = device
        self.batches = EpochBatches(len(images), batch_size, shuffle=train, seed=seed)
        self.loader = DataLoader(
            images,
            batch_sampler=self.batches,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
        )
        self.normalise = normaliser(info, device)

    @property
    def num_samples(self) -> int:
        return len(self.images)

    def __len__(self) -> int:
        return len(self.batches)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        self.batches.epoch = epoch
        self.batches.start = start
        for pixels, labels, index in self.loader:
            failed = labels < 0
            if failed.any():
                raise self.images.failure(index[failed].tolist(), labels[failed].tolist())
            yield Batch(
                self.normalise(pixels.to(self.device, non_blocking=True)),
                labels.to(self.device, non_blocking=True),
                index.to(self.device, non_blocking=True),
            )


# ---- the dataset ------------------------------------------------------------------------------


class FolderDataset:
    """A loaded ImageFolder: file lists per split, transforms, and loaders over them."""

    def __init__(
        self,
        info: DatasetInfo,
        files: dict[str, Files],
        train_transform,
        eval_transform,
        workers: int,
        device: torch.device | None = None,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        self.info = info
        self.files = files
        self.train_transform = train_transform
        self.eval_transform = eval_transform
        self.workers = workers
        self.device = device or torch.device("cpu")
        self.max_pixels = max_pixels

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in ("train", "val", "test") if s in self.files)

    @property
    def num_train(self) -> int:
        return len(self.files["train"].paths)

    @property
    def augmented(self) -> bool:
        return self.train_transform is not None

    def labels(self, split: str) -> torch.Tensor:
        return self.files[split].labels.to(self.device)

    def to(self, device: torch.device) -> FolderDataset:
        moved = copy.copy(self)  # the same files and transforms
        moved.device = torch.device(device)
        return moved

    def train_loader(self, batch_size: int, seed: int) -> FolderLoader:
        """Shuffled batches of augmented training views (un-augmented when augment=false)."""
        augment = self.train_transform is not None
        transform = self.train_transform if augment else self.eval_transform
        return self._loader("train", transform, augment, batch_size, seed, train=True)

    def eval_loader(self, split: str, batch_size: int) -> FolderLoader:
        """Batches of `split` in order: resized and centre-cropped, never augmented."""
        return self._loader(split, self.eval_transform, False, batch_size, 0, train=False)

    def _loader(self, split, transform, augment, batch_size, seed, *, train) -> FolderLoader:
        images = ImageFiles(
            self.files[split],
            transform,
            self.info.channels,
            self.info.image_size,
            augment,
            seed,
            self.max_pixels,
        )
        return FolderLoader(
            images,
            self.info,
            batch_size,
            train=train,
            seed=seed,
            workers=self.workers,
            device=self.device,
        )


class ImageFolder:
    """`dataset=imagefolder dataset.root=DIR`: a source that scans the tree once, lazily."""

    def __init__(
        self,
        root: str,
        image_size: int = 64,
        channels: int | str = "auto",
        augment: bool = True,
        crop_scale: Sequence[float] = (0.08, 1.0),
        flip: bool = True,
        eval_crop: float = 0.875,
        test_fraction: float = 0.2,
        val_fraction: float = 0.0,
        split_seed: int = 0,
        workers: int = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        stats_images: int = 256,
        max_pixels: int = MAX_PIXELS,
    ) -> None:
        if root is None or str(root) == "":
            raise UserError("dataset=imagefolder needs dataset.root=DIR (the tree's top folder).")
        # config/values.py checks these on a config; kept for Python callers, who would get
        # wrong splits (stratified_split clamps the fractions) or zero-padded evaluation
        # images (an eval_crop over 1) without a word
        check_fraction("dataset.test_fraction", test_fraction, allow_zero=False)
        check_fraction("dataset.val_fraction", val_fraction, allow_zero=True)
        if not 0.0 < eval_crop <= 1.0:
            raise UserError(f"dataset.eval_crop={eval_crop!r} must lie in (0, 1] (e.g. 0.875).")
        self.root = Path(str(root)).expanduser()
        self.image_size = image_size
        self.channels = channels
        self.augment = augment
        self.crop_scale = tuple(crop_scale)
        self.flip = flip
        self.eval_crop = eval_crop
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.workers = workers
        self.mean, self.std = mean, std
        self.stats_images = stats_images
        self.max_pixels = max_pixels

    @cached_property
    def tree(self) -> Tree:
        return scan(self.root, self.channels, self.test_fraction, self.split_seed, self.max_pixels)

    def check(self) -> None:
        """Scan the tree (layout, classes, every image's header); bad input is a `UserError`."""
        self.tree  # noqa: B018 (the scan raises on bad input)

    @cached_property
    def info(self) -> DatasetInfo:
        """Classes from the folders, size from the config, statistics from the images."""
        mean, std = self.mean, self.std
        if mean is None or std is None:
            mean, std = self._estimate_stats()
        elif not len(mean) == len(std) == self.tree.channels:
            raise UserError(
                f"dataset.mean={list(mean)} and dataset.std={list(std)} need one value per "
                f"channel ({self.tree.channels}); or set both to null to estimate them."
            )
        return DatasetInfo(
            name=self.root.name,
            num_classes=len(self.tree.classes),
            channels=self.tree.channels,
            image_size=self.image_size,
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
        )

    def train_transform(self):
        steps = [
            transforms.RandomResizedCrop(self.image_size, scale=self.crop_scale, antialias=True)
        ]
        if self.flip:
            steps.append(transforms.RandomHorizontalFlip())
        return transforms.Compose([*steps, transforms.PILToTensor()])

    def eval_transform(self):
        return transforms.Compose(
            [
                transforms.Resize(round(self.image_size / self.eval_crop), antialias=True),
                transforms.CenterCrop(self.image_size),
                transforms.PILToTensor(),
            ]
        )

    def load(self) -> FolderDataset:
        files = {"train": self.tree.train, "test": self.tree.test}
        if self.val_fraction > 0:
            kept, held = stratified_split(files["train"].labels, self.val_fraction, self.split_seed)
            files["val"] = files["train"].subset(held)
            files["train"] = files["train"].subset(kept)
        train_transform = self.train_transform() if self.augment else None
        return FolderDataset(
            self.info,
            files,
            train_transform,
            self.eval_transform(),
            self.workers,
            max_pixels=self.max_pixels,
        )

    def _estimate_stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std over up to `stats_images` seeded training images."""
        train = self.tree.train
        generator = torch.Generator().manual_seed(self.split_seed)
        chosen = torch.randperm(len(train.paths), generator=generator)[: self.stats_images]
        images = ImageFiles(
            train,
            self.eval_transform(),
            self.tree.channels,
            self.image_size,
            False,
            0,
            self.max_pixels,
        )
        pixels = []
        for index in chosen.tolist():
            image, label, _ = images[(0, index)]
            if label < 0:
                raise images.failure([index], [label])
            pixels.append(image.flatten(1).float() / 255.0)
        stacked = torch.cat(pixels, dim=1)  # [C, pixels]
        std = stacked.std(dim=1).clamp_min(1e-3)
        return stacked.mean(dim=1).tolist(), std.tolist()
