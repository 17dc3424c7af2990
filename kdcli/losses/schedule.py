"""Schedules for a loss parameter over epochs ("progressive distillation").

A schedule moves a parameter from `start` to `end` over the first `epochs` epochs (the whole
run when `epochs` is None) and holds `end` afterwards. The value used in 0-based epoch `e` is
the schedule at progress `p = min(1, (e + 1) / epochs)`, i.e. where the ramp stands at the end
of that epoch; with `epochs=W` this is DKD's warm-up factor `min(epoch / W, 1)` (epochs counted
from 1), which is how `DecoupledKD` uses it.

    constant  start (end is ignored)
    linear    start + (end - start) * p
    cosine    start + (end - start) * (1 - cos(pi * p)) / 2     slow, fast, slow
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kdcli.errors import UserError

KINDS = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class Schedule:
    kind: str = "constant"
    start: float = 0.0
    end: float | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(
                f"schedule kind {self.kind!r} is unknown; use one of {', '.join(KINDS)} "
                "(e.g. {kind: linear, start: 0.1, end: 0.9})."
            )

    def at(self, epoch: int, total_epochs: int) -> float:
        """The value for 0-based `epoch` of a run of `total_epochs`."""
        end = self.start if self.end is None else self.end
        if self.kind == "constant":
            return float(self.start)
        span = self.epochs if self.epochs is not None else total_epochs
        progress = min(1.0, (epoch + 1) / max(span, 1))
        if self.kind == "cosine":
            progress = (1.0 - math.cos(math.pi * progress)) / 2.0
        return float(self.start + (end - self.start) * progress)
