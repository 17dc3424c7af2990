"""How sure a gain is: paired bootstrap interval, exact McNemar test, mean and std over seeds.

Plain numpy in, plain numbers out (no config, no torch), so the maths is testable by hand.
The two models are compared on the same test images: `a` and `b` are per-image correctness
(booleans, same order), and the gain is accuracy(a) - accuracy(b).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # fixed: the same two models always get the same interval


@dataclass
class Gain:
    """accuracy(a) - accuracy(b) on n paired images, with its uncertainty."""

    gain: float
    ci: tuple[float, float]
    p: float
    a_only: int  # images a gets right and b wrong
    b_only: int  # images b gets right and a wrong
    n: int


def discordant(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """(images only `a` gets right, images only `b` gets right)."""
    a, b = _paired(a, b)
    return int(np.sum(a & ~b)), int(np.sum(~a & b))


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value for b and c discordant pairs.

    Under "both models are equally accurate", each of the b + c discordant images is a fair
    coin flip, so min(b, c) is a Binomial(b + c, 1/2) tail: p = min(1, 2 P[X <= min(b, c)]).
    Exact integer arithmetic, so it stays right for thousands of discordant images.
    """
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be >= 0, got b={b}, c={c}")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2**n)


def paired_bootstrap_ci(
    a: np.ndarray,
    b: np.ndarray,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """Percentile interval of accuracy(a) - accuracy(b) over images resampled with replacement.

    Each image contributes +1 (only a right), -1 (only b right) or 0, so a resample of n
    images is fully described by how many of each kind it drew: one multinomial draw per
    resample, the same distribution as resampling indices, in O(resamples) memory and time.
    """
    a, b = _paired(a, b)
    n = len(a)
    if n == 0:
        raise ValueError("no images to compare")
    a_only, b_only = discordant(a, b)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, [a_only / n, b_only / n, 1 - (a_only + b_only) / n], resamples)
    gains = (counts[:, 0] - counts[:, 1]) / n
    tail = (1 - confidence) / 2
    low, high = np.quantile(gains, [tail, 1 - tail])
    return float(low), float(high)


def compare(a: np.ndarray, b: np.ndarray, seed: int = BOOTSTRAP_SEED) -> Gain:
    """The gain of `a` over `b` with its 95% bootstrap interval and McNemar p-value."""
    a, b = _paired(a, b)
    a_only, b_only = discordant(a, b)
    return Gain(
        gain=float(a.mean() - b.mean()),
        ci=paired_bootstrap_ci(a, b, seed=seed),
        p=mcnemar_p(a_only, b_only),
        a_only=a_only,
        b_only=b_only,
        n=len(a),
    )


def compare_scores(a: np.ndarray, b: np.ndarray, seed: int = BOOTSTRAP_SEED) -> Gain:
    """The gain of mean(a) over mean(b) for paired per-item scores: `compare` when every
    score is 0 or 1 (right or wrong); otherwise (scores in between, such as ROUGE-L) a
    percentile interval over items resampled with replacement and the exact sign test on the
    items where the two differ (McNemar's test is that test for 0/1 scores)."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired scores differ in length or are empty: {a.size} and {b.size}")
    if np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        return compare(a.astype(bool), b.astype(bool), seed)
    differences = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(RESAMPLES)
    for start in range(0, RESAMPLES, 1000):  # 1,000 resamples at a time: bounded memory
        rows = rng.integers(0, a.size, size=(min(1000, RESAMPLES - start), a.size))
        means[start : start + len(rows)] = differences[rows].mean(axis=1)
    tail = (1 - CONFIDENCE) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    a_better, b_better = int(np.sum(differences > 0)), int(np.sum(differences < 0))
    return Gain(
        gain=float(differences.mean()),
        ci=(float(low), float(high)),
        p=mcnemar_p(a_better, b_better),
        a_only=a_better,
        b_only=b_better,
        n=int(a.size),
    )


def mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); the std is None for a single value."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        raise ValueError("no values")
    std = float(array.std(ddof=1)) if array.size > 1 else None
    return float(array.mean()), std


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=bool).ravel(), np.asarray(b, dtype=bool).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length: {a.size} and {b.size}")
    return a, b
