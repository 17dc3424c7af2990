"""Hugging Face sequence classifiers from local directories (`teacher=hf_classifier
teacher.path=DIR`, `student=hf_classifier student.path=DIR`), with the optional extra
`kdcli[hf]` (transformers): `AutoModelForSequenceClassification`, read as the causal LMs are
(kdcli/models/lm/hf.py): nothing downloaded (`local_files_only`, `HF_HUB_OFFLINE=1`), no code
from the directory (`trust_remote_code=False`).

The model gets the dataset's classes: a directory whose classification head has another
number of classes (or none, a pretrained encoder) gets a new head, and the log says so; the
model is then fine-tuned like any teacher. Its attention mask is the data's padding id. The
data must be cut into the model's tokens: `dataset.tokenizer` defaults to `teacher.path`, and
kdcli/models/lm/hf.py's `check_shared_tokenizer` compares the vocabularies before any training.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdcli.data.tokenizer import transformers_module
from kdcli.errors import UserError
from kdcli.models.lm.hf import _directory, check_positions, from_directory

if TYPE_CHECKING:  # the optional extra: imported where a model is loaded
    from transformers import PreTrainedModel

log = logging.getLogger(__name__)


class SequenceClassifier(nn.Module):
    """A transformers sequence classifier as a kdcli model: token ids [B, T] -> class logits
    [B, K], the positions holding the `padding` id masked."""

    padded_rows = 0  # the vocabulary is the tokenizer's (check_shared_tokenizer)

    def __init__(self, model: PreTrainedModel, vocabulary: int, padding: int, path: Path) -> None:
        super().__init__()
        self.model = model
        self.vocabulary = vocabulary
        self.padding = padding
        self.path = path

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        mask = (tokens != self.padding).long()
        return self.model(input_ids=tokens, attention_mask=mask).logits


def hf_classifier(
    path: str,
    num_classes: int,
    in_channels: int = 1,
    image_size: int = 128,
    vocabulary: int = 0,
    padding: int = 0,
    stamp: str | None = None,
) -> SequenceClassifier:
    """The sequence classifier saved in `path`, for `num_classes` classes, texts of
    `image_size` token ids below `vocabulary`, filled up with `padding`. `stamp` only keys the
    cache (the weights' identity, kdcli.config.resolvers)."""
    directory = _directory(path, "path")
    transformers = transformers_module()
    model, loading = from_directory(
        transformers.AutoModelForSequenceClassification,
        directory,
        path,
        "sequence classifier",
        num_labels=num_classes,
        ignore_mismatched_sizes=True,
        output_loading_info=True,
    )
    rows = model.get_input_embeddings().weight.shape[0]
    if rows < vocabulary:
        raise UserError(
            f"path={path}: the model reads {rows} token ids, fewer than the {vocabulary} of the "
            "data's tokenizer (dataset.tokenizer); use the model's own tokenizer."
        )
    check_positions(model.config, path, image_size, "dataset.max_length")
    if model.config.pad_token_id is None:  # GPT-2's head finds each text's last token by it
        model.config.pad_token_id = padding
    new = sorted({*loading.get("missing_keys", ()), *_names(loading.get("mismatched_keys", ()))})
    if new:
        log.info(
            "%s: a new classification head for %d classes (%s)", path, num_classes, ", ".join(new)
        )
    return SequenceClassifier(model, vocabulary, padding, directory)


def _names(mismatched: Iterable[Any]) -> list[str]:
    """The parameter names of transformers' `mismatched_keys` ((name, shapes...) or names)."""
    return [str(m[0]) if isinstance(m, tuple | list) else str(m) for m in mismatched]
