"""The shape every loss shares, so any loss config drops into the one training loop.

    loss(student_logits, teacher_logits, targets, features=None) -> scalar total loss

Logit losses ignore `features`. A feature loss names the layers it needs in
`student_layers` / `teacher_layers` (module paths); the loop taps them and passes
`Features(student={path: tensor}, teacher={path: tensor})`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdcli.errors import UserError
from kdcli.losses.schedule import Schedule

SCHEDULE_FIELDS = {"kind", "start", "end", "epochs"}


@dataclass
class Features:
    """The tapped intermediate outputs of one batch, by module path."""

    student: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher: dict[str, torch.Tensor] = field(default_factory=dict)


class DistillationLoss(nn.Module):
    """Base class. `needs_teacher` tells the pipeline whether to produce teacher knowledge.

    The loop calls `start_epoch(epoch, epochs)` before each epoch. The base class uses it to
    apply `schedule`, a mapping from a parameter name (`alpha`, `temperature`, ...) to a
    `Schedule`'s fields: the loss's attribute of that name takes the schedule's value.
    """

    needs_teacher: bool = True
    student_layers: tuple[str, ...] = ()
    teacher_layers: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.schedules: dict[str, Schedule] = {}
        # the named parts of the last value, detached (a combo loss fills it): the loop names
        # the one that went non-finite when the loss does
        self.last_terms: dict[str, torch.Tensor] = {}

    def set_schedule(self, schedule: Mapping[str, Any] | None) -> None:
        """Take `schedule` ({name: Schedule fields}); subclasses call this last in __init__,
        once their parameters exist."""
        for name, spec in (schedule or {}).items():
            if spec is None:
                continue
            if isinstance(getattr(self, name, None), bool) or not isinstance(
                getattr(self, name, None), (int, float)
            ):
                raise UserError(
                    f"loss.schedule.{name}: {type(self).__name__} has no number parameter "
                    f"'{name}' to schedule; schedule one of its parameters, e.g. alpha."
                )
            if not isinstance(spec, Mapping) or set(spec) - SCHEDULE_FIELDS:
                raise UserError(
                    f"loss.schedule.{name}={spec!r}: a schedule is a mapping with the fields "
                    f"{', '.join(sorted(SCHEDULE_FIELDS))}, e.g. "
                    "{kind: linear, start: 0.1, end: 0.9}."
                )
            self.schedules[name] = Schedule(**spec)

    @property
    def uses_features(self) -> bool:
        return bool(self.student_layers or self.teacher_layers)

    @property
    def on_policy(self) -> bool:
        """Whether the student writes some of its training batches itself (on-policy
        distillation: the token losses' `lmbda`); the pipeline then rewrites that share."""
        return False

    def on_policy_share(self) -> float:
        """The share of this epoch's batches that the student writes (as a schedule sets it)."""
        return 0.0

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Called with the 0-based epoch before it starts: sets the scheduled parameters."""
        for name, schedule in self.schedules.items():
            setattr(self, name, schedule.at(epoch, epochs))

    def build(
        self,
        student_shapes: dict[str, tuple[int, ...]],
        teacher_shapes: dict[str, tuple[int, ...]],
    ) -> None:  # noqa: B027 - optional hook
        """Called once before training with the per-sample shapes of the tapped layers, so a
        loss can size its learned adapters (their parameters then join the optimizer)."""

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        targets: torch.Tensor,
        features: Features | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError
