"""Logit losses from the pipeline: plain cross-entropy, soft-target KD and hard distillation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdcli.losses.base import DistillationLoss


class CrossEntropy(DistillationLoss):
    """`loss=ce`: the student learns from the labels alone (the baseline)."""

    needs_teacher = False

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, student_logits, teacher_logits, targets):
        return F.cross_entropy(
            student_logits.float(), targets, label_smoothing=self.label_smoothing
        )


def soft_target_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch (Hinton et al. 2015)."""
    log_p_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


class SoftTargetKD(DistillationLoss):
    """`loss=kd`: alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, y)."""

    def __init__(self, alpha: float = 0.9, temperature: float = 4.0) -> None:
        super().__init__()
        self.alpha = alpha
        self.temperature = temperature

    def forward(self, student_logits, teacher_logits, targets):
        distill = soft_target_kl(student_logits, teacher_logits, self.temperature)
        if self.alpha == 1.0:
            return distill
        hard = F.cross_entropy(student_logits.float(), targets)
        return self.alpha * distill + (1.0 - self.alpha) * hard


class HardDistillation(DistillationLoss):
    """`loss=hard`: cross-entropy against the teacher's argmax instead of the label."""

    def forward(self, student_logits, teacher_logits, targets):
        return F.cross_entropy(student_logits.float(), teacher_logits.argmax(dim=1))
