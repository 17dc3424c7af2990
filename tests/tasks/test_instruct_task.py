"""Instruction following (kdcli/tasks/instruct.py): answers judged by exact match and
ROUGE-L, the teacher's NLL of them, and every loss blind to the prompt."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdcli.data.drills import Drills
from kdcli.data.instruct import IGNORE, answer_split, prompt_lengths, sequences
from kdcli.engine.loop import learned_rows
from kdcli.engine.stats import compare, compare_scores
from kdcli.losses import CrossEntropy
from kdcli.losses.token import TokenDistillation
from kdcli.tasks.instruct import Instruct, exact_match, rouge_l


def test_exact_match_ignores_surrounding_spaces_only():
    assert exact_match(" 432 ", "432") and not exact_match("4 32", "432")


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence_of_words():
    assert rouge_l("the cat sat", "the cat sat") == 1.0
    assert rouge_l("a b c d", "a x c") == pytest.approx(2 * (2 / 4) * (2 / 3) / (2 / 4 + 2 / 3))
    assert rouge_l("", "") == 1.0 and rouge_l("x", "") == 0.0 and rouge_l("A, B!", "a b") == 1.0


class Oracle(torch.nn.Module):
    """A model that writes a fixed answer after any prompt: the reference's, or a wrong one."""

    def __init__(self, vocabulary, answers: dict[str, str], wrong: bool = False) -> None:
        super().__init__()
        self.vocabulary, self.answers, self.wrong = vocabulary, answers, wrong

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*tokens.shape, len(self.vocabulary)), -10.0)
        for row in range(tokens.shape[0]):
            for position in range(tokens.shape[1]):
                text = self.vocabulary.decode(tokens[row, : position + 1].tolist())
                if "\n" in text:  # the prompt is over: the answer's next token
                    logits[row, position, self._next(text)] = 10.0
        return logits

    def _next(self, text: str) -> int:
        prompt, _, written = text.partition("\n")
        answer = self.answers[prompt + "\n"]
        answer = answer[::-1] + "x" if self.wrong else answer
        upcoming = [*self.vocabulary.encode(answer), self.vocabulary.eos_id]
        return upcoming[min(len(written), len(upcoming) - 1)]


@pytest.fixture(scope="module")
def drills():
    return Drills(count=60, seed=2).load()


def test_a_model_that_answers_right_scores_1_and_one_that_does_not_0(drills):
    task = Instruct("exact_match")
    vocabulary = drills.vocabulary
    answers = {}
    for row in range(len(drills.test)):
        x, y = drills.test.images[row], drills.test.labels[row]
        length = int(prompt_lengths(y[None])[0])
        answer = [t for t in y.tolist() if t != IGNORE]
        answers[vocabulary.decode(x[:length].tolist())] = vocabulary.decode(answer)
    right = task.answers(Oracle(vocabulary, answers), Oracle(vocabulary, answers), drills, "test")
    assert right.figures["exact_match"] == 1.0 and right.figures["rouge_l"] == 1.0
    assert right.texts == right.references and right.scores.tolist() == [1.0] * len(drills.test)
    assert right.figures["generation_nll"] == pytest.approx(0.0, abs=1e-3), "the teacher agrees"
    wrong = task.answers(
        Oracle(vocabulary, answers, wrong=True), Oracle(vocabulary, answers), drills, "test"
    )
    assert wrong.figures["exact_match"] == 0.0 and wrong.figures["generation_nll"] > 5


def test_answers_written_after_the_prompt_count_through_their_end_token_only():
    written = torch.tensor([[5, 6, 7, 8, 1, 9, 9], [5, 6, 7, 1, 4, 4, 4]])
    split = answer_split(written, torch.tensor([2, 3]), eos=1, pad=0)
    assert split.images.tolist() == [[5, 6, 7, 8, 1, 0], [5, 6, 7, 1, 0, 0]]
    assert split.labels.tolist() == [
        [IGNORE, 7, 8, 1, IGNORE, IGNORE],
        [IGNORE, IGNORE, 1] + [IGNORE] * 3,
    ]
    whole = sequences(split.images, split.labels, pad=0)
    assert whole[0, :5].tolist() == written[0, :5].tolist() and whole.shape == written.shape


LOSSES = [
    CrossEntropy(),
    *(TokenDistillation(kind, alpha=0.5, temperature=2.0) for kind in TokenDistillation.KINDS),
]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: getattr(loss, "kind", "ce"))
def test_a_prompt_only_change_leaves_every_loss_unchanged(drills, loss):
    """Student and teacher outputs at the prompt's (and padding's) positions changed at will:
    the loss, with its targets or on text the student wrote (no targets), stays the same."""
    torch.manual_seed(0)
    y = drills.train.labels[:8]
    student, teacher = torch.randn(*y.shape, 45), torch.randn(*y.shape, 45)
    prompt = (y == IGNORE).unsqueeze(-1)
    other_student = torch.where(prompt, torch.randn_like(student) * 9, student)
    other_teacher = torch.where(prompt, torch.randn_like(teacher) * 9, teacher)
    task = Instruct()
    for labelled in (True, False):
        if not labelled and not loss.needs_teacher:
            continue
        before = loss(*learned_rows(*task.flatten(student, teacher, y), labelled))
        after = loss(*learned_rows(*task.flatten(other_student, other_teacher, y), labelled))
        torch.testing.assert_close(before, after)


def test_scores_between_0_and_1_get_a_paired_interval_and_a_sign_test():
    a, b = np.array([1.0, 0.5, 0.75, 1.0]), np.array([0.5, 0.5, 0.25, 0.0])
    gain = compare_scores(a, b)
    assert gain.gain == pytest.approx(0.5) and (gain.a_only, gain.b_only, gain.n) == (3, 0, 4)
    assert gain.ci[0] <= 0.5 <= gain.ci[1] and gain.p == pytest.approx(0.25)
    right, wrong = np.array([1, 1, 0, 1]), np.array([0, 1, 0, 0])
    assert compare_scores(right, wrong) == compare(right.astype(bool), wrong.astype(bool))
