"""Hugging Face causal LMs from local directories (`teacher=hf teacher.path=DIR`,
`student=hf student.path=DIR`), with the optional extra `kdcli[hf]` (transformers).

Nothing is downloaded: the model and its tokenizer are read from the directory that
`save_pretrained()` wrote, with `local_files_only` and `HF_HUB_OFFLINE=1`.

Distillation matches two distributions token by token, so the teacher, the student and the
data must use one tokenizer: `check_shared_tokenizer` compares their vocabularies before any
training and stops the run (exit 2) naming both directories when they differ. Models often
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

from kdcli.data.tokenizer import load_tokenizer, transformers_module
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
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(
            directory, local_files_only=True, trust_remote_code=False
        )
    except (OSError, ValueError) as error:
        raise UserError(
            f"path={path}: no causal LM could be loaded ({str(error).splitlines()[0]})."
        ) from None
    rows = model.get_output_embeddings().weight.shape[0]
    if rows < num_classes:
        raise UserError(
            f"path={path}: the model has {rows} output rows, fewer than the {num_classes} "
            "tokens of the data's tokenizer (dataset.tokenizer); use the model's own tokenizer."
        )
    positions = positions_of(model.config)
    if positions is not None and image_size > positions:
        raise UserError(
            f"dataset.block_size={image_size}: the model at {path} reads at most {positions} "
            f"positions; set dataset.block_size={positions} or less."
        )
    return CausalLM(model, num_classes, directory)


def check_shared_tokenizer(models: dict[str, nn.Module], tokenizer: str | None) -> None:
    """The Hugging Face models among `models` (role -> model, teacher first) and the data
    (`dataset.tokenizer`; None: characters) use one tokenizer. Exit 2 naming both
    directories when two vocabularies differ."""
    hf = {role: m for role, m in models.items() if isinstance(m, CausalLM)}
    if not hf:
        return
    if tokenizer is None:
        role = next(iter(hf))
        raise UserError(
            f"{role}=hf reads the ids of its tokenizer, but dataset.tokenizer is null (the data "
            f"is cut into characters); set dataset.tokenizer={hf[role].path}."
        )
    sources = [(f"{role}.path", m.path) for role, m in hf.items() if _has_tokenizer(m.path)]
    sources.append(("dataset.tokenizer", Path(tokenizer).expanduser()))
    first_key, first_dir = sources[0]
    reference = load_tokenizer(first_dir, first_key).get_vocab()
    for key, directory in sources[1:]:
        if directory.resolve() == first_dir.resolve():
            continue
        vocabulary = load_tokenizer(directory, key).get_vocab()
        if vocabulary != reference:
            raise UserError(
                f"{first_key}={first_dir} and {key}={directory} use different tokenizers "
                f"({_difference(reference, vocabulary)}). Distillation compares the teacher's "
                "and the student's distributions token by token, so both must share one: pick "
                "a student of the teacher's family, or one trained with its tokenizer "
                "(student=gpt_tiny is built for the data's tokenizer)."
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


def _difference(a: dict[str, int], b: dict[str, int]) -> str:
    if len(a) != len(b):
        return f"{len(a)} and {len(b)} tokens"
    token = next(t for t in sorted(a) if a[t] != b.get(t))
    return f"{token!r} is token {a[token]} in one and {b.get(token)} in the other"
