"""Text for language-model distillation: a character-level corpus cut into fixed windows.

The default corpus is bundled (kdcli/data/corpus/shakespeare.txt.gz, no download);
`dataset=text dataset.path=FILE` reads the user's own UTF-8 text. Characters are the tokens
(the vocabulary is the corpus's distinct characters, in sorted order). The text is cut into
non-overlapping windows of `block_size` + 1 characters, so every window is a fixed sample
whose teacher distributions can be stored: x is its first `block_size` characters, y the
same shifted by one (the next character at each position). The windows are split in text
order, train first, then validation, then test, so no held-out text leaks into training.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import torch

from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split
from kdcli.data.split import check_fraction
from kdcli.errors import UserError

BUNDLED = Path(__file__).parent / "corpus" / "shakespeare.txt.gz"


@dataclass
class Vocabulary:
    characters: str

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.characters)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.characters[t] for t in tokens)


class TextCorpus:
    """A dataset source (`configs/dataset/shakespeare.yaml`, `text.yaml`)."""

    def __init__(
        self,
        name: str = "shakespeare",
        path: str | None = None,
        block_size: int = 64,
        max_chars: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
    ) -> None:
        self.name = name
        self.path = Path(path).expanduser() if path else BUNDLED
        self.block_size = block_size
        self.max_chars = max_chars
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction

    def check(self) -> None:
        if not self.path.is_file():
            raise UserError(f"dataset.path={self.path}: no such file. Give a UTF-8 text file.")
        check_fraction("dataset.val_fraction", self.val_fraction, allow_zero=True)
        check_fraction("dataset.test_fraction", self.test_fraction, allow_zero=False)

    def text(self) -> str:
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "rt", encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(
                f"dataset.path={self.path} could not be read as UTF-8 text ({error})."
            ) from None
        text = text[: self.max_chars] if self.max_chars else text
        windows = len(text) // (self.block_size + 1)
        if windows < 10:
            raise UserError(
                f"dataset.path={self.path} holds {len(text)} characters, {windows} windows of "
                f"dataset.block_size + 1 = {self.block_size + 1}; give more text (at least 10 "
                "windows) or a smaller dataset.block_size."
            )
        return text

    def load(self) -> InMemoryDataset:
        text = self.text()
        vocabulary = Vocabulary("".join(sorted(set(text))))
        tokens = vocabulary.encode(text)
        span = self.block_size + 1
        windows = tokens[: len(tokens) // span * span].view(-1, span)
        count = len(windows)
        test = max(1, round(count * self.test_fraction))
        val = round(count * self.val_fraction)
        train = count - val - test
        info = text_info(self.name, len(vocabulary.characters), self.block_size)
        parts = torch.split(windows, [train, val, test])
        splits = [Split(part[:, :-1].contiguous(), part[:, 1:].contiguous()) for part in parts]
        val_split = splits[1] if val else None
        return InMemoryDataset(info, splits[0], splits[2], None, val_split, vocabulary)


def text_info(name: str, vocabulary_size: int, block_size: int) -> DatasetInfo:
    """Token windows: `num_classes` is the vocabulary, `image_size` the window length."""
    return DatasetInfo(name, vocabulary_size, 1, block_size, (), (), modality="text")
