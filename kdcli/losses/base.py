"""The shape every loss shares, so any loss config drops into the one training loop."""

from __future__ import annotations

import torch
from torch import nn


class DistillationLoss(nn.Module):
    """Base class. `needs_teacher` tells the pipeline whether to produce teacher knowledge.

    The loop calls `start_epoch(epoch, epochs)` before each epoch, so a loss can schedule
    its weights (warm-up, progressive temperature) without the loop knowing about them.
    """

    needs_teacher: bool = True

    def start_epoch(self, epoch: int, epochs: int) -> None:  # noqa: B027 - optional hook
        """Called with the 0-based epoch before it starts. The default does nothing."""

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor | None,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        raise NotImplementedError
