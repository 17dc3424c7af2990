"""A weighted sum of losses (`loss=combo`), e.g. CE + KD + FitNet.

    terms:
      kd:     {weight: 1.0, loss: {_target_: kdcli.losses.SoftTargetKD, alpha: 0.9}}
      fitnet: {weight: 1.0, loss: {_target_: kdcli.losses.FitNet, ce_weight: 0.0, ...}}

Each term is a complete loss (its own CE term included), so set the CE weight of all but
one term to zero (`ce_weight: 0`, or `alpha: 1` for KD) to count the labels once. A term
with weight 0 is skipped (e.g. `loss.terms.fitnet.weight=0` in a sweep).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn

from kdcli.errors import UserError
from kdcli.losses.base import DistillationLoss


class WeightedSum(DistillationLoss):
    def __init__(self, terms: Mapping[str, Mapping[str, Any]]) -> None:
        super().__init__()
        if not terms:
            raise UserError("loss.terms is empty; give at least one {weight:, loss:} term.")
        losses, weights = {}, {}
        for name, term in terms.items():
            if not isinstance(term.get("loss"), DistillationLoss) or "weight" not in term:
                raise UserError(
                    f"loss.terms.{name} must be {{weight: <number>, loss: {{_target_: ...}}}} "
                    "with a kdcli loss as its `loss`."
                )
            if float(term["weight"]) != 0.0:
                losses[name], weights[name] = term["loss"], float(term["weight"])
        self.terms = nn.ModuleDict(losses)
        self.weights = weights
        self.needs_teacher = any(loss.needs_teacher for loss in losses.values())
        self.student_layers = _union(loss.student_layers for loss in losses.values())
        self.teacher_layers = _union(loss.teacher_layers for loss in losses.values())

    def term_losses(self) -> dict[str, DistillationLoss]:
        """Each term's loss by name (`terms` holds them; nn.ModuleDict types them nn.Module)."""
        return {name: cast(DistillationLoss, loss) for name, loss in self.terms.items()}

    def start_epoch(self, epoch: int, epochs: int) -> None:
        for loss in self.term_losses().values():
            loss.start_epoch(epoch, epochs)

    def build(self, student_shapes, teacher_shapes) -> None:
        for loss in self.term_losses().values():
            loss.build(student_shapes, teacher_shapes)

    def forward(self, student_logits, teacher_logits, targets, features=None):
        total = torch.zeros((), device=student_logits.device)
        for name, loss in self.term_losses().items():
            term = loss(student_logits, teacher_logits, targets, features)
            self.last_terms[name] = term.detach()
            total = total + self.weights[name] * term
        return total


def _union(groups) -> tuple[str, ...]:
    """Paths in first-seen order, without repeats."""
    return tuple(dict.fromkeys(path for group in groups for path in group))
