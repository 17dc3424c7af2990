"""The bundled text-classification example: short film reviews, generated (no file, no download).

Every review is one to three clauses, "the plot was not good", joined by "and", "but" or a
comma. An opinion word counts +1 (good, great, ...) or -1 (bad, dull, ...), the other way round
after a negation (not, never, hardly); the review is positive when the sum is above zero,
negative below it and mixed at zero. Reading it takes knowing the words from their characters
and which of them a negation precedes: a wider, deeper transformer learns it in fewer epochs
than a tiny one, which is where the teacher's soft labels help the student
(docs/benchmarks.md, "Text classification"). The same `seed` gives the same reviews.
"""

from __future__ import annotations

import random

from kdcli.data.text_classify import Label, TextClassification

POSITIVE = ("good", "great", "fine", "nice", "fun", "superb", "clever", "lovely")
NEGATIVE = ("bad", "awful", "poor", "dull", "weak", "boring", "silly", "flat")
NEGATIONS = ("not", "never", "hardly")
SUBJECTS = ("plot", "cast", "music", "ending", "script", "acting", "story", "film", "pace")
VERBS = ("was", "is", "felt", "seemed")
JOINERS = (" and ", " but ", ", ")
CLASSES = ("negative", "mixed", "positive")


def review(rng: random.Random, negation: float) -> tuple[str, Label]:
    """One review and its class."""
    clauses, score = [], 0
    for _ in range(rng.randint(1, 3)):
        sign = rng.choice((1, -1))
        word = rng.choice(POSITIVE if sign > 0 else NEGATIVE)
        if rng.random() < negation:
            word, sign = f"{rng.choice(NEGATIONS)} {word}", -sign
        clauses.append(f"the {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {word}")
        score += sign
    text = clauses[0]
    for clause in clauses[1:]:
        text += rng.choice(JOINERS) + clause
    return text, CLASSES[(score > 0) - (score < 0) + 1]


def reviews(count: int, seed: int, negation: float = 0.4) -> list[tuple[str, Label]]:
    """`count` reviews drawn with `seed`."""
    rng = random.Random(seed)
    return [review(rng, negation) for _ in range(count)]


class Reviews(TextClassification):
    """`dataset=reviews`: `samples` generated reviews, split like any labelled texts."""

    def __init__(
        self,
        samples: int = 6000,
        seed: int = 0,
        negation: float = 0.4,
        name: str = "reviews",
        max_length: int = 104,
        tokenizer: str | None = None,
        test_fraction: float = 0.3,
        val_fraction: float = 0.1,
        split_seed: int = 0,
    ) -> None:
        super().__init__(None, name, max_length, tokenizer, test_fraction, val_fraction, split_seed)
        self.samples = samples
        self.seed = seed
        self.negation = negation

    def check(self) -> None:
        """Nothing to check: the reviews are generated."""

    def labelled(self) -> list[tuple[str, Label]]:
        return reviews(self.samples, self.seed, self.negation)
