"""Token losses for language models (kdcli/losses/token.py) against their formulas, computed
by hand on small distributions, with masking and zero probabilities."""

import math

import pytest
import torch

from kdcli.losses.token import TokenDistillation

P_T = [0.7, 0.2, 0.1]  # teacher
P_S = [0.5, 0.3, 0.2]  # student


def logits(p):
    return torch.log(torch.tensor([p]))


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def mix(w, p, q):
    return [w * a + (1 - w) * b for a, b in zip(p, q, strict=True)]


EXPECTED = {
    "kd": kl(P_T, P_S),
    "rkl": kl(P_S, P_T),
    "jsd": 0.3 * kl(P_T, mix(0.3, P_T, P_S)) + 0.7 * kl(P_S, mix(0.3, P_T, P_S)),
    "skl": kl(P_T, mix(0.1, P_T, P_S)),
    "srkl": kl(P_S, mix(0.1, P_S, P_T)),
}


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_each_divergence_equals_its_formula(kind):
    loss = TokenDistillation(kind, alpha=1.0, temperature=1.0, beta=0.3, skew=0.1)
    value = loss(logits(P_S), logits(P_T), torch.tensor([0]))
    assert value.item() == pytest.approx(EXPECTED[kind], rel=1e-5)


def test_alpha_mixes_in_cross_entropy_and_masked_tokens_do_not_count():
    loss = TokenDistillation("rkl", alpha=0.25, temperature=1.0)
    student = torch.cat([logits(P_S), logits([0.1, 0.1, 0.8])])
    teacher = torch.cat([logits(P_T), logits([0.8, 0.1, 0.1])])
    value = loss(student, teacher, torch.tensor([1, -100]))  # the second token is masked
    expected = 0.75 * -math.log(0.3) + 0.25 * kl(P_S, P_T)
    assert value.item() == pytest.approx(expected, rel=1e-5)


def test_without_targets_the_student_s_own_text_learns_the_divergence_alone():
    # on-policy batches (loss.lmbda) carry no ground truth: no cross-entropy, every token counts
    loss = TokenDistillation("jsd", alpha=0.25, temperature=1.0, beta=0.3)
    student = torch.cat([logits(P_S), logits(P_T)])
    teacher = torch.cat([logits(P_T), logits(P_T)])
    value = loss(student, teacher, None)
    assert value.item() == pytest.approx(EXPECTED["jsd"] / 2, rel=1e-5, abs=1e-7)


def test_temperature_scales_by_t_squared():
    t = 2.0
    loss = TokenDistillation("kd", alpha=1.0, temperature=t)
    soft = lambda p: [x ** (1 / t) / sum(y ** (1 / t) for y in p) for x in p]  # noqa: E731
    value = loss(logits(P_S), logits(P_T), torch.tensor([0]))
    assert value.item() == pytest.approx(t * t * kl(soft(P_T), soft(P_S)), rel=1e-5)


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_no_nan_with_zero_probabilities_or_every_token_masked(kind):
    loss = TokenDistillation(kind, alpha=0.5)
    teacher = torch.tensor([[0.0, float("-inf"), -1.0]])  # a top-k store's empty tail
    student = torch.randn(1, 3, requires_grad=True)
    value = loss(student, teacher, torch.tensor([0]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(student.grad).all()
    masked = loss(student, teacher, torch.tensor([-100]))
    assert masked.item() == 0.0


def test_long_inputs_are_summed_in_chunks_to_the_same_value(monkeypatch):
    from kdcli.losses import token

    torch.manual_seed(0)
    student, teacher = torch.randn(50, 11), torch.randn(50, 11)
    targets = torch.randint(0, 11, (50,))
    whole = TokenDistillation("jsd")(student, teacher, targets)
    monkeypatch.setattr(token, "CHUNK", 7)
    assert TokenDistillation("jsd")(student, teacher, targets).item() == pytest.approx(
        whole.item(), rel=1e-6
    )
