"""Text classification (`task=classify` on text): labelled texts from a JSON Lines file.

`dataset=text_classify dataset.path=FILE.jsonl` reads one `{"text": ..., "label": ...}` object
per line (other keys are ignored; blank lines are skipped). Labels are strings or whole numbers,
one kind per file; the classes are the distinct labels sorted (numbers by value), class i the
i-th, and the report and every model file record their names (`dataset.classes`).

Characters are the tokens: id 0 pads, ids 1.. are the file's distinct characters in sorted
order. `dataset.tokenizer=DIR` uses a Hugging Face tokenizer instead (with its special tokens,
e.g. [CLS] ... [SEP], and its padding token); `teacher=hf_classifier` sets it to the teacher's
directory. Every text is cut to `max_length` tokens and filled up to that length with the
padding id, which the models mask. `test_fraction` of each class is held out as the test split
by `split_seed`, then `val_fraction` of each class of the rest as the validation split.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

import torch

from kdcli.data.base import DatasetInfo
from kdcli.data.memory import InMemoryDataset, Split, with_validation
from kdcli.data.split import check_fraction, stratified_split
from kdcli.data.tokenizer import load_tokenizer
from kdcli.errors import UserError
from kdcli.store.plain import read_jsonl

log = logging.getLogger(__name__)

LINE = '{"text": "...", "label": ...}'
FIX = f"Give one JSON object {LINE} per line."
Label = str | int


class TextTokens(Protocol):
    """Texts -> token ids [N, length], each text cut to `length` and filled with `padding`."""

    padding: int

    def __len__(self) -> int: ...

    def encode(self, texts: Sequence[str], length: int) -> torch.Tensor: ...


class Characters:
    """Characters as tokens: id 0 pads, `characters[i]` is id i + 1."""

    padding = 0

    def __init__(self, characters: str) -> None:
        self.characters = characters
        self.index = {c: i + 1 for i, c in enumerate(characters)}

    def __len__(self) -> int:
        return len(self.characters) + 1

    def encode(self, texts: Sequence[str], length: int) -> torch.Tensor:
        tokens = torch.zeros(len(texts), length, dtype=torch.long)
        for row, text in enumerate(texts):
            ids = [self.index[c] for c in text[:length]]
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return tokens

    def decode(self, tokens: list[int]) -> str:
        return "".join(self.characters[t - 1] for t in tokens if t != self.padding)


class PretrainedTokens:
    """A Hugging Face tokenizer's ids, with its special tokens; its padding token fills the
    texts (its end-of-text token where it has none, as for GPT-2)."""

    def __init__(self, path: str) -> None:
        self.tokenizer = load_tokenizer(path, "dataset.tokenizer")
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise UserError(
                    f"dataset.tokenizer={path}: the tokenizer has neither a padding nor an "
                    "end-of-text token to fill short texts with; give it one "
                    "(tokenizer.pad_token = ...; tokenizer.save_pretrained(DIR))."
                )
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.padding = int(self.tokenizer.pad_token_id)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, texts: Sequence[str], length: int) -> torch.Tensor:
        encoded = self.tokenizer(
            list(texts), truncation=True, max_length=length, padding="max_length"
        )
        return torch.tensor(encoded["input_ids"], dtype=torch.long)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=True)


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words: "null", "a number", "a list", ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    kinds = {str: "a string", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def labelled_line(value: Any, where: str) -> tuple[str, Label]:
    """(text, label) of one parsed line; `where` is "FILE line N", for the message."""
    if not isinstance(value, dict):
        raise UserError(f"{where} is {json_kind(value)}, not a JSON object. {FIX}")
    for key in ("text", "label"):
        if key not in value:
            raise UserError(f'{where} has no "{key}". {FIX}')
    text, label = value["text"], value["label"]
    if not isinstance(text, str):
        raise UserError(f'{where}: "text" is {json_kind(text)}; it must be a string. {FIX}')
    if isinstance(label, bool) or not isinstance(label, str | int):
        shown, kind = json.dumps(label)[:40], json_kind(label)
        raise UserError(
            f'{where}: "label" is {shown if shown == kind else f"{shown} ({kind})"}; it must '
            "be a string or a whole number."
        )
    return text, label


def read_labelled(path: Path) -> list[tuple[str, Label]]:
    """Every (text, label) of a JSON Lines file; a bad line is a UserError naming the file
    and the line, as are an empty file, labels of two kinds, and a single class."""
    found: list[tuple[str, Label]] = []
    first: dict[type, int] = {}
    for number, value in read_jsonl(path, FIX):
        text, label = labelled_line(value, f"{path} line {number}")
        first.setdefault(type(label), number)
        if len(first) > 1:
            kinds = {str: "a string", int: "a number"}
            raise UserError(
                f'{path} line {number}: "label" is {kinds[type(label)]}, but line '
                f"{min(first.values())} has {kinds[type(found[0][1])]}: the labels of a file "
                "must all be strings or all whole numbers."
            )
        found.append((text, label))
    if not found:
        raise UserError(f"{path} holds no labelled texts (it is empty). {FIX}")
    return found


class TextClassification:
    """A dataset source (`configs/dataset/text_classify.yaml`)."""

    def __init__(
        self,
        path: str | None = None,
        name: str = "text_classify",
        max_length: int = 128,
        tokenizer: str | None = None,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        self.path = Path(path).expanduser() if path else None
        self.name = name
        self.max_length = max_length
        self.tokenizer = tokenizer
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction
        self.split_seed = split_seed

    def check(self) -> None:
        if self.path is None or not self.path.is_file():
            raise UserError(
                f"dataset.path={self.path}: no such file. Give a JSON Lines file with one "
                f"{LINE} object per line."
            )

    def labelled(self) -> list[tuple[str, Label]]:
        """The (text, label) pairs, in the file's order."""
        self.check()
        assert self.path is not None
        return read_labelled(self.path)

    @cached_property
    def _texts(self) -> tuple[list[str], torch.Tensor, tuple[str, ...]]:
        """The texts, their class ids, and the class names (at least two)."""
        pairs = self.labelled()
        classes = sorted({label for _, label in pairs})
        if len(classes) < 2:
            raise UserError(
                f"{self.path or self.name}: every text has the label {classes[0]!r}; a "
                "classifier needs texts of at least two classes."
            )
        ids = {label: i for i, label in enumerate(classes)}
        labels = torch.tensor([ids[label] for _, label in pairs], dtype=torch.long)
        return [text for text, _ in pairs], labels, tuple(str(c) for c in classes)

    @cached_property
    def tokens(self) -> Characters | PretrainedTokens:
        """The tokenizer: `dataset.tokenizer`'s, or the texts' distinct characters."""
        if self.tokenizer:
            return PretrainedTokens(self.tokenizer)
        return Characters("".join(sorted(set("".join(self._texts[0])))))

    @property
    def info(self) -> DatasetInfo:
        """The facts models are built from (reads the file: the classes and characters)."""
        tokens, classes = self.tokens, self._texts[2]
        return DatasetInfo(
            self.name,
            len(classes),
            1,
            self.max_length,
            (),
            (),
            modality="labelled_text",
            vocabulary=len(tokens),
            padding=tokens.padding,
            classes=classes,
        )

    def load(self) -> InMemoryDataset:
        check_fraction("dataset.test_fraction", self.test_fraction, allow_zero=False)
        texts, labels, _ = self._texts
        tokens = self.tokens.encode(texts, self.max_length)
        longer = int((tokens[:, -1] != self.tokens.padding).sum())
        if longer:
            log.info(
                "%s: %d of %d texts fill dataset.max_length=%d tokens (longer ones are cut)",
                self.name,
                longer,
                len(texts),
                self.max_length,
            )
        kept, held = stratified_split(labels, self.test_fraction, self.split_seed)
        if len(held) == 0:
            raise UserError(
                f"{self.path or self.name}: {len(texts)} texts leave none for the test split "
                f"(dataset.test_fraction={self.test_fraction} of each class); give more texts "
                "or a larger dataset.test_fraction."
            )
        train, test = Split(tokens[kept], labels[kept]), Split(tokens[held], labels[held])
        data = with_validation(self.info, train, test, None, self.val_fraction, self.split_seed)
        data.train = Split(data.train.images, self.training_labels(data.train.labels))
        data.vocabulary = self.tokens
        return data

    def training_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """The training split's labels as they are to be learnt (as read; kdcli/data/reviews.py
        makes some of them wrong)."""
        return labels
