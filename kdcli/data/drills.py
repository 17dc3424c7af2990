"""A bundled instruction set with right answers, written on the fly (no file, no download):
`dataset=drills`, the data of `task=instruct`.

Three drills, in equal shares, each a short prompt with one right answer:

- `add 385+47`   -> `432`     (whole numbers below 10^`digits`)
- `rev kfpqz`    -> `zqpfk`   (3 to `letters` lowercase letters, reversed)
- `sort dbca`    -> `abcd`    (the same letters, sorted)

The samples are a pure function of `dataset.seed`, so every run, and the cache's keys, see
the same set; prompts are drawn without repeats, so no test prompt is in the training split.
Answers are short, so they are judged by exact match.
"""

from __future__ import annotations

import random
import string

from kdcli.data.instruct import Conversation, InstructData, Turn


def drill(kind: str, rng: random.Random, digits: int, letters: int) -> tuple[str, str]:
    """One (prompt, answer) of `kind`."""
    if kind == "add":
        a, b = rng.randrange(10**digits), rng.randrange(10**digits)
        return f"add {a}+{b}", str(a + b)
    word = "".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(3, letters)))
    if kind == "rev":
        return f"rev {word}", word[::-1]
    return f"sort {word}", "".join(sorted(word))


KINDS = ("add", "rev", "sort")


def drills(count: int, seed: int, digits: int = 3, letters: int = 6) -> list[Conversation]:
    """`count` distinct drills, the kinds in turn, drawn by `seed`."""
    rng = random.Random(seed)
    seen: set[str] = set()
    samples: list[Conversation] = []
    while len(samples) < count:
        prompt, answer = drill(KINDS[len(samples) % len(KINDS)], rng, digits, letters)
        if prompt not in seen:
            seen.add(prompt)
            samples.append([Turn("user", prompt), Turn("assistant", answer)])
    return samples


class Drills(InstructData):
    """`configs/dataset/drills.yaml`: `count` drills written by `seed`."""

    def __init__(
        self,
        count: int = 6000,
        seed: int = 0,
        digits: int = 3,
        letters: int = 6,
        **settings,
    ) -> None:
        super().__init__(**settings)
        self.count, self.seed, self.digits, self.letters = count, seed, digits, letters

    def check(self) -> None:
        """Nothing to check: the drills are written, not read."""

    def samples(self) -> list[Conversation]:
        return drills(self.count, self.seed, self.digits, self.letters)
