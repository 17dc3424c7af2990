"""The teacher's rows laid out on the student's tokens across two tokenizers
(kdcli/knowledge/align.py): the i-th counted student token gets the teacher's i-th counted
row, the longer side cut to the shorter, -inf where no teacher token pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcli.data import Batch
from kdcli.data.memory import Split
from kdcli.engine.loop import TeacherOutputs
from kdcli.knowledge.align import CrossTokenizerKnowledge, align_rows
from kdcli.knowledge.format import read_store, write_static
from kdcli.knowledge.teacher import OnlineTeacher, StoredKnowledge
from kdcli.losses.uld import UniversalLogitDistillation

M = -100  # masked


def numbered_rows(batch: int, length: int, vocabulary: int) -> torch.Tensor:
    """Row (b, t) filled with the number 100 * b + t, to read back which row went where."""
    numbers = 100 * torch.arange(batch).view(-1, 1) + torch.arange(length).view(1, -1)
    return numbers.unsqueeze(-1).expand(batch, length, vocabulary).float()


def test_counted_tokens_pair_by_index_and_the_rest_get_no_teacher():
    teacher = numbered_rows(2, 5, 3)
    teacher_targets = torch.tensor([[M, 7, 7, 7, M], [7, 7, 7, 7, 7]])
    targets = torch.tensor([[M, M, 1, 1, 1, 1], [1, 1, M, M, M, M]])
    aligned = align_rows(teacher, teacher_targets, targets)
    assert aligned.shape == (2, 6, 3)
    first, second = aligned[0, :, 0].tolist(), aligned[1, :, 0].tolist()
    inf = float("-inf")
    # sample 0: three teacher tokens (positions 1-3) for four student tokens
    assert first == [inf, inf, 1.0, 2.0, 3.0, inf]
    # sample 1: two student tokens take the teacher's first two of five
    assert second == [100.0, 101.0, inf, inf, inf, inf]
    assert torch.isinf(aligned[0, 5]).all(), "a whole row of -inf: no distribution"


def test_the_knowledge_runs_the_teacher_on_its_own_ids_of_the_batch():
    teacher_x = torch.tensor([[5, 6, 7], [8, 9, 10], [11, 12, 13]])
    teacher_y = torch.tensor([[6, 7, M], [9, 10, 11], [12, 13, 14]])
    seen: list[Batch] = []

    def inner(epoch: int, batch: Batch) -> TeacherOutputs:
        seen.append(batch)
        return TeacherOutputs(batch.x.float().unsqueeze(-1).expand(-1, -1, 4))

    knowledge = CrossTokenizerKnowledge(inner, Split(teacher_x, teacher_y))
    student = Batch(torch.zeros(2, 4, dtype=torch.long), torch.tensor([[1, 1, 1, M]] * 2),
                    torch.tensor([2, 0]))  # fmt: skip
    out = knowledge(0, student)
    assert torch.equal(seen[0].x, teacher_x[[2, 0]]) and torch.equal(seen[0].index, student.index)
    assert out.logits.shape == (2, 4, 4)
    assert out.logits[0, :, 0].tolist() == [11.0, 12.0, 13.0, float("-inf")]
    assert out.logits[1, :, 0].tolist() == [5.0, 6.0, float("-inf"), float("-inf")]
    assert knowledge.train_data is None


class Bigram(torch.nn.Module):
    """A tiny teacher: each token's logits over the next, from a table."""

    def __init__(self, vocabulary: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.table = torch.nn.Embedding(vocabulary, vocabulary)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return 3 * self.table(tokens)


@pytest.mark.parametrize(("topk", "tolerance"), [(None, 1e-3), (6, 0.05)])
def test_uld_reads_the_stored_store_and_the_online_teacher_alike(tmp_path, topk, tolerance):
    """The teacher's outputs written through the soft-label format (all logits, or top-k)
    and read back give ULD the value the online teacher's logits give (top-k: up to its
    flat tail)."""
    teacher, vocabulary = Bigram(12), 12
    teacher_x = torch.randint(0, vocabulary, (4, 9), generator=torch.Generator().manual_seed(1))
    teacher_y = torch.randint(0, vocabulary, (4, 9), generator=torch.Generator().manual_seed(2))
    teacher_y[:, :2] = M  # e.g. a prompt
    split = Split(teacher_x, teacher_y)
    with torch.no_grad():
        fields = write_static(tmp_path, teacher(teacher_x), {}, topk, np.dtype("float32"))
    store = read_store(tmp_path, fields, 4, vocabulary, (), torch.device("cpu"))
    stored = CrossTokenizerKnowledge(StoredKnowledge(store.soft_labels), split)
    online = CrossTokenizerKnowledge(OnlineTeacher(teacher, ()), split)
    student_y = torch.full((4, 5), 1)
    student_y[:, 0] = M
    batch = Batch(torch.zeros(4, 5, dtype=torch.long), student_y, torch.tensor([3, 1, 0, 2]))
    student = torch.randn(4 * 5, 7, generator=torch.Generator().manual_seed(3))
    loss = UniversalLogitDistillation(alpha=1.0)
    values = [
        loss(student, source(0, batch).logits.reshape(-1, vocabulary), student_y.reshape(-1))
        for source in (stored, online)
    ]
    assert values[1].item() > 0.1
    assert values[0].item() == pytest.approx(values[1].item(), abs=tolerance)
