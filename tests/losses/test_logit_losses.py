"""Logit losses against the papers' equations (tests/losses/paper_equations.py): values and
gradients on random tensors, with the edge cases that break naive implementations."""

from __future__ import annotations

import pytest
import torch
from paper_equations import dist, dkd, hinton_kd, kd_with_logit_standardisation

from kdcli.losses import DIST, DecoupledKD, SoftTargetKD
from kdcli.losses.logit import standardize

CLASSES = 7


def random_case(seed: int, batch: int = 6, one_class: bool = False, scale: float = 3.0):
    generator = torch.Generator().manual_seed(seed)
    student = torch.randn(batch, CLASSES, generator=generator, dtype=torch.float64) * scale
    teacher = torch.randn(batch, CLASSES, generator=generator, dtype=torch.float64) * scale
    targets = torch.randint(0, CLASSES, (batch,), generator=generator)
    if one_class:
        targets = torch.full((batch,), 3)
    return student, teacher, targets


def value_and_grad(fn, student, teacher, targets):
    """fn(student, teacher, targets) and d/d student, d/d teacher (teacher grads must be 0 or
    match: the losses do not detach, the loop passes no-grad teacher logits)."""
    student = student.detach().clone().requires_grad_(True)
    value = fn(student, teacher, targets)
    (grad,) = torch.autograd.grad(value, student)
    return value.detach(), grad


LOSSES = {
    "kd": lambda alpha, T: (
        SoftTargetKD(alpha=alpha, temperature=T),
        lambda s, t, y: hinton_kd(s, t, y, alpha, T),
    ),
    "kd_ls": lambda alpha, T: (
        SoftTargetKD(alpha=alpha, temperature=T, standardize=True),
        lambda s, t, y: kd_with_logit_standardisation(s, t, y, alpha, T),
    ),
    "dkd": lambda alpha, T: (
        DecoupledKD(alpha=alpha, beta=8.0, temperature=T, warmup=0),
        lambda s, t, y: dkd(s, t, y, alpha, 8.0, T),
    ),
    "dist": lambda alpha, T: (
        DIST(beta=alpha, gamma=2.0, temperature=T),
        lambda s, t, y: dist(s, t, y, alpha, 2.0, T),
    ),
}


def compare(name, alpha, temperature, student, teacher, targets, dtype=torch.float32, tol=1e-4):
    loss, reference = LOSSES[name](alpha, temperature)
    ours_in = student.to(dtype)
    theirs_in = ours_in.double()  # the same (rounded) numbers, in float64
    value, grad = value_and_grad(lambda s, t, y: loss(s, t.to(dtype), y), ours_in, teacher, targets)
    expected_value, expected_grad = value_and_grad(
        reference, theirs_in, teacher.to(dtype).double(), targets
    )
    assert grad.dtype == dtype
    torch.testing.assert_close(value.double(), expected_value, rtol=tol, atol=tol)
    scale = expected_grad.abs().max().clamp(min=1e-3)
    torch.testing.assert_close(grad.double() / scale, expected_grad / scale, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_matches_the_paper(name, alpha, temperature):
    compare(name, alpha, temperature, *random_case(seed=int(alpha * 10 + temperature)))


@pytest.mark.parametrize("name", LOSSES)
def test_large_temperature(name):
    compare(name, 0.9, 100.0, *random_case(seed=1, scale=10.0), tol=2e-3)


@pytest.mark.parametrize("name", LOSSES)
def test_batch_of_one_class(name):
    compare(name, 0.7, 4.0, *random_case(seed=2, one_class=True))


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
def test_half_precision_logits(name, dtype, tol):
    """Half inputs are computed in float32: same result as float64 on the rounded numbers."""
    compare(name, 0.9, 4.0, *random_case(seed=3), dtype=dtype, tol=tol)


def test_alpha_zero_is_cross_entropy_and_one_is_pure_kd():
    student, teacher, targets = random_case(seed=4)
    s, t = student.float(), teacher.float()
    ce = torch.nn.functional.cross_entropy(s, targets)
    assert torch.allclose(SoftTargetKD(alpha=0.0)(s, t, targets), ce)
    pure = SoftTargetKD(alpha=1.0, temperature=4.0)(s, t, targets)
    half = SoftTargetKD(alpha=0.5, temperature=4.0)(s, t, targets)
    assert torch.allclose(half, 0.5 * pure + 0.5 * ce)


def test_kd_equals_tckd_plus_weighted_nckd():
    """DKD's eq. (5): KD = TCKD + (1 - p_t^teacher) NCKD, per sample (Zhao et al. 2022)."""
    student, teacher, targets = random_case(seed=5, batch=1)
    s, t = student.float(), teacher.float()
    kd = SoftTargetKD(alpha=1.0, temperature=2.0)(s, t, targets)
    tckd = DecoupledKD(alpha=1.0, beta=0.0, temperature=2.0, warmup=0, ce_weight=0.0)(s, t, targets)
    nckd = DecoupledKD(alpha=0.0, beta=1.0, temperature=2.0, warmup=0, ce_weight=0.0)(s, t, targets)
    p_target = torch.softmax(t / 2.0, dim=1)[0, targets[0]]
    assert torch.allclose(kd, tckd + (1 - p_target) * nckd, rtol=1e-5)


def test_dkd_warmup_scales_the_kd_part_linearly():
    student, teacher, targets = random_case(seed=6)
    s, t = student.float(), teacher.float()
    loss = DecoupledKD(alpha=1.0, beta=8.0, temperature=4.0, warmup=4)
    full = DecoupledKD(alpha=1.0, beta=8.0, temperature=4.0, warmup=0)(s, t, targets)
    ce = torch.nn.functional.cross_entropy(s, targets)
    for epoch, factor in [(0, 0.25), (1, 0.5), (3, 1.0), (9, 1.0)]:
        loss.start_epoch(epoch, 10)
        assert torch.allclose(loss(s, t, targets), ce + factor * (full - ce), rtol=1e-5)


def test_standardised_kd_ignores_the_teachers_logit_scale_and_shift():
    student, teacher, targets = random_case(seed=7)
    s, t = student.float(), teacher.float()
    loss = SoftTargetKD(alpha=0.9, temperature=2.0, standardize=True)
    assert torch.allclose(loss(s, t, targets), loss(s, 5.0 * t + 3.0, targets), rtol=1e-5)
    assert torch.allclose(standardize(torch.ones(2, 4)), torch.zeros(2, 4))  # no NaN at std 0


def test_dist_is_zero_for_a_perfect_linear_relation_at_ce_weight_zero():
    """Pearson correlation ignores shifts and scales: a student whose probabilities are an
    affine map of the teacher's has nothing left to learn from DIST."""
    _, teacher, targets = random_case(seed=8)
    loss = DIST(beta=1.0, gamma=1.0, temperature=1.0, ce_weight=0.0)
    assert loss(teacher.float(), teacher.float(), targets).abs() < 1e-5
