"""A learning-rate schedule torch does not ship as one class: linear warm-up, then cosine.

`WarmupCosine` is the teachers' default (configs/scheduler/warmup_cosine.yaml). Deep networks
with batch norm (torchvision's ResNet-50 and -101 on digits, for one) diverge in their first
steps at a learning rate that trains them well once their weights and batch statistics have
settled: at SGD lr 0.02 from the first step, ResNet-50's training loss climbs to 11 in its first
epoch. Raising the rate step by step over the first epochs lets the rest of the schedule use it.
The warm-up is per batch: a staircase that holds a low rate for one epoch and then jumps to the
full rate diverges the same way.
"""

from __future__ import annotations

import math

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler


def warmup_cosine_factor(step: int, total_steps: int, warmup_steps: int) -> float:
    """The multiple of the base learning rate used at `step` (0-based) of `total_steps`:
    (step + 1) / warmup_steps during the warm-up, then cosine decay towards zero."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine(LRScheduler):
    """Linear warm-up over `warmup_epochs`, then cosine decay to zero at the end of `epochs`.

    Stepped after every batch (`per_batch`): the training loop builds it with its number of
    batches per epoch, `steps_per_epoch`.
    """

    per_batch = True

    def __init__(
        self,
        optimizer: Optimizer,
        epochs: int,
        warmup_epochs: float = 2,
        steps_per_epoch: int = 1,
        last_epoch: int = -1,
    ) -> None:
        # config/values.py checks epochs and warmup_epochs on a config; kept for Python callers,
        # whose rate would otherwise drop to zero after one step (epochs < 1) or start part-way
        # down the cosine (a negative warm-up) without a word
        if epochs < 1 or steps_per_epoch < 1 or warmup_epochs < 0:
            raise ValueError(
                f"WarmupCosine needs epochs >= 1 (got {epochs}), steps_per_epoch >= 1 "
                f"(got {steps_per_epoch}) and warmup_epochs >= 0 (got {warmup_epochs})"
            )
        self.total_steps = int(epochs * steps_per_epoch)
        self.warmup_steps = min(round(warmup_epochs * steps_per_epoch), self.total_steps)
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float | Tensor]:
        factor = warmup_cosine_factor(self.last_epoch, self.total_steps, self.warmup_steps)
        return [base_lr * factor for base_lr in self.base_lrs]
