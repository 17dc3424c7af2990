"""The pipeline's logit losses against the equations written out by hand."""

import math

import pytest
import torch

from kdcli.losses import CrossEntropy, HardDistillation, SoftTargetKD


def reference_kd(s, t, y, alpha, temperature):
    """alpha * T^2 * sum_c p_t log(p_t / p_s) (batch mean) + (1 - alpha) * CE, term by term."""
    total = 0.0
    for i in range(s.shape[0]):
        p_t = torch.softmax(t[i] / temperature, 0)
        p_s = torch.softmax(s[i] / temperature, 0)
        kl = sum(p_t[c] * math.log(p_t[c] / p_s[c]) for c in range(s.shape[1]))
        ce = -math.log(torch.softmax(s[i], 0)[y[i]])
        total += alpha * temperature**2 * kl + (1 - alpha) * ce
    return float(total) / s.shape[0]


@pytest.mark.parametrize("alpha", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kd_matches_the_equation(alpha, temperature):
    torch.manual_seed(0)
    s, t = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    value = SoftTargetKD(alpha, temperature)(s, t, y)  # computed in float32
    assert value.item() == pytest.approx(reference_kd(s, t, y, alpha, temperature), rel=1e-4)


def test_kd_is_zero_distillation_when_student_equals_teacher():
    logits = torch.randn(4, 10)
    y = torch.zeros(4, dtype=torch.long)
    assert SoftTargetKD(alpha=1.0)(logits, logits, y).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_flows_to_the_student_only():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    SoftTargetKD()(s, t.detach(), torch.arange(4)).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_kd_accepts_half_precision_logits():
    s, t = torch.randn(4, 10).half(), torch.randn(4, 10).bfloat16()
    value = SoftTargetKD()(s, t, torch.arange(4))
    assert value.dtype == torch.float32 and torch.isfinite(value)


def test_hard_distillation_is_cross_entropy_on_the_teacher_argmax():
    s, t = torch.randn(8, 10), torch.randn(8, 10)
    labels = torch.randint(0, 10, (8,))
    expected = torch.nn.functional.cross_entropy(s, t.argmax(1))
    assert HardDistillation()(s, t, labels).item() == pytest.approx(expected.item())


def test_cross_entropy_ignores_the_teacher_and_needs_none():
    s, y = torch.randn(8, 10), torch.randint(0, 10, (8,))
    assert CrossEntropy.needs_teacher is False
    expected = torch.nn.functional.cross_entropy(s, y)
    assert CrossEntropy()(s, None, y).item() == pytest.approx(expected.item())
