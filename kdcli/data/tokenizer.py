"""Hugging Face tokenizers read from local directories (`dataset.tokenizer=DIR`, and the
tokenizers saved beside `teacher=hf` / `student=hf` models), with the optional extra
`kdcli[hf]`. Nothing is downloaded (`local_files_only`, `HF_HUB_OFFLINE=1`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from kdcli.errors import UserError

INSTALL = "pip install 'kdcli[hf]' (transformers and tokenizers)"


def transformers_module() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for the Hub
    try:
        import transformers
    except ImportError:
        raise UserError(f"Hugging Face models need transformers: {INSTALL}.") from None
    transformers.logging.set_verbosity_error()  # its notices
    transformers.logging.disable_progress_bar()  # "Loading weights" on every model read
    return transformers


@runtime_checkable
class ReadsTokenizer(Protocol):
    """A model read from a directory that reads the ids of the tokenizer saved beside it
    (`teacher=hf`, `hf_classifier`): `path`, the tokenizer's `vocabulary`, and the rows of the
    model's vocabulary past it that it ignores (`padded_rows`)."""

    path: Path
    vocabulary: int
    padded_rows: int


def load_tokenizer(path: str | Path, what: str) -> Any:
    """The tokenizer saved in `path` (`what`: the config key that named it, for errors)."""
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise UserError(f"{what}={path}: no such directory. Give a tokenizer's directory.")
    try:
        return transformers_module().AutoTokenizer.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"{what}={path}: no tokenizer could be read there ({str(error).splitlines()[0]}). "
            "Save one with tokenizer.save_pretrained(DIR)."
        ) from None


class Tokens:
    """Text <-> token ids with a Hugging Face tokenizer (the text dataset's `vocabulary`)."""

    def __init__(self, path: str | Path, what: str = "dataset.tokenizer") -> None:
        self.tokenizer = load_tokenizer(path, what)

    def __len__(self) -> int:
        return len(self.tokenizer)

    def encode(self, text: str) -> torch.Tensor:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)

    def decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)
