"""Two tokenizers (`teacher.tokenizer`, kdcli/pipeline/tokenizers.py): what the config must
say before a run distils across them, and the data read by both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from kdcli.errors import UserError
from kdcli.pipeline.tokenizers import CHARACTERS, data_tokenizer, teacher_tokenizer

ULD = "kdcli.losses.uld.UniversalLogitDistillation"
MODES = ("auto", "static", "online")  # the teacher's outputs on its own reading of each sample


def check_tokenizers(cfg: DictConfig, language_model: bool) -> None:
    """`teacher.tokenizer` names characters or a directory, and with a tokenizer that is not
    the student's the run is text, the loss is `loss=uld` (the other losses compare two
    distributions over one vocabulary, token by token) and the soft labels are the teacher's
    outputs on each sample (not text it writes, nor augmented views)."""
    value = OmegaConf.select(cfg, "teacher.tokenizer", default=None)
    if value is None:
        return
    if str(value) != CHARACTERS and not Path(str(value)).expanduser().is_dir():
        raise UserError(
            f"teacher.tokenizer={value}: no such directory. Give the directory of the "
            f"teacher's Hugging Face tokenizer, `{CHARACTERS}` for characters, or null when "
            "the teacher reads the student's tokenizer (dataset.tokenizer)."
        )
    if not language_model:
        raise UserError(
            f"teacher.tokenizer={value}: a tokenizer is for text (task=lm or task=instruct); "
            "images need none, set teacher.tokenizer=null."
        )
    if teacher_tokenizer(cfg) is None:
        return
    student = cfg.dataset.get("tokenizer") or "null (characters)"
    if cfg.loss.get("_target_") != ULD:
        raise UserError(
            f"teacher.tokenizer={value} is not the student's tokenizer (dataset.tokenizer="
            f"{student}), and loss={_loss_name(cfg.loss)} compares the teacher's and the "
            "student's probabilities token by token over one vocabulary. Distil across two "
            "tokenizers with loss=uld (Universal Logit Distillation), or give the teacher the "
            "student's tokenizer (teacher.tokenizer=null)."
        )
    windows = cfg.dataset.get("windows", "characters")
    if windows != "characters":
        raise UserError(
            f"dataset.windows={windows} with two tokenizers (teacher.tokenizer={value}): "
            "window i must be the same text to both, so the text is cut by characters; "
            "set dataset.windows=characters (or leave it to its default)."
        )
    if cfg.soft_labels.mode not in MODES:
        raise UserError(
            f"soft_labels.mode={cfg.soft_labels.mode} with two tokenizers (teacher.tokenizer="
            f"{value}): the teacher's outputs are paired with the student's tokens sample by "
            "sample, on text both read; use soft_labels.mode=static (stored) or online."
        )


def _loss_name(loss: DictConfig) -> str:
    kind = loss.get("kind")
    return str(kind) if kind else str(loss.get("_target_", "?")).rsplit(".", 1)[-1]


def paired_sources(source: Any, cfg: DictConfig) -> tuple[Any, Any | None]:
    """The data source as the student reads it, and as the teacher reads it when its tokenizer
    is another (else None): sample i the same text in both."""
    own = teacher_tokenizer(cfg)
    if own is None:
        return source, None
    if not hasattr(source, "with_tokenizer"):
        raise UserError(
            f"teacher.tokenizer={own}: dataset {cfg.dataset.get('name', '')} is not text; "
            "two tokenizers need text data (task=lm or task=instruct)."
        )
    student = source.with_tokenizer(cfg.dataset.get("tokenizer"))
    return student, source.with_tokenizer(data_tokenizer(own))
