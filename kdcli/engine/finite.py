"""Which term of a training step went non-finite first, for the loop's NaN message.

`FiniteWatch` keeps, per step and on the device, the sums of the teacher's knowledge, the
student's logits, the loss and its named terms. The loop reads them only when its logged loss
is not finite, so the normal path has no extra host sync.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from kdcli.errors import RunError
from kdcli.losses import DistillationLoss, Features, WeightedSum


class FiniteWatch:
    """Whether the loss's inputs and terms were finite at each step since the last log point.

    Per step it keeps one small tensor on the device (no host sync): the sums of the teacher's
    soft labels (and features) and of the student's logits, the loss and its named terms. A
    sum is finite exactly when its tensor is (short of values near 1e36, which a float32 sum
    overflows: broken either way). They are read only when the logged loss is not finite, to
    name the first step and the first thing that went non-finite in it: the teacher's soft
    labels (the loss's input), the student's logits (its forward pass), or the loss itself.
    """

    def __init__(
        self, label: str, loss_fn: DistillationLoss, lr: float | None, precision: str = "fp32"
    ) -> None:
        self.label, self.loss_fn, self.lr, self.precision = label, loss_fn, lr, precision
        self.key = "student" if label == "baseline" else label  # the config key of the stage
        self.rows: list[tuple[int, int, list[str], torch.Tensor]] = []

    def record(
        self,
        step: int,
        steps: int,
        teacher_logits: torch.Tensor | None,
        features: Features | None,
        logits: torch.Tensor,
        loss: torch.Tensor,
    ) -> None:
        teacher = [] if teacher_logits is None else [teacher_logits]
        teacher += list(features.teacher.values()) if features is not None else []
        terms = self.loss_fn.last_terms
        names = ["teacher"] * len(teacher) + ["logits", "loss", *terms]
        with torch.no_grad():
            values = [t.sum(dtype=torch.float32) for t in [*teacher, logits]]
            self.rows.append((step, steps, names, torch.stack([*values, loss, *terms.values()])))

    def diagnose(self, epoch: int, value: float) -> RunError:
        where = f"the {self.label} loss became {value} in epoch {epoch + 1}"
        for step, steps, names, values in self.rows:
            finite = torch.isfinite(values).tolist()
            bad = [name for name, ok in zip(names, finite, strict=True) if not ok]
            if bad:
                where = f"{where}, step {step + 1} of {steps}"
                return RunError(f"{where}: {self._cause(bad)}")
        return RunError(  # e.g. it went wrong on another process
            f"{where}; lower the learning rate ({self.key}.optimizer.lr) or check the loss "
            "settings."
        )

    def _cause(self, bad: list[str]) -> str:
        lr = self.lr
        lower_lr = f"{self.key}.optimizer.lr" + (f" (now {lr})" if lr is not None else "")
        if "teacher" in bad:
            return (
                "the teacher's soft labels (or features) for that batch hold NaN or inf, so "
                "the teacher is at fault, not the student: retrain the teacher (e.g. "
                "teacher.epochs, teacher.optimizer.lr) or check teacher.checkpoint."
            )
        if "logits" in bad:
            precision = (
                f", or train in fp32 (precision=fp32; this stage ran in {self.precision})"
                if self.precision != "fp32"
                else ""
            )
            return (
                f"the {self.label}'s logits went non-finite on finite inputs: its training "
                f"diverged. Lower {lower_lr}{precision}."
            )
        if not self.loss_fn.needs_teacher:
            return f"the cross-entropy went non-finite on finite logits; lower {lower_lr}."
        terms = [name for name in bad if name != "loss"]
        if terms and isinstance(self.loss_fn, WeightedSum):  # the loss that names its terms
            settings = "; ".join(
                _settings(self.loss_fn.terms[name], f"loss.terms.{name}.loss.")
                + f", loss.terms.{name}.weight={self.loss_fn.weights[name]}"
                for name in terms
            )
            return (
                f"the loss term(s) {', '.join(terms)} went non-finite on finite logits; check "
                f"their settings ({settings})."
            )
        return (
            f"the loss went non-finite on finite logits; check its settings "
            f"({_settings(self.loss_fn, 'loss.')})."
        )


def _settings(loss_fn: nn.Module, prefix: str) -> str:
    """A loss's number settings as config keys, e.g. "loss.alpha=0.9, loss.temperature=0"."""
    names = inspect.signature(type(loss_fn)).parameters
    values = {name: getattr(loss_fn, name, None) for name in names}
    return ", ".join(
        f"{prefix}{name}={value}"
        for name, value in values.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    )
