"""What the pipeline needs from any dataset, in memory (`memory.py`) or on disk (`imagefolder.py`).

A dataset config's `_target_` is a cheap *source* (`DataSource`): `.info` and `.check()` run
before any work (kdcli/config/objects.py `build`), `.load()` decodes the data and returns a
`Dataset`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from kdcli.errors import UserError

SPLITS = ("train", "val", "test")
"""`val` exists only with `dataset.val_fraction > 0`; `test` is for the final evaluation only."""
IGNORE = -100  # a token target no loss or figure counts (a prompt's, padding): torch's ignore_index

MODALITIES = ("image", "text", "labelled_text")
"""What a dataset holds: images with a class each; token windows whose labels are the next
tokens (`task=lm`); token sequences with a class each (text classification, `task=classify`)."""


@dataclass(frozen=True)
class DatasetInfo:
    """The facts about a dataset that model construction and normalisation need."""

    name: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    # "image"; "text": token windows, `num_classes` the vocabulary, `image_size` the length;
    # "labelled_text": texts of `image_size` token ids in 0..`vocabulary` - 1, each filled up
    # with the id `padding`, with one of `num_classes` classes, named by `classes` (sorted)
    modality: str = "image"
    vocabulary: int = 0
    padding: int = 0
    classes: tuple[str, ...] = ()

    @classmethod
    def from_record(cls, record: dict[str, Any], source: str) -> DatasetInfo:
        """The facts a file records (a model file's `dataset`, as plain values), each checked:
        a UserError naming `source` and the field when one is missing or of the wrong kind."""
        name, modality = record.get("name"), record.get("modality", "image")
        if not isinstance(name, str) or modality not in MODALITIES:
            raise UserError(
                f"{source}: dataset.name or dataset.modality is wrong; not a kdcli file."
            )
        channels = _whole(record, "channels", source)
        length = channels if modality == "image" else 0  # token ids are not normalised
        info = cls(
            name,
            _whole(record, "num_classes", source),
            channels,
            _whole(record, "image_size", source),
            _numbers(record, "mean", length, source),
            _numbers(record, "std", length, source),
            modality,
        )
        if modality != "labelled_text":
            return info
        vocabulary = _whole(record, "vocabulary", source)
        padding, classes = record.get("padding"), record.get("classes")
        if (
            isinstance(padding, bool)
            or not isinstance(padding, int)
            or not 0 <= padding < vocabulary
        ):
            raise UserError(
                f"{source}: dataset.padding={padding!r} is not a token id; not a kdcli file."
            )
        names = classes if isinstance(classes, list | tuple) else []
        if len(names) != info.num_classes or not all(isinstance(c, str) for c in names):
            raise UserError(
                f"{source}: dataset.classes is not {info.num_classes} names; not a kdcli file."
            )
        return dataclasses.replace(
            info, vocabulary=vocabulary, padding=padding, classes=tuple(names)
        )

    def model_kwargs(self) -> dict[str, int]:
        """The keyword arguments every model config receives from the dataset; text
        classifiers also receive the token ids' range (`vocabulary`) and the `padding` id."""
        kwargs = {
            "num_classes": self.num_classes,
            "in_channels": self.channels,
            "image_size": self.image_size,
        }
        if self.modality == "labelled_text":
            kwargs.update(vocabulary=self.vocabulary, padding=self.padding)
        return kwargs

    def example(self) -> torch.Tensor:
        """One input of this dataset's shape (zeros; a text classifier's: a text as long as
        the longest, of one token that is not padding), for measuring a model."""
        if self.modality == "text":
            return torch.zeros(1, self.image_size, dtype=torch.long)
        if self.modality == "labelled_text":
            token = (self.padding + 1) % self.vocabulary
            return torch.full((1, self.image_size), token, dtype=torch.long)
        return torch.zeros(1, self.channels, self.image_size, self.image_size)

    def describe(self) -> str:
        """E.g. "digits (10 classes, 1 channel(s), 8x8)", for messages about a model's fit."""
        if self.modality == "text":
            return f"{self.name} ({self.num_classes} tokens, windows of {self.image_size})"
        if self.modality == "labelled_text":
            return (
                f"{self.name} ({self.num_classes} classes, {self.vocabulary} tokens, texts of "
                f"{self.image_size})"
            )
        return (
            f"{self.name} ({self.num_classes} classes, {self.channels} channel(s), "
            f"{self.image_size}x{self.image_size})"
        )


def _whole(record: dict[str, Any], name: str, source: str) -> int:
    value = record.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1 << 24:
        raise UserError(f"{source}: dataset.{name}={value!r} is not a size; not a kdcli file.")
    return value


def _numbers(record: dict[str, Any], name: str, length: int, source: str) -> tuple[float, ...]:
    value = record.get(name)
    if (
        not isinstance(value, list | tuple)
        or len(value) != length
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise UserError(f"{source}: dataset.{name} is not {length} numbers; not a kdcli file.")
    return tuple(float(v) for v in value)


@dataclass
class Batch:
    x: torch.Tensor  # float, normalised, [B, C, H, W]
    y: torch.Tensor  # int64 [B]
    index: torch.Tensor  # int64 [B], positions in the split
    # False: `y` is not ground truth but text the student wrote itself (on-policy
    # distillation, `loss.lmbda`); the loss then learns the teacher's distributions alone
    labelled: bool = True


class Loader(Protocol):
    """Batches of one split; the training loop and `predict` consume nothing else."""

    @property
    def num_samples(self) -> int: ...

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """The batches of `epoch` from the `start`-th on (a resumed epoch skips those done)."""
        ...


class Dataset(Protocol):
    """A loaded dataset: its facts, its splits' labels and loaders over them."""

    info: DatasetInfo

    @property
    def splits(self) -> tuple[str, ...]: ...

    @property
    def num_train(self) -> int: ...

    @property
    def augmented(self) -> bool:
        """Whether training views differ from the clean images (stored features then misalign)."""
        ...

    def labels(self, split: str) -> torch.Tensor: ...

    def train_loader(self, batch_size: int, seed: int) -> Loader: ...

    def eval_loader(self, split: str, batch_size: int) -> Loader: ...

    def to(self, device: torch.device) -> Dataset: ...


class DataSource(Protocol):
    """What a dataset config builds: `check` finds the files and proves them sound (a
    `UserError` naming the file and the fix), before anything is trained; `load` decodes them."""

    def check(self) -> None: ...

    def load(self) -> Dataset: ...


def normaliser(info: DatasetInfo, device: torch.device):
    """uint8 [B, C, H, W] -> normalised float, computed in place on one float buffer (token
    windows pass through)."""
    if info.modality != "image":
        return lambda tokens: tokens
    shift = torch.tensor(info.mean, device=device).view(1, -1, 1, 1) * 255.0
    scale = torch.tensor(info.std, device=device).view(1, -1, 1, 1) * 255.0

    def normalise(images: torch.Tensor) -> torch.Tensor:
        return images.float().sub_(shift).div_(scale)

    return normalise
