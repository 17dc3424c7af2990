"""The bundled text-classification example: short film reviews, generated (no file, no download).

Every review is one to three clauses, "plot not good", joined by commas. An opinion word counts
+1 (good, fine, ...) or -1 (bad, dull, ...), the other way round after "not"; the review is
positive when the sum is above zero, negative below it and mixed at zero. Reading it takes
knowing the words from their characters and which of them a "not" precedes.

Like labels people give, the training labels hold mistakes: a `dataset.noise` share of the
training texts has its label replaced by another class, drawn by `seed`. The validation and
test labels are always right, so a model is judged on the rule, not on the mistakes. A teacher
that learns the rule through the noise gives soft labels cleaner than the data's, which is
where distillation pays the student (docs/benchmarks.md, "Text classification";
`dataset.noise=0` gives clean labels). The same `seed` gives the same reviews and mistakes.
"""

from __future__ import annotations

import random

import torch

from kdcli.data.text_classify import Label, TextClassification

POSITIVE = ("good", "great", "fine", "nice", "fun", "neat", "cool", "smart")
NEGATIVE = ("bad", "awful", "poor", "dull", "weak", "flat", "silly", "slow")
SUBJECTS = ("plot", "cast", "music", "end", "script", "story", "film", "pace")
CLASSES = ("negative", "mixed", "positive")


def review(rng: random.Random, negation: float) -> tuple[str, Label]:
    """One review and its class."""
    clauses, score = [], 0
    for _ in range(rng.randint(1, 3)):
        sign = rng.choice((1, -1))
        word = rng.choice(POSITIVE if sign > 0 else NEGATIVE)
        if rng.random() < negation:
            word, sign = f"not {word}", -sign
        clauses.append(f"{rng.choice(SUBJECTS)} {word}")
        score += sign
    return ", ".join(clauses), CLASSES[(score > 0) - (score < 0) + 1]


def reviews(count: int, seed: int, negation: float = 0.3) -> list[tuple[str, Label]]:
    """`count` reviews drawn with `seed`."""
    rng = random.Random(seed)
    return [review(rng, negation) for _ in range(count)]


def mislabel(labels: torch.Tensor, classes: int, share: float, seed: int) -> torch.Tensor:
    """`labels` with a `share` of them (drawn by `seed`) replaced by another of `classes`."""
    generator = torch.Generator().manual_seed(seed)
    wrong = torch.rand(len(labels), generator=generator) < share
    shift = torch.randint(1, classes, (len(labels),), generator=generator)
    return torch.where(wrong, (labels + shift) % classes, labels)


class Reviews(TextClassification):
    """`dataset=reviews`: `count` generated reviews, split like any labelled texts."""

    def __init__(
        self,
        count: int = 4000,
        seed: int = 0,
        negation: float = 0.3,
        noise: float = 0.0,
        name: str = "reviews",
        max_length: int = 52,
        tokenizer: str | None = None,
        test_fraction: float = 0.25,
        val_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        super().__init__(None, name, max_length, tokenizer, test_fraction, val_fraction, split_seed)
        self.count, self.seed = count, seed
        self.negation, self.noise = negation, noise

    def check(self) -> None:
        """Nothing to check: the reviews are generated."""

    def labelled(self) -> list[tuple[str, Label]]:
        return reviews(self.count, self.seed, self.negation)

    def training_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """A `noise` share of the training labels wrong (drawn by `seed`)."""
        return mislabel(labels, len(CLASSES), self.noise, self.seed + 1)
