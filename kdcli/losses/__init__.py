"""Losses. Every config in `configs/loss/` instantiates to a `DistillationLoss`:
`loss(student_logits, teacher_logits, targets, features=None)` returns the total loss the
student trains on; feature losses read the tapped layers from `features`."""

from kdcli.losses.base import DistillationLoss, Features
from kdcli.losses.combo import WeightedSum
from kdcli.losses.dist import DIST
from kdcli.losses.dkd import DecoupledKD
from kdcli.losses.feature import AttentionTransfer, FitNet
from kdcli.losses.logit import CrossEntropy, HardDistillation, SoftTargetKD
from kdcli.losses.schedule import Schedule
from kdcli.losses.uld import UniversalLogitDistillation

__all__ = [
    "DIST",
    "AttentionTransfer",
    "CrossEntropy",
    "DecoupledKD",
    "DistillationLoss",
    "Features",
    "FitNet",
    "HardDistillation",
    "Schedule",
    "SoftTargetKD",
    "UniversalLogitDistillation",
    "WeightedSum",
]
