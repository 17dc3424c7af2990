"""Token-level distillation losses for language models (`task=lm`): one family,
(1 - alpha) * CE + alpha * T^2 * D(teacher, student), averaged over counted tokens.

Rows are tokens ([N, V] logits; the task flattens [B, T, V]); a target of -100 marks a token
that counts for nothing. D is, with p_t and p_s the teacher's and student's softmax at
temperature T:

- `kd`    forward KL(p_t || p_s)                         (mean-seeking)
- `rkl`   reverse KL(p_s || p_t)                         (mode-seeking, MiniLLM)
- `jsd`   beta * KL(p_t || m) + (1 - beta) * KL(p_s || m), m = beta p_t + (1 - beta) p_s
- `skl`   skew KL(p_t || a p_t + (1 - a) p_s)           (DistiLLM, a = `skew`)
- `srkl`  skew reverse KL(p_s || a p_s + (1 - a) p_t)

With `lmbda` > 0 (on-policy distillation, GKD; Agarwal et al. 2024) that share of the
training batches is text the student wrote itself (kdcli/knowledge/on_policy.py; a
`schedule.lmbda` ramps it, e.g. from 0 while the student learns to write); the loss
gets no targets for those (`targets=None`): there is no ground truth to learn, only the
teacher's distributions on the student's own tokens, so it is D alone over every token.

The sums over the vocabulary run in chunks of rows, so the fp32 probabilities of the whole
batch are never held twice at once. Zero probabilities (a stored top-k leaves the tail at 0)
contribute 0 (x log x -> 0) or, divided by, count as 1e-30: never NaN or inf; a batch whose
every token is masked gives 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kdcli.data.base import IGNORE
from kdcli.losses.base import DistillationLoss

CHUNK = 4096  # rows (tokens) per chunk of the vocabulary sums
LOG_TINY = math.log(1e-30)


def _kl(p: torch.Tensor, log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row KL(p || q) from p, log p and log q, with 0 * log 0 = 0."""
    return torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)


def divergence(
    kind: str, student: torch.Tensor, teacher: torch.Tensor, beta: float, skew: float
) -> torch.Tensor:
    """Per-row D for `kind` from student and teacher logits (already divided by T)."""
    log_s, log_t = F.log_softmax(student.float(), -1), F.log_softmax(teacher.float(), -1)
    p_s, p_t = log_s.exp(), log_t.exp()
    # a probability of exactly 0 (a stored top-k's empty tail) as 1e-30 where it is divided
    # by: reverse KL against it is then large, not infinite
    log_s, log_t = log_s.clamp_min(LOG_TINY), log_t.clamp_min(LOG_TINY)
    if kind == "kd":
        return _kl(p_t, log_t, log_s)
    if kind == "rkl":
        return _kl(p_s, log_s, log_t)
    if kind == "jsd":
        log_m = torch.log((beta * p_t + (1 - beta) * p_s).clamp_min(1e-30))
        return beta * _kl(p_t, log_t, log_m) + (1 - beta) * _kl(p_s, log_s, log_m)
    if kind == "skl":
        return _kl(p_t, log_t, torch.log((skew * p_t + (1 - skew) * p_s).clamp_min(1e-30)))
    if kind == "srkl":
        return _kl(p_s, log_s, torch.log((skew * p_s + (1 - skew) * p_t).clamp_min(1e-30)))
    raise ValueError(f"unknown divergence {kind!r}")


class TokenDistillation(DistillationLoss):
    """`loss=kd|rkl|jsd|skl|srkl` for language models (see the module's docstring)."""

    KINDS = ("kd", "rkl", "jsd", "skl", "srkl")

    def __init__(
        self,
        kind: str = "kd",
        alpha: float = 0.5,
        temperature: float = 1.0,
        beta: float = 0.5,
        skew: float = 0.1,
        lmbda: float = 0.0,
        schedule=None,
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"kind={kind!r} must be one of {', '.join(self.KINDS)}")
        self.kind, self.alpha, self.temperature = kind, alpha, temperature
        self.beta, self.skew, self.lmbda = beta, skew, lmbda
        self.set_schedule(schedule)

    @property
    def on_policy(self) -> bool:
        """Whether the student writes some of its batches (`lmbda`, or a schedule of it)."""
        return self.lmbda > 0 or "lmbda" in self.schedules

    def on_policy_share(self) -> float:
        return float(self.lmbda)

    def forward(self, student_logits, teacher_logits, targets, features=None):
        if targets is None:  # the student's own text: the teacher's distributions alone
            return self._divergence(student_logits, teacher_logits)
        counted = targets != IGNORE
        if not bool(counted.any()):
            return student_logits.sum() * 0.0  # no token counts: no signal, no NaN
        student, teacher, labels = (
            student_logits[counted],
            teacher_logits[counted],
            targets[counted],
        )
        ce = F.cross_entropy(student.float(), labels)
        return (1 - self.alpha) * ce + self.alpha * self._divergence(student, teacher)

    def _divergence(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """T^2 * D averaged over the rows, summed a chunk of rows at a time."""
        t = self.temperature
        total = student.new_zeros((), dtype=torch.float32)
        for start in range(0, len(student), CHUNK):
            rows = slice(start, start + CHUNK)
            total = (
                total
                + divergence(
                    self.kind, student[rows] / t, teacher[rows] / t, self.beta, self.skew
                ).sum()
            )
        return t**2 * total / len(student)
