"""Feature losses: the student imitates the teacher's intermediate outputs at named layers.

Layers are module paths (`layer2`, `stage2`, `layer3.1.conv2`); `kd list teacher --layers
NAME` and `kd list student --layers NAME` show what a model offers. When the student's and
the teacher's maps differ in height and width, the larger one is average-pooled to the
smaller size before they are compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdcli.errors import UserError
from kdcli.losses.base import DistillationLoss, Features


def same_spatial_size(
    student: torch.Tensor, teacher: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pool the larger of two [B, C, H, W] maps down to the other's H x W (2-D inputs pass)."""
    if student.dim() != 4 or student.shape[-2:] == teacher.shape[-2:]:
        return student, teacher
    size = (
        min(student.shape[-2], teacher.shape[-2]),
        min(student.shape[-1], teacher.shape[-1]),
    )
    return F.adaptive_avg_pool2d(student, size), F.adaptive_avg_pool2d(teacher, size)


def hint_regressor(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> nn.Module:
    """The learned adapter from the student's channels to the teacher's: a 1x1 convolution
    for [C, H, W] maps, a linear layer for [D] vectors."""
    if len(student_shape) == 3 and len(teacher_shape) == 3:
        return nn.Conv2d(student_shape[0], teacher_shape[0], kernel_size=1, bias=False)
    if len(student_shape) == 1 and len(teacher_shape) == 1:
        return nn.Linear(student_shape[0], teacher_shape[0], bias=False)
    raise UserError(
        f"loss.student_layer / loss.teacher_layer: FitNet compares two [C, H, W] maps or two "
        f"[D] vectors, got per-sample shapes {student_shape} and {teacher_shape}; pick layers "
        "of the same kind (`kd list student --layers NAME` shows the shapes)."
    )


class FitNet(DistillationLoss):
    """`loss=fitnet` (Romero et al. 2015, "FitNets: Hints for Thin Deep Nets").

        loss = ce_weight * CE + beta * mean((r(f_s) - f_t)^2)

    where f_s, f_t are the outputs of `student_layer` and `teacher_layer` and r the learned
    regressor (`build` sizes it from the tapped shapes; the optimizer trains it with the
    student). This is the one-stage variant used by modern benchmarks (hint and task loss
    trained together), not the paper's two-stage schedule. Those benchmarks use beta = 100
    with wide CIFAR layers; the default here is 1, which small models train stably with.
    """

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        beta: float = 1.0,
        ce_weight: float = 1.0,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.student_layers = (student_layer,)
        self.teacher_layers = (teacher_layer,)
        self.beta = beta
        self.ce_weight = ce_weight
        self.regressor: nn.Module | None = None
        self.set_schedule(schedule)

    def build(self, student_shapes, teacher_shapes) -> None:
        self.regressor = hint_regressor(
            student_shapes[self.student_layers[0]], teacher_shapes[self.teacher_layers[0]]
        )

    def forward(self, student_logits, teacher_logits, targets, features: Features | None = None):
        if self.regressor is None or features is None:
            raise RuntimeError("FitNet needs build() before training and the tapped features")
        student = self.regressor(features.student[self.student_layers[0]].float())
        teacher = features.teacher[self.teacher_layers[0]].float()
        student, teacher = same_spatial_size(student, teacher)
        hint = F.mse_loss(student, teacher)
        return self.ce_weight * F.cross_entropy(student_logits.float(), targets) + self.beta * hint


def attention_map(feature: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """Spatial attention of a [B, C, H, W] map: mean over channels of |f|^p, flattened and
    L2-normalised per sample, [B, H * W]."""
    return F.normalize(feature.float().abs().pow(p).mean(dim=1).flatten(1), dim=1)


class AttentionTransfer(DistillationLoss):
    """`loss=at` (Zagoruyko & Komodakis 2017, "Paying More Attention to Attention").

        loss = ce_weight * CE + beta / 2 * sum over layer pairs j of mean((Q_s^j - Q_t^j)^2)

    with Q the normalised attention maps (`attention_map`, p = 2) and the mean over batch and
    positions, as in the authors' code. Their beta = 1000 is for 32x32 maps; because of the
    mean over positions, smaller maps need a smaller beta (the default here is 10).
    """

    def __init__(
        self,
        student_layers: Sequence[str],
        teacher_layers: Sequence[str],
        beta: float = 10.0,
        p: float = 2.0,
        ce_weight: float = 1.0,
        schedule: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(student_layers, str) or isinstance(teacher_layers, str):
            raise UserError("loss.student_layers and loss.teacher_layers must be lists: [a, b].")
        if len(student_layers) != len(teacher_layers) or not student_layers:
            raise UserError(
                f"loss.student_layers ({len(student_layers)}) and loss.teacher_layers "
                f"({len(teacher_layers)}) must name the same number (>= 1) of layers: pair j "
                "of the student is compared with pair j of the teacher."
            )
        self.student_layers = tuple(student_layers)
        self.teacher_layers = tuple(teacher_layers)
        self.beta = beta
        self.p = p
        self.ce_weight = ce_weight
        self.set_schedule(schedule)

    def build(self, student_shapes, teacher_shapes) -> None:
        for s_path, t_path in zip(self.student_layers, self.teacher_layers, strict=True):
            if len(student_shapes[s_path]) != 3 or len(teacher_shapes[t_path]) != 3:
                raise UserError(
                    f"loss.student_layers / loss.teacher_layers: attention transfer needs "
                    f"[C, H, W] maps, but {s_path} gives {student_shapes[s_path]} and "
                    f"{t_path} gives {teacher_shapes[t_path]} per sample."
                )

    def forward(self, student_logits, teacher_logits, targets, features: Features | None = None):
        if features is None:
            raise RuntimeError("AttentionTransfer needs the tapped features")
        total = student_logits.new_zeros((), dtype=torch.float32)
        for s_path, t_path in zip(self.student_layers, self.teacher_layers, strict=True):
            student, teacher = same_spatial_size(
                features.student[s_path].float(), features.teacher[t_path].float()
            )
            diff = attention_map(student, self.p) - attention_map(teacher, self.p)
            total = total + diff.pow(2).mean()
        hard = F.cross_entropy(student_logits.float(), targets)
        return self.ce_weight * hard + self.beta / 2 * total
