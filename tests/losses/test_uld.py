"""`loss=uld` (kdcli/losses/uld.py) against its formula written out by hand on tiny tensors:
softmax of each row, sorted in decreasing order, the shorter vocabulary padded with zeros,
summed absolute differences, averaged over the aligned rows, plus the student's
cross-entropy on its counted tokens."""

from __future__ import annotations

import math

import pytest
import torch

from kdcli.losses.uld import UniversalLogitDistillation

NO_TEACHER = float("-inf")


def softmax(row: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in row]
    return [e / sum(exps) for e in exps]


def uld_by_hand(student: list[float], teacher: list[float], temperature: float) -> float:
    s = sorted(softmax(student, temperature), reverse=True)
    t = sorted(softmax(teacher, temperature), reverse=True)
    length = max(len(s), len(t))
    s, t = s + [0.0] * (length - len(s)), t + [0.0] * (length - len(t))
    return sum(abs(a - b) for a, b in zip(s, t, strict=True))


def ce_by_hand(student: list[float], target: int) -> float:
    return -math.log(softmax(student, 1.0)[target])


STUDENT = [[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 0.0], [0.3, -0.3, 0.9]]
TEACHER = [  # five tokens: another vocabulary, longer than the student's three
    [1.5, 3.0, 0.0, -2.0, 0.5],
    [0.0, 0.0, 0.0, 2.0, 1.0],
    [NO_TEACHER] * 5,  # no teacher token pairs with this one
    [4.0, -1.0, 0.2, 0.2, 0.0],
]
TARGETS = [0, 2, 1, -100]  # the last row is masked


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.5, 0.8])
def test_uld_matches_its_formula_by_hand(temperature, alpha):
    loss = UniversalLogitDistillation(alpha=alpha, temperature=temperature)
    value = loss(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor(TARGETS))
    # CE: the three counted rows; ULD: the counted rows with a teacher (rows 0 and 1)
    ce = sum(ce_by_hand(STUDENT[i], TARGETS[i]) for i in range(3)) / 3
    distance = sum(uld_by_hand(STUDENT[i], TEACHER[i], temperature) for i in range(2)) / 2
    assert value.item() == pytest.approx((1 - alpha) * ce + alpha * distance, rel=1e-5)


def test_a_shorter_teacher_vocabulary_is_padded_too():
    student = [[0.0, 1.0, 2.0, 3.0, 4.0]]
    teacher = [[1.0, -1.0]]
    loss = UniversalLogitDistillation(alpha=1.0)
    value = loss(torch.tensor(student), torch.tensor(teacher), torch.tensor([4]))
    assert value.item() == pytest.approx(uld_by_hand(student[0], teacher[0], 1.0), rel=1e-5)


def test_the_distance_is_blind_to_the_order_of_the_vocabulary():
    student = torch.tensor([[0.3, 2.0, -1.0, 0.5]])
    shuffled = student[:, [2, 0, 3, 1]]
    loss = UniversalLogitDistillation(alpha=1.0)
    assert loss(student, shuffled, torch.tensor([1])).item() == pytest.approx(0.0, abs=1e-7)
    other = torch.tensor([[0.0, 0.0, 0.0, 0.0]])
    assert loss(student, other, torch.tensor([1])).item() > 0.1


def test_masked_and_unpaired_rows_give_no_signal_and_no_nan():
    loss = UniversalLogitDistillation(alpha=0.5)
    student = torch.randn(3, 4, requires_grad=True)
    teacher = torch.full((3, 6), NO_TEACHER)
    value = loss(student, teacher, torch.tensor([-100, -100, -100]))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(student.grad, torch.zeros(3, 4))
    # a counted row without a teacher: cross-entropy alone, finite
    value = loss(student, teacher, torch.tensor([1, -100, -100]))
    assert value.item() == pytest.approx(0.5 * ce_by_hand(student[0].tolist(), 1), rel=1e-5)


def test_the_gradient_reaches_the_student():
    student = torch.tensor(STUDENT, requires_grad=True)
    UniversalLogitDistillation(alpha=1.0)(
        student, torch.tensor(TEACHER), torch.tensor(TARGETS)
    ).backward()
    assert student.grad is not None
    assert student.grad[:2].abs().sum() > 0, "the paired rows learn"
    assert torch.equal(student.grad[2:], torch.zeros(2, 3)), "unpaired and masked rows do not"
