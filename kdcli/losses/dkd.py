"""Decoupled knowledge distillation (Zhao et al. 2022, "Decoupled Knowledge Distillation").

The KD loss splits into a target-class part and a non-target-class part, weighted apart:

    TCKD = T^2 * KL([p_t, 1 - p_t] of the teacher || the same of the student)   (binary)
    NCKD = T^2 * KL(softmax over the non-target classes, teacher || student)
    loss = ce_weight * CE + w(epoch) * (alpha * TCKD + beta * NCKD)

with probabilities at temperature T and `w` DKD's linear warm-up over `warmup` epochs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F

from kdcli.losses.base import DistillationLoss
from kdcli.losses.schedule import Schedule


def binary_log_probs(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """log [p(target), p(not target)] per sample, [B, 2], computed without 1 - p."""
    log_total = torch.logsumexp(logits, dim=1)
    log_target = (logits * target_mask).sum(dim=1) - log_total
    log_other = torch.logsumexp(logits.masked_fill(target_mask, float("-inf")), dim=1) - log_total
    return torch.stack([log_target, log_other], dim=1)


def non_target_logits(logits: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """The logits without each sample's target column, [B, C - 1]."""
    return logits[~target_mask].view(logits.shape[0], logits.shape[1] - 1)


def kl_from_log_probs(log_p_teacher: torch.Tensor, log_p_student: torch.Tensor) -> torch.Tensor:
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def dkd_parts(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(TCKD, NCKD), each scaled by T^2 and averaged over the batch."""
    student = student_logits.float() / temperature
    teacher = teacher_logits.float() / temperature
    mask = F.one_hot(targets, student.shape[1]).bool()
    tckd = kl_from_log_probs(binary_log_probs(teacher, mask), binary_log_probs(student, mask))
    nckd = kl_from_log_probs(
        F.log_softmax(non_target_logits(teacher, mask), dim=1),
        F.log_softmax(non_target_logits(student, mask), dim=1),
    )
    return tckd * temperature**2, nckd * temperature**2


class DecoupledKD(DistillationLoss):
    """`loss=dkd`. Defaults are the paper's CIFAR-100 settings (alpha 1, beta 8, T 4, 20
    warm-up epochs of 240); `warmup=0` turns the warm-up off."""

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup: int = 20,
        ce_weight: float = 1.0,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.alpha = alpha
        self.beta = beta
        self.temperature = temperature
        self.ce_weight = ce_weight
        self.warmup = Schedule("linear", 0.0, 1.0, epochs=warmup) if warmup > 0 else None
        self.warmup_factor = 1.0
        self.set_schedule(schedule)

    def start_epoch(self, epoch: int, epochs: int) -> None:
        super().start_epoch(epoch, epochs)
        self.warmup_factor = self.warmup.at(epoch, epochs) if self.warmup else 1.0

    def forward(self, student_logits, teacher_logits, targets, features=None):
        tckd, nckd = dkd_parts(student_logits, teacher_logits, targets, self.temperature)
        hard = F.cross_entropy(student_logits.float(), targets)
        return self.ce_weight * hard + self.warmup_factor * (self.alpha * tckd + self.beta * nckd)
