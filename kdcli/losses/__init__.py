"""Losses. Every config in `configs/loss/` instantiates to a `DistillationLoss`:
`loss(student_logits, teacher_logits, targets)` returns the total loss the student trains on."""

from kdcli.losses.base import DistillationLoss
from kdcli.losses.logit import CrossEntropy, HardDistillation, SoftTargetKD

__all__ = ["CrossEntropy", "DistillationLoss", "HardDistillation", "SoftTargetKD"]
