"""Image classification: logits [B, K], top-1 accuracy and NLL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from kdcli.data import DatasetInfo
from kdcli.tasks import Row


class Classify:
    """One label per image; the model's output is a row of class logits."""

    metric = "top1"
    metric_label = "top-1"
    score_name = "top1"
    score_label = "top-1"

    def output_shape(self, info: DatasetInfo) -> tuple[int, ...]:
        return (info.num_classes,)

    def flatten(
        self, logits: torch.Tensor, teacher: torch.Tensor | None, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        return logits, teacher, targets  # already [B, K] and [B]

    def score(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return (logits.argmax(1) == targets).sum()

    def count(self, targets: torch.Tensor) -> int:
        return targets.shape[0]

    def metrics(self, logits: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
        acc = accuracy(logits, targets)
        ece = expected_calibration_error(logits, targets)
        return {"top1": acc.top1, "nll": acc.nll, "ece": ece}

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per image: whether the prediction is right (for paired tests between models)."""
        return logits.argmax(1) == targets

    def agreement(
        self, logits: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor
    ) -> float:
        return agreement(logits, reference)

    def sample(self, model: torch.nn.Module, data: object, seed: int) -> None:
        return None

    def generation_nll(
        self, model: torch.nn.Module, teacher: torch.nn.Module, data: object, seed: int
    ) -> None:
        return None

    def headline(
        self, model: torch.nn.Module, logits: torch.Tensor, data: Any, split: str
    ) -> float:
        return self.metrics(logits, data.labels(split))[self.metric]

    def answers(
        self, model: torch.nn.Module, teacher: torch.nn.Module | None, data: Any, split: str
    ) -> None:
        return None

    def rows(self) -> tuple[Row, ...]:
        return (
            ("top-1 accuracy", "top1", lambda v: f"{100 * v:.2f}%"),
            ("validation top-1", "val_top1", lambda v: f"{100 * v:.2f}%"),
            ("NLL", "nll", lambda v: f"{v:.4f}"),
            ("calibration error (ECE)", "ece", lambda v: f"{100 * v:.2f}%"),
            ("agreement with teacher", "agreement", lambda v: f"{100 * v:.2f}%"),
            ("KL(teacher || model)", "teacher_kl", lambda v: f"{v:.4f}"),
        )


@dataclass
class Accuracy:
    top1: float
    nll: float


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Accuracy:
    top1 = (logits.argmax(1) == labels).float().mean().item()
    return Accuracy(top1=top1, nll=F.cross_entropy(logits, labels).item())


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor, bins: int = 15) -> float:
    """ECE: how far confidence (the top softmax probability) is from accuracy, on average.

    Samples fall into `bins` equal-width confidence bins, (0, 1/bins], ..., ((bins-1)/bins, 1];
    ECE = sum over bins of (share of samples in the bin) * |accuracy - mean confidence|.
    0 is perfectly calibrated; distillation is known to change it (often for the better).
    """
    confidence, predicted = logits.float().softmax(1).max(1)
    correct = (predicted == labels).float()
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1
    hits = torch.zeros(bins, device=logits.device).index_add_(0, which, correct)
    sure = torch.zeros(bins, device=logits.device).index_add_(0, which, confidence)
    return ((hits - sure).abs().sum() / max(len(labels), 1)).item()


def agreement(logits_a: torch.Tensor, logits_b: torch.Tensor) -> float:
    """The fraction of samples on which two models predict the same class."""
    return (logits_a.argmax(1) == logits_b.argmax(1)).float().mean().item()


TASK = Classify()


def confusion_matrix(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[true class, predicted class] -> count."""
    classes = logits.shape[1]
    counts = torch.zeros(classes, classes, dtype=torch.long)
    ones = torch.ones(len(labels), dtype=torch.long)
    return counts.index_put_((labels.cpu(), logits.argmax(1).cpu()), ones, accumulate=True)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """The share of samples whose label is among the k highest logits."""
    top = logits.topk(min(k, logits.shape[1]), dim=1).indices
    return (top == labels[:, None]).any(1).float().mean().item()
