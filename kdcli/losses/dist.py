"""DIST (Huang et al. 2022, "Knowledge Distillation from A Stronger Teacher").

Instead of matching probabilities exactly, the student matches their relations, measured by
Pearson correlation of the probability matrices Y_s, Y_t ([B, C], softmax at temperature T):

    inter = 1 - mean over samples i of  pearson(Y_s[i, :], Y_t[i, :])   (class ranking per sample)
    intra = 1 - mean over classes j of  pearson(Y_s[:, j], Y_t[:, j])   (sample ranking per class)
    loss  = ce_weight * CE + T^2 * (beta * inter + gamma * intra)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kdcli.losses.base import DistillationLoss


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Pearson correlation of each row of `a` with the same row of `b`, [rows]."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_parts(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra) relation losses, each 1 - mean Pearson correlation, before T^2."""
    student = F.softmax(student_logits.float() / temperature, dim=1)
    teacher = F.softmax(teacher_logits.float() / temperature, dim=1)
    inter = 1.0 - pearson_rows(student, teacher).mean()
    intra = 1.0 - pearson_rows(student.t(), teacher.t()).mean()
    return inter, intra


class DIST(DistillationLoss):
    """`loss=dist`. Defaults as the paper's ImageNet runs: beta = gamma = 1, T = 1."""

    def __init__(
        self,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 1.0,
        ce_weight: float = 1.0,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.beta = beta
        self.gamma = gamma
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.set_schedule(schedule)

    def forward(self, student_logits, teacher_logits, targets, features=None):
        inter, intra = dist_parts(student_logits, teacher_logits, self.temperature)
        hard = F.cross_entropy(student_logits.float(), targets)
        relations = self.beta * inter + self.gamma * intra
        return self.ce_weight * hard + self.temperature**2 * relations
