"""The teacher's knowledge when its tokenizer is not the student's (`teacher.tokenizer`,
`loss=uld`).

The data holds each training sample twice, tokenized by each tokenizer, at the same index
(kdcli/data/text.py, kdcli/data/instruct.py `with_tokenizer`). `CrossTokenizerKnowledge`
runs the teacher's knowledge source (stored soft labels or the online teacher) on the
teacher's ids of the student's batch, then lays its rows out on the student's positions as
the ULD paper does: the i-th counted token of a sample (target not -100: an answer's tokens,
or every token of a text window) is paired with the teacher's i-th counted token, and the
longer sequence is cut to the shorter. A student position with no teacher token gets a row of
-inf (log 0: no distribution), which `loss=uld` leaves out of its distillation term.
"""

from __future__ import annotations

import torch

from kdcli.data import Batch, Dataset
from kdcli.data.memory import Split
from kdcli.engine.loop import KnowledgeSource, TeacherOutputs

IGNORE = -100


def align_rows(
    teacher: torch.Tensor, teacher_targets: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """Teacher rows [B, Tt, Vt] (whose counted positions `teacher_targets` [B, Tt] marks) laid
    out on the student's positions [B, Ts]: [B, Ts, Vt], the student's i-th counted position
    holding the teacher's i-th counted row, -inf where there is none."""
    counted_t, counted_s = teacher_targets != IGNORE, targets != IGNORE
    # the teacher's counted positions first, in order (a stable sort of "not counted")
    positions = torch.argsort((~counted_t).to(torch.int8), dim=1, stable=True)
    rank = counted_s.long().cumsum(1) - 1  # the student's i-th counted position has rank i
    available = counted_t.sum(1, keepdim=True)
    paired = counted_s & (rank < available)
    source = positions.gather(1, rank.clamp(0, teacher.shape[1] - 1))
    rows = teacher.gather(1, source.unsqueeze(-1).expand(-1, -1, teacher.shape[-1]))
    return rows.masked_fill(~paired.unsqueeze(-1), float("-inf"))


class CrossTokenizerKnowledge:
    """`inner` (the teacher's knowledge over its own tokenization of the training split,
    `teacher_train`) as the student's batches need it: its rows aligned to theirs."""

    def __init__(self, inner: KnowledgeSource, teacher_train: Split) -> None:
        self.inner = inner
        self.teacher_train = teacher_train
        self.train_data: Dataset | None = None  # the student trains on the run's own data

    def __call__(self, epoch: int, batch: Batch) -> TeacherOutputs:
        index = batch.index.to(self.teacher_train.images.device)
        x, y = self.teacher_train.images[index], self.teacher_train.labels[index]
        taught = self.inner(epoch, Batch(x, y, batch.index))
        logits = taught.logits.to(batch.y.device)
        return TeacherOutputs(align_rows(logits, y.to(batch.y.device), batch.y))
