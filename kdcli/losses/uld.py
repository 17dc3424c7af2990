"""Universal Logit Distillation (`loss=uld`; Boizard et al. 2024, "Towards Cross-Tokenizer
Distillation: the Universal Logit Distillation Loss for LLMs", arXiv:2402.12030), the loss
that distils across two tokenizers.

Two vocabularies have no token in common to compare probabilities on, but both distributions
can be sorted: ULD compares the teacher's and the student's probability vectors sorted in
decreasing order, the shorter padded with zeros to the longer's length. The paper writes the
loss as a Wasserstein-1 distance between the two distributions and, with its simplifying
assumption on the transport cost, gets the closed form computed here:

    ULD(row) = sum_i | sort(p_s)_i - sort(p_t)_i |,  p = softmax(logits / T), padded with 0

    loss = (1 - alpha) * CE(student, targets) + alpha * mean over aligned rows of ULD(row)

the paper's CE + lambda * ULD up to a factor, with lambda = alpha / (1 - alpha) (alpha 0.5:
lambda 1); `alpha`, as the token losses' (kdcli/losses/token.py), so that presets and sweeps
over `loss.alpha` apply to ULD too.

CE counts the student's own tokens (targets not -100). A row is aligned when the teacher has
a distribution for it: the cross-tokenizer knowledge (kdcli/knowledge/align.py) pairs the
i-th counted student token with the teacher's i-th counted token and gives rows of -inf (no
probability anywhere) where the teacher's sequence is shorter. With one tokenizer every
counted row is aligned and the loss is a vocabulary-order-blind logit loss.

A stored top-k store gives the teacher's k probabilities and its tail spread evenly over the
other classes (kdcli/knowledge/format.py); sorted, that is the top-k followed by a flat
tail, so ULD reads stored top-k and online logits alike. The sums run a chunk of rows at a
time, in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdcli.data.base import IGNORE
from kdcli.losses.base import DistillationLoss

CHUNK = 4096  # rows per chunk of the sorted sums


def sorted_probabilities(logits: torch.Tensor, temperature: float, length: int) -> torch.Tensor:
    """softmax(logits / T) per row in decreasing order, padded with zeros to `length`."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    ordered = probs.sort(dim=-1, descending=True).values
    return F.pad(ordered, (0, length - ordered.shape[-1]))


def uld_distance(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """Per row: the L1 distance between the sorted probability vectors of student [N, Vs] and
    teacher [N, Vt] logits at `temperature`, the shorter vocabulary padded with zeros."""
    length = max(student.shape[-1], teacher.shape[-1])
    s = sorted_probabilities(student, temperature, length)
    t = sorted_probabilities(teacher, temperature, length)
    return (s - t).abs().sum(-1)


def aligned_rows(teacher: torch.Tensor) -> torch.Tensor:
    """The rows where the teacher has a distribution (not all -inf: an unpaired token)."""
    return torch.isfinite(teacher).any(dim=-1)


class UniversalLogitDistillation(DistillationLoss):
    """`loss=uld` (see the module's docstring)."""

    def __init__(self, alpha: float = 0.5, temperature: float = 1.0, schedule=None) -> None:
        super().__init__()
        self.alpha, self.temperature = alpha, temperature
        self.set_schedule(schedule)

    def forward(self, student_logits, teacher_logits, targets, features=None):
        counted = (
            torch.ones(len(student_logits), dtype=torch.bool, device=student_logits.device)
            if targets is None
            else targets != IGNORE
        )
        if not bool(counted.any()):
            return student_logits.sum() * 0.0  # no token counts: no signal, no NaN
        total = student_logits.new_zeros((), dtype=torch.float32)
        if targets is not None and self.alpha < 1:
            ce = F.cross_entropy(student_logits[counted].float(), targets[counted])
            total = total + (1 - self.alpha) * ce
        paired = counted & aligned_rows(teacher_logits)
        if bool(paired.any()):
            total = total + self.alpha * self._distance(
                student_logits[paired], teacher_logits[paired]
            )
        self.last_terms = {}
        return total

    def _distance(self, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        """ULD averaged over the rows, summed a chunk of rows at a time."""
        total = student.new_zeros((), dtype=torch.float32)
        for start in range(0, len(student), CHUNK):
            rows = slice(start, start + CHUNK)
            total = total + uld_distance(student[rows], teacher[rows], self.temperature).sum()
        return total / len(student)
