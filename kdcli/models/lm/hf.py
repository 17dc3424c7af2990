"""Hugging Face causal LMs from local directories (`teacher=hf teacher.path=DIR`,
`student=hf student.path=DIR`), with the optional extra `kdcli[hf]` (transformers).

Nothing is downloaded: the model and its tokenizer are read from the directory that
`save_pretrained()` wrote, with `local_files_only` and `HF_HUB_OFFLINE=1`.

Distillation matches two distributions token by token, so the teacher, the student and the
data must use one tokenizer: `check_shared_tokenizer` compares their vocabularies before any
training and stops the run (exit 2) naming both directories when they differ (one that
extends the other with tokens of its own, such as an added pad token, is fine; a teacher with
its own tokenizer is checked against `teacher.tokenizer`, for `loss=uld`). Models often
pad their embedding matrix to a multiple of 64 or 128 rows for speed; the rows past the
tokenizer's vocabulary stand for no token, so the wrapper drops them from the logits and
says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdcli.data.tokenizer import ReadsTokenizer, load_tokenizer, transformers_module
from kdcli.errors import UserError

if TYPE_CHECKING:  # the optional extra: imported where a model is loaded
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


def _directory(path: str | Path, what: str) -> Path:
    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise UserError(
            f"{what}={path}: no config.json there. Give the directory that a Hugging Face "
            "model's save_pretrained() wrote (config.json, the weights, the tokenizer files)."
        )
    return directory


class CausalLM(nn.Module):
    """A transformers causal LM as a kdcli model: token ids [B, T] -> logits [B, T, V], where
    V is the tokenizer's vocabulary (padded embedding rows dropped)."""

    def __init__(self, model: PreTrainedModel, vocabulary: int, path: Path) -> None:
        super().__init__()
        self.model = model
        self.vocabulary = vocabulary
        self.path = path
        self.padded_rows = model.get_output_embeddings().weight.shape[0] - vocabulary

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = self.model(input_ids=tokens, use_cache=False).logits
        return logits[..., : self.vocabulary]


def positions_of(config: Any) -> int | None:
    """The most positions a transformers model config reads (None: it does not say)."""
    for name in ("n_positions", "max_position_embeddings", "n_ctx"):
        if isinstance(getattr(config, name, None), int):
            return getattr(config, name)
    return None


def from_directory(auto: Any, directory: Path, path: str, what: str, **options: Any) -> Any:
    """`auto.from_pretrained(directory, **options)` offline and without running the
    directory's code; exit 2 naming `path` when no `what` can be loaded from it."""
    try:
        return auto.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False, **options
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"path={path}: no {what} could be loaded ({str(error).splitlines()[0]})."
        ) from None


def check_positions(config: Any, path: str, length: int, key: str, note: str = "") -> None:
    """The model of `config` (saved in `path`) reads inputs of `length` tokens; `key` is the
    dataset's option that set it, for the message (`note` after it)."""
    positions = positions_of(config)
    if positions is not None and length > positions:
        raise UserError(
            f"{key}={length}{note}: the model at {path} reads at most {positions} positions; set "
            f"{key}={positions} or less."
        )


def hf_causal_lm(
    path: str,
    num_classes: int,
    in_channels: int = 1,
    image_size: int = 64,
    stamp: str | None = None,
) -> CausalLM:
    """The causal LM saved in `path`, for a vocabulary of `num_classes` tokens and windows of
    `image_size`. `stamp` only keys the cache (the weights' identity, kdcli.config.resolvers)."""
    directory = _directory(path, "path")
    transformers = transformers_module()
    model = from_directory(transformers.AutoModelForCausalLM, directory, path, "causal LM")
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < num_classes:
        raise UserError(
            f"path={path}: the model has {rows} output rows, fewer than the {num_classes} "
            "tokens of the data's tokenizer (dataset.tokenizer); use the model's own tokenizer."
        )
    note = " (dataset.max_length for instruction data)"
    check_positions(model.config, path, image_size, "dataset.block_size", note)
    return CausalLM(model, num_classes, directory)


def check_shared_tokenizer(
    models: dict[str, nn.Module], tokenizer: str | None, key: str = "dataset.tokenizer"
) -> None:
    """The Hugging Face models among `models` (role -> model, teacher first) and the data
    they read (`tokenizer`, set by `key`; None: characters) use one tokenizer. Exit 2
    naming both directories when two vocabularies differ, beyond one extending the other."""
    hf = {role: m for role, m in models.items() if isinstance(m, ReadsTokenizer)}
    if not hf:
        return
    if tokenizer is None:
        role = next(iter(hf))
        raise UserError(
            f"{role}.path={hf[role].path} reads the ids of its tokenizer, but {key} is null or "
            f"chars (the data is cut into characters); set {key}={hf[role].path}."
        )
    sources = [(f"{role}.path", m.path) for role, m in hf.items() if _has_tokenizer(m.path)]
    sources.append((key, Path(tokenizer).expanduser()))
    first_key, first_dir = sources[0]
    reference = load_tokenizer(first_dir, first_key).get_vocab()
    for key, directory in sources[1:]:
        if directory.resolve() == first_dir.resolve():
            continue
        vocabulary = load_tokenizer(directory, key).get_vocab()
        if difference := _difference(reference, vocabulary):
            raise UserError(
                f"{first_key}={first_dir} and {key}={directory} use different tokenizers "
                f"({difference}). The teacher and the student read the same token ids (and a "
                "language model's distributions are compared token by token), so both must share "
                "one: pick a student of the teacher's family, or one trained with its tokenizer "
                "(student=gpt_tiny and student=text_transformer_tiny are built for the data's "
                "tokenizer); or distil a language model across the two tokenizers with loss=uld "
                "and teacher.tokenizer=<the teacher's directory>."
            )
        if len(vocabulary) != len(reference):
            log.info(
                "%s: its tokenizer has %d tokens, %s's %d; every token of the smaller has the "
                "same id in the larger",
                key,
                len(vocabulary),
                first_key,
                len(reference),
            )
    for role, model in hf.items():
        if model.padded_rows:
            log.info(
                "%s: the model's vocabulary is padded to %d rows, its tokenizer has %d "
                "tokens; the %d padded rows are ignored",
                role,
                model.vocabulary + model.padded_rows,
                model.vocabulary,
                model.padded_rows,
            )


def _has_tokenizer(directory: Path) -> bool:
    names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    return any((directory / name).is_file() for name in names)


def _difference(a: dict[str, int], b: dict[str, int]) -> str | None:
    """What differs between two vocabularies (token -> id), or None when one extends the
    other: every token of the smaller has the same id in the larger (whose extra tokens, a
    pad token a fine-tune added, say, take ids the smaller does not use). Ids come from the
    data's tokenizer, and every model has rows for all of them (`hf_causal_lm` checks)."""
    small, large = (a, b) if len(a) <= len(b) else (b, a)
    token = next((t for t in sorted(small) if large.get(t) != small[t]), None)
    if token is None:
        return None
    sizes = f"{len(a)} and {len(b)} tokens, " if len(a) != len(b) else ""
    return f"{sizes}{token!r} is token {a.get(token)} in one and {b.get(token)} in the other"
