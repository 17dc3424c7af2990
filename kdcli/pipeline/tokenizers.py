"""Which tokenizer the teacher reads: `teacher.tokenizer` (null: the student's, the data's
`dataset.tokenizer`; `chars`: the text's characters; or a Hugging Face tokenizer's
directory). When it is not the student's, the run distils across two tokenizers (`loss=uld`):
the data is read by both (kdcli/config/objects.py) and the teacher's cache keys name its
tokenizer (kdcli/pipeline/keys.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdcli.store.cache import file_sha256

CHARACTERS = "chars"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "special_tokens_map.json",
)


def _same_directory(a: str, b: str) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def teacher_tokenizer(cfg: DictConfig) -> str | None:
    """The teacher's own tokenizer when it is not the student's: `chars` or a directory;
    None when the two read the data alike."""
    value = OmegaConf.select(cfg, "teacher.tokenizer", default=None)
    return own_tokenizer(value, cfg.dataset.get("tokenizer"))


def own_tokenizer(teacher: Any, student: Any) -> str | None:
    """`teacher` (a `teacher.tokenizer` value) when it names another tokenizer than
    `student` (`dataset.tokenizer`; None: characters), else None."""
    if teacher is None:
        return None
    if str(teacher) == CHARACTERS:
        return None if student is None else CHARACTERS
    if student is not None and _same_directory(str(teacher), str(student)):
        return None
    return str(teacher)


def data_tokenizer(tokenizer: str) -> str | None:
    """A `teacher.tokenizer` value as a dataset's `tokenizer` (None: characters)."""
    return None if tokenizer == CHARACTERS else tokenizer


def tokenizer_identity(cfg: DictConfig) -> dict[str, Any] | None:
    """What keys the teacher's tokenizer (None: the student's, which `dataset.*` keys):
    characters, or a directory by its path and its tokenizer files' contents."""
    own = teacher_tokenizer(cfg)
    if own is None or own == CHARACTERS:
        return None if own is None else {"tokenizer": CHARACTERS}
    directory = Path(own).expanduser()
    files = {
        name: file_sha256(directory / name)
        for name in TOKENIZER_FILES
        if (directory / name).is_file()
    }
    return {"tokenizer": str(directory.resolve()), "files": files}
