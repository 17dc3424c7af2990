"""Logit losses: plain cross-entropy, soft-target KD (optionally on standardised logits) and
hard distillation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kdcli.losses.base import DistillationLoss


class CrossEntropy(DistillationLoss):
    """`loss=ce`: the student learns from the labels alone (the baseline)."""

    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, student_logits, teacher_logits, targets, features=None):
        return F.cross_entropy(
            student_logits.float(), targets, label_smoothing=self.label_smoothing
        )


def standardize(logits: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Z-score each sample's logits: (z - mean) / std over the classes (Sun et al. 2024).

    The std is the population one, sqrt(mean((z - mean)^2)), as in the paper's equation."""
    logits = logits.float()
    mean = logits.mean(dim=1, keepdim=True)
    std = logits.std(dim=1, keepdim=True, correction=0)
    return (logits - mean) / (std + eps)


def soft_target_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (Hinton et al. 2015)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class SoftTargetKD(DistillationLoss):
    """`loss=kd`: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y).

    `loss=kd_ls` is the same loss with `standardize=True`: both logit vectors are z-scored per
    sample before the temperature (logit standardisation, Sun et al. 2024), so the student
    matches the teacher's logit relations, not their scale; `temperature` is then the base
    temperature of the paper.
    """

    def __init__(
        self,
        alpha: float = 0.9,
        temperature: float = 4.0,
        standardize: bool = False,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature
        self.standardize = standardize
        self.set_schedule(schedule)

    def forward(self, student_logits, teacher_logits, targets, features=None):
        student, teacher = student_logits, teacher_logits
        if self.standardize:
            student, teacher = standardize(student), standardize(teacher)
        distill = soft_target_kl(student, teacher, self.temperature)
        if self.alpha == 1.0:
            return distill
        hard = F.cross_entropy(student_logits.float(), targets)
        return self.alpha * distill + (1.0 - self.alpha) * hard


class HardDistillation(DistillationLoss):
    """`loss=hard`: cross-entropy against the teacher's argmax instead of the label."""

    def forward(self, student_logits, teacher_logits, targets, features=None):
        return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=1))
