"""Instruction following (`task=instruct`): a language model judged by the answers it writes.

Training is next-token prediction on the answers alone (the data marks every other position
-100, kdcli/data/instruct.py), so the token figures (`top1`, `nll`, `perplexity`) are the
answers' tokens'. The headline is judged on generation: each model answers every held-out
prompt greedily (the most likely token each step, until its end-of-sequence token or the
sequence's end), and its answer is compared with the reference:

- `exact_match`: the answer equals the reference (surrounding spaces ignored);
- `rouge_l`: ROUGE-L F1, the longest common subsequence of lowercased words;
- `generation_nll`: the teacher's mean NLL per token of the model's own answer (its
  end-of-sequence included): how likely the teacher finds what the model writes.

`headline` (the dataset's: `exact_match` for short right answers such as dataset=drills,
`rouge_l` for free text) names the figure the KD gain is computed on, paired by prompt.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from kdcli.data.instruct import prompt_lengths
from kdcli.tasks import Answers, Row
from kdcli.tasks.lm import IGNORE, LanguageModel, draw_tokens

HEADLINES = {"exact_match": "exact match", "rouge_l": "ROUGE-L"}
BATCH = 256  # prompts answered at once


def exact_match(answer: str, reference: str) -> bool:
    return answer.strip() == reference.strip()


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def rouge_l(answer: str, reference: str) -> float:
    """ROUGE-L F1 of two texts' lowercased words (0 when either has none)."""
    a, b = words(answer), words(reference)
    if not a or not b:
        return float(a == b)
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b):
            current.append(previous[j] + 1 if x == y else max(previous[j + 1], current[j]))
        previous = current
    common = previous[-1]
    if common == 0:
        return 0.0
    precision, recall = common / len(a), common / len(b)
    return 2 * precision * recall / (precision + recall)


class Instruct(LanguageModel):
    """`task=instruct`: see the module's docstring."""

    score_label = "answer tokens' top-1"

    def __init__(self, headline: str = "exact_match") -> None:
        if headline not in HEADLINES:
            raise ValueError(f"headline={headline!r} must be one of {', '.join(HEADLINES)}")
        self.metric = headline
        self.metric_label = HEADLINES[headline]

    def headline(
        self, model: torch.nn.Module, logits: torch.Tensor, data: Any, split: str
    ) -> float:
        return float(self.answers(model, None, data, split).figures[self.metric])

    def sample(self, model: torch.nn.Module, data: object, seed: int) -> None:
        return None  # the report shows answers to held-out prompts instead

    def generation_nll(
        self, model: torch.nn.Module, teacher: torch.nn.Module, data: object, seed: int
    ) -> None:
        return None  # part of the answers' figures

    @torch.no_grad()
    def answers(
        self, model: torch.nn.Module, teacher: torch.nn.Module | None, data: Any, split: str
    ) -> Answers:
        """`model`'s greedy answers to `split`'s prompts, scored (with `teacher`: also the
        teacher's NLL of them)."""
        loader = data.eval_loader(split, BATCH)
        vocabulary = data.vocabulary
        prompts, references, texts, nll, counted = [], [], [], 0.0, 0
        model.eval()
        for batch in loader.epoch(0):
            for tokens, length, targets in _by_prompt_length(batch.x, batch.y):
                written = _answer(model, tokens[:, :length], tokens.shape[1], vocabulary.eos_id)
                for row in range(len(tokens)):
                    prompts.append(vocabulary.decode(tokens[row, :length].tolist(), stop=False))
                    references.append(vocabulary.decode(_reference(targets[row])))
                    texts.append(vocabulary.decode(written[row, length:].tolist()))
                if teacher is not None:
                    total, count = _teacher_nll(teacher, written, length, vocabulary.eos_id)
                    nll, counted = nll + total, counted + count
        exact = np.array([exact_match(a, r) for a, r in zip(texts, references, strict=True)])
        rouge = np.array([rouge_l(a, r) for a, r in zip(texts, references, strict=True)])
        figures = {"exact_match": float(exact.mean()), "rouge_l": float(rouge.mean())}
        if teacher is not None:
            figures["generation_nll"] = nll / max(counted, 1)
        scores = exact.astype(float) if self.metric == "exact_match" else rouge
        return Answers(prompts, references, texts, scores, figures)

    def rows(self) -> tuple[Row, ...]:
        return (
            ("exact match", "exact_match", lambda v: f"{100 * v:.2f}%"),
            ("ROUGE-L", "rouge_l", lambda v: f"{100 * v:.2f}%"),
            (f"validation {self.metric_label}", f"val_{self.metric}", lambda v: f"{100 * v:.2f}%"),
            ("answer tokens' top-1", "top1", lambda v: f"{100 * v:.2f}%"),
            ("answer perplexity", "perplexity", lambda v: f"{v:.3f}"),
            ("agreement with teacher", "agreement", lambda v: f"{100 * v:.2f}%"),
            ("KL(teacher || model), per token", "teacher_kl", lambda v: f"{v:.4f}"),
            ("teacher's NLL of its answers", "generation_nll", lambda v: f"{v:.3f}"),
        )


def _by_prompt_length(
    x: torch.Tensor, y: torch.Tensor
) -> list[tuple[torch.Tensor, int, torch.Tensor]]:
    """A batch's samples grouped by prompt length: (inputs, prompt length, targets)."""
    lengths = prompt_lengths(y)
    groups = []
    for length in lengths.unique().tolist():
        rows = lengths == length
        groups.append((x[rows], int(length), y[rows]))
    return groups


def _reference(targets: torch.Tensor) -> list[int]:
    """The first answer's tokens (up to the first position that does not count again)."""
    counted = (targets != IGNORE).tolist()
    start = counted.index(True)
    end = counted.index(False, start) if False in counted[start:] else len(counted)
    return targets[start:end].tolist()


def _answer(model: torch.nn.Module, prompts: torch.Tensor, window: int, eos: int) -> torch.Tensor:
    """Greedy answers to `prompts` [B, P], at most up to `window` + 1 tokens in all."""
    generator = torch.Generator()  # unused: greedy draws nothing at random
    return draw_tokens(model, prompts, window + 1, window, 0.0, generator, stop=eos)


def _teacher_nll(
    teacher: torch.nn.Module, written: torch.Tensor, prompt: int, eos: int
) -> tuple[float, int]:
    """The teacher's summed NLL of each answer's tokens (through its end-of-sequence token),
    and how many tokens that is."""
    if written.shape[1] <= prompt:
        return 0.0, 0
    teacher.eval()
    log_p = F.log_softmax(teacher(written[:, :-1])[:, prompt - 1 :].float(), dim=-1)
    answer = written[:, prompt:]
    taken = log_p.gather(-1, answer.unsqueeze(-1)).squeeze(-1)
    ended = (answer == eos).long().cumsum(1)
    keep = (ended == 0) | ((ended == 1) & (answer == eos))  # through the first eos
    return float(-(taken * keep).sum()), int(keep.sum())
