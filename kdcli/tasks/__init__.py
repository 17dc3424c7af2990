"""Tasks: what a model's outputs mean. The loop, the soft-label store and the report ask the
task; nothing else assumes a shape of the logits or a metric.

A task flattens outputs and targets into the one call shape of the losses
(`loss(student_logits, teacher_logits, targets)`), counts its training score per batch
without a host sync, computes its metrics on a split, and names the report's rows for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from kdcli.data import DatasetInfo

Row = tuple[str, str, Callable[[float], str]]
"""(label, report key, formatter) of one report row."""


@dataclass
class Answers:
    """A model's answers to a split's prompts, and how they score (kdcli/tasks/instruct.py)."""

    prompts: list[str]
    references: list[str]
    texts: list[str]
    scores: np.ndarray  # per prompt: the headline (exact match 0/1, or ROUGE-L), paired
    figures: dict[str, float]  # exact_match, rouge_l, and with a teacher generation_nll


class Task(Protocol):
    metric: str  # the headline metric's report key (higher is better), e.g. "top1"
    metric_label: str  # how people write it, e.g. "top-1"
    score_name: str  # what `score` counts in training, e.g. "top1" (per-epoch `train_<it>`)
    score_label: str  # how people write it

    def output_shape(self, info: DatasetInfo) -> tuple[int, ...]:
        """The per-sample shape of the model's output (what soft labels store per sample)."""
        ...

    def flatten(
        self, logits: torch.Tensor, teacher: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Student logits, teacher logits and targets in the losses' call shape."""
        ...

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's summed training score (a device tensor: no host sync)."""
        ...

    def count(self, targets: torch.Tensor) -> int | torch.Tensor:
        """How many scored items the batch holds (a tensor where counting them on the device
        saves a host sync)."""
        ...

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        """The report's figures for a split (the headline `metric` among them)."""
        ...

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per item: whether the prediction is right (paired comparisons of two models)."""
        ...

    def agreement(
        self, logits: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor
    ) -> float:
        """How often two models' predictions agree (on the items `targets` counts)."""
        ...

    def sample(self, model: torch.nn.Module, data: object, seed: int) -> tuple[str, str] | None:
        """(prompt, continuation): what the model writes after a fixed test prompt, for people
        to read (text), or None where a sample says nothing the metrics do not (images)."""
        ...

    def generation_nll(
        self, model: torch.nn.Module, teacher: torch.nn.Module, data: object, seed: int
    ) -> float | None:
        """How unlikely the teacher finds text the model writes (its NLL per token of the
        model's own continuations; text), or None (images)."""
        ...

    def headline(
        self, model: torch.nn.Module, logits: torch.Tensor, data: Any, split: str
    ) -> float:
        """The headline metric of `model` on `split`, whose outputs are `logits` (most tasks
        read it off them; a task judged on what the model writes generates)."""
        ...

    def answers(
        self, model: torch.nn.Module, teacher: torch.nn.Module | None, data: Any, split: str
    ) -> Answers | None:
        """The model's answers to `split`'s prompts, scored (instruction following), or
        None where the task has no prompts to answer."""
        ...

    def rows(self) -> tuple[Row, ...]:
        """The report rows of the task's figures."""
        ...


def teacher_kl(logits: torch.Tensor, teacher: torch.Tensor, chunk: int = 4096) -> float:
    """Mean KL(teacher || model) over the rows of [N, V] logits (nats per sample or token):
    how far the model's distribution is from the teacher's, the quantity soft-label KD
    minimises. Computed `chunk` rows at a time, in fp32, so a large vocabulary never needs
    [N, V] fp32 copies of both."""
    total = 0.0
    for start in range(0, logits.shape[0], chunk):
        model_part = F.log_softmax(logits[start : start + chunk].float(), dim=-1)
        teacher_part = F.log_softmax(teacher[start : start + chunk].float(), dim=-1)
        total += F.kl_div(model_part, teacher_part, log_target=True, reduction="sum").item()
    return total / max(logits.shape[0], 1)
