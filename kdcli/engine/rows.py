"""What the loss of one batch counts: the rows it learns from and how many items it averages
over (kdcli/engine/loop.py weighs accumulated batches by the latter)."""

from __future__ import annotations

import torch

from kdcli.data import Batch
from kdcli.tasks.lm import IGNORE


def learned_rows(
    rows: torch.Tensor, teacher_rows: torch.Tensor | None, labels: torch.Tensor, labelled: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """What the loss gets of a batch: its rows, the teacher's, and the targets. Text the
    student wrote itself (not `labelled`) has no targets to learn, only the teacher's
    distributions, on the rows that count (an answer's, in instruction data)."""
    if labelled:
        return rows, teacher_rows, labels
    counted = labels != IGNORE
    if teacher_rows is not None and not bool(counted.all()):
        rows, teacher_rows = rows[counted], teacher_rows[counted]
    return rows, teacher_rows, None


def counted_items(batch: Batch) -> torch.Tensor:
    """How many rows of `batch` its loss averages over (a device tensor: no host sync): those
    whose target is not -100 (every image; a token that is not masked, e.g. an answer's), in
    text the student wrote itself too (its loss learns the teacher on those rows alone)."""
    return (batch.y != IGNORE).sum()
