"""Text for language-model distillation: a character-level corpus cut into fixed windows.

The default corpus is bundled (kdcli/data/corpus/shakespeare.txt.gz, no download);
`dataset=text dataset.path=FILE` reads the user's own UTF-8 text. Characters are the tokens
(the vocabulary is the corpus's distinct characters, in sorted order), unless
`dataset.tokenizer=DIR` names a Hugging Face tokenizer (`teacher=hf` sets it to the
teacher's directory), whose vocabulary then sizes the models. The text is cut into
non-overlapping windows of `block_size` + 1 characters, so every window is a fixed sample
whose teacher distributions can be stored: x is its first `block_size` characters, y the
same shifted by one (the next character at each position). The windows are split in text
order, train first, then validation, then test, so no held-out text leaks into training.

When the teacher reads the text with another tokenizer (`teacher.tokenizer`, `loss=uld`),
each sample must be the same text for both: `dataset.windows` is then `characters` (the
config resolves it so): windows of `block_size` + 1 characters, each window's tokens (at
most as many as its characters) right-padded to the longest window's count, the padding's
targets -100; `with_tokenizer` gives the corpus as another tokenizer reads it, and the i-th
window is the same text under either. With characters as the tokens these are the usual
windows.
"""

from __future__ import annotations

import copy
import gzip
from dataclasses import dataclass
from pathlib import Path

import torch

from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split
from kdcli.data.tokenizer import Tokens
from kdcli.errors import UserError

IGNORE = -100  # a target that counts for nothing (padding)
WINDOWS = ("tokens", "characters")  # what `block_size` + 1 counts in a window
BUNDLED = Path(__file__).parent / "corpus" / "shakespeare.txt.gz"


@dataclass
class Vocabulary:
    characters: str

    def encode(self, text: str) -> torch.Tensor:
        index = {c: i for i, c in enumerate(self.characters)}
        return torch.tensor([index[c] for c in text], dtype=torch.long)

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.characters[t] for t in tokens)

    def __len__(self) -> int:
        return len(self.characters)


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
        tokenizer: str | None = None,
        windows: str = "tokens",
    ) -> None:
        if windows not in WINDOWS:
            raise UserError(f"dataset.windows={windows!r} must be tokens or characters.")
        self.name = name
        self.path = Path(path).expanduser() if path else BUNDLED
        self.block_size = block_size
        self.max_chars = max_chars
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.tokenizer = tokenizer
        self.windows = windows

    def with_tokenizer(self, tokenizer: str | None) -> TextCorpus:
        """The corpus as `tokenizer` (None: characters) reads it, in the same windows."""
        other = copy.copy(self)
        other.tokenizer = tokenizer
        return other

    def check(self) -> None:
        if not self.path.is_file():
            raise UserError(f"dataset.path={self.path}: no such file. Give a UTF-8 text file.")

    def text(self) -> str:
        opener = gzip.open if self.path.suffix == ".gz" else open
        try:
            with opener(self.path, "rt", encoding="utf-8") as handle:
                text = handle.read()
        except (OSError, UnicodeDecodeError) as error:
            raise UserError(
                f"dataset.path={self.path} could not be read as UTF-8 text ({error})."
            ) from None
        return text[: self.max_chars] if self.max_chars else text

    def vocabulary(self, text: str) -> Vocabulary | Tokens:
        """The tokenizer: `dataset.tokenizer`'s, or the text's distinct characters."""
        return Tokens(self.tokenizer) if self.tokenizer else Vocabulary("".join(sorted(set(text))))

    @property
    def info(self) -> DatasetInfo:
        """The facts models are built from, without cutting the windows (`kd list`)."""
        vocabulary = self.vocabulary(self.text())
        return text_info(self.name, len(vocabulary), self.block_size)

    def load(self) -> InMemoryDataset:
        text = self.text()
        vocabulary = self.vocabulary(text)
        span = self.block_size + 1
        if self.windows == "characters":
            windows = character_windows(text, vocabulary, span)
        else:
            tokens = vocabulary.encode(text)
            windows = tokens[: len(tokens) // span * span].view(-1, span)
        if len(windows) < 10:
            unit = self.windows
            raise UserError(
                f"dataset.path={self.path} holds {len(windows)} windows of dataset.block_size "
                f"+ 1 = {span} {unit}; give more text (at least 10 windows) or a smaller "
                "dataset.block_size."
            )
        count = len(windows)
        test = max(1, round(count * self.test_fraction))
        val = round(count * self.val_fraction)
        train = count - val - test
        info = text_info(self.name, len(vocabulary), windows.shape[1] - 1)
        parts = torch.split(windows, [train, val, test])
        splits = [window_split(part) for part in parts]
        val_split = splits[1] if val else None
        return InMemoryDataset(info, splits[0], splits[2], None, val_split, vocabulary)


def window_split(windows: torch.Tensor) -> Split:
    """Windows [N, T + 1] as a split: inputs, and the next token at each position (a padding
    position, -1, is read as token 0 and its target is -100)."""
    x, y = windows[:, :-1], windows[:, 1:]
    return Split(x.clamp_min(0).contiguous(), y.masked_fill(y < 0, IGNORE).contiguous())


def character_windows(text: str, vocabulary: Vocabulary | Tokens, span: int) -> torch.Tensor:
    """The text cut into windows of `span` characters, each encoded on its own and cut to
    `span` tokens: [N, L] ids, L the longest window's token count, -1 padding on the right."""
    pieces = [text[start : start + span] for start in range(0, len(text) - span + 1, span)]
    encoded = [vocabulary.encode(piece)[:span] for piece in pieces]
    length = max((len(ids) for ids in encoded), default=0)
    windows = torch.full((len(encoded), length), -1, dtype=torch.long)
    for row, ids in enumerate(encoded):
        windows[row, : len(ids)] = ids
    return windows


def text_info(name: str, vocabulary_size: int, block_size: int) -> DatasetInfo:
    """Token windows: `num_classes` is the vocabulary, `image_size` the window length."""
    return DatasetInfo(name, vocabulary_size, 1, block_size, (), (), modality="text")
