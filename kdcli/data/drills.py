"""A bundled instruction set with right answers, written on the fly (no file, no download):
`dataset=drills`, the data of `task=instruct`.

Drills of the kinds in `dataset.kinds`, in equal shares, each a short prompt with one right
answer:

- `rev kfpqz`    -> `zqpfk`   (3 to `letters` lowercase letters, reversed)
- `sort dbca`    -> `abcd`    (the same letters, sorted)
- `add 385+47`   -> `432`     (whole numbers below 10^`digits`; hard for a small model)

Like answers people write, the training answers hold mistakes: a `dataset.noise` share of
them has its letters shuffled. The validation and test answers are always right, so a model
is judged on the rule, not on the mistakes; a teacher that learns the rule through the noise
writes answers cleaner than the data's, which is where distillation pays (docs/benchmarks.md
measures it; dataset.noise=0 gives clean drills).

The samples are a pure function of `dataset.seed`, so every run, and the cache's keys, see
the same set; prompts are drawn without repeats, so no test prompt is in the training split.
Answers are short, so they are judged by exact match.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from typing import Any

from kdcli.data.instruct import Conversation, InstructData, Turn
from kdcli.errors import UserError


def drill(kind: str, rng: random.Random, digits: int, letters: int) -> tuple[str, str]:
    """One (prompt, answer) of `kind`."""
    if kind == "add":
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        return f"add {a}+{b}", str(a + b)
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, letters)))
    if kind == "rev":
        return f"rev {word}", word[::-1]
    return f"sort {word}", "".join(sorted(word))


KINDS = ("rev", "sort", "add")


def drills(
    count: int,
    seed: int,
    digits: int = 3,
    letters: int = 6,
    kinds: tuple[str, ...] = ("rev", "sort"),
) -> list[Conversation]:
    """`count` distinct drills, the `kinds` in turn, drawn by `seed`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    samples: list[Conversation] = []
    while len(samples) < count:
        prompt, answer = drill(kinds[len(samples) % len(kinds)], rng, digits, letters)
        if prompt not in seen:
            seen.add(prompt)
            samples.append([Turn("user", prompt), Turn("assistant", answer)])
    return samples


class Drills(InstructData):
    """`configs/dataset/drills.yaml`: `count` drills written by `seed`."""

    def __init__(
        self,
        count: int = 8000,
        seed: int = 0,
        kinds: Sequence[str] = ("rev", "sort"),
        digits: int = 3,
        letters: int = 6,
        noise: float = 0.0,
        **settings: Any,
    ) -> None:
        super().__init__(**settings)
        unknown = sorted(set(kinds) - set(KINDS))
        if unknown or not kinds:
            raise UserError(
                f"dataset.kinds={list(kinds)}: choose one or more of {', '.join(KINDS)}."
            )
        self.count, self.seed, self.kinds = count, seed, tuple(kinds)
        self.digits, self.letters, self.noise = digits, letters, noise

    def check(self) -> None:
        """Nothing to check: the drills are written, not read."""

    def samples(self) -> list[Conversation]:
        return drills(self.count, self.seed, self.digits, self.letters, self.kinds)

    def training_answers(self, samples: list[Conversation], train: list[int]) -> list[Conversation]:
        """A `noise` share of the training answers with their letters shuffled (drawn by
        `seed`); the rest, and every validation and test answer, as written."""
        rng = random.Random(self.seed + 1)
        kept = list(samples)
        for index in train:
            if rng.random() < self.noise:
                prompt, answer = samples[index]
                letters = list(answer.content)
                rng.shuffle(letters)
                kept[index] = [prompt, Turn("assistant", "".join(letters))]
        return kept
