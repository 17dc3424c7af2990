"""The gain's uncertainty against hand-computed cases: McNemar, paired bootstrap, seeds."""

import math

import numpy as np
import pytest

from kdcli.engine.stats import compare, discordant, mcnemar_p, mean_std, paired_bootstrap_ci


def pairs(both: int, a_only: int, b_only: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-image correctness of two models with the given counts of each kind of image."""
    a = [True] * both + [True] * a_only + [False] * b_only + [False] * neither
    b = [True] * both + [False] * a_only + [True] * b_only + [False] * neither
    return np.array(a), np.array(b)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [
        (0, 5, 0.0625),  # 2 * 1 / 32
        (5, 0, 0.0625),
        (1, 9, 22 / 1024),  # 2 * (C(10,0) + C(10,1)) / 2^10
        (2, 8, 112 / 1024),  # 2 * (1 + 10 + 45) / 2^10
        (0, 1, 1.0),  # 2 * 1/2, capped at 1
        (3, 3, 1.0),
        (40, 40, 1.0),
        (0, 0, 1.0),  # no discordant image: no evidence either way
    ],
)
def test_mcnemar_exact_p_value(b, c, expected):
    assert mcnemar_p(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_stays_exact_for_many_discordant_images():
    # 1,000 discordant images, 450 vs 550: the binomial tail summed in exact integers
    tail = sum(math.comb(1000, i) for i in range(451))
    assert mcnemar_p(450, 550) == pytest.approx(2 * tail / 2**1000, rel=1e-12)
    assert 0.001 < mcnemar_p(450, 550) < 0.01
    assert mcnemar_p(0, 5000) == 0.0 or mcnemar_p(0, 5000) < 1e-300


def test_mcnemar_rejects_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_p(-1, 3)


def test_discordant_counts_images_only_one_model_gets_right():
    a, b = pairs(both=5, a_only=3, b_only=2, neither=4)
    assert discordant(a, b) == (3, 2)


def test_identical_models_have_a_zero_width_interval():
    a = np.array([True, False, True, True])
    assert paired_bootstrap_ci(a, a.copy()) == (0.0, 0.0)
    gain = compare(a, a.copy())
    assert (gain.gain, gain.ci, gain.p) == (0.0, (0.0, 0.0), 1.0)


def test_one_model_right_everywhere_the_other_wrong_is_a_certain_gain():
    a, b = pairs(both=0, a_only=50, b_only=0, neither=0)
    assert paired_bootstrap_ci(a, b) == (1.0, 1.0)


def test_interval_contains_the_point_estimate_and_is_reproducible():
    a, b = pairs(both=340, a_only=12, b_only=4, neither=4)  # 360 images, +8 images
    gain = compare(a, b)
    assert gain.gain == pytest.approx(8 / 360)
    low, high = gain.ci
    assert low < gain.gain < high
    assert gain.ci == compare(a, b).ci, "seeded: the same models give the same interval"
    assert gain.p == pytest.approx(mcnemar_p(4, 12))


def test_interval_shrinks_like_one_over_sqrt_n():
    a, b = pairs(both=340, a_only=12, b_only=4, neither=4)
    low, high = paired_bootstrap_ci(a, b)
    low16, high16 = paired_bootstrap_ci(np.tile(a, 16), np.tile(b, 16))
    assert (high16 - low16) == pytest.approx((high - low) / 4, rel=0.15)
    assert low16 < 8 / 360 < high16


def test_multinomial_bootstrap_matches_resampling_images():
    """The interval from counting kinds of images equals the textbook one that resamples
    image indices (up to Monte Carlo error)."""
    a, b = pairs(both=300, a_only=30, b_only=18, neither=12)
    rng = np.random.default_rng(123)
    index = rng.integers(0, len(a), size=(4000, len(a)))
    naive = (a[index].mean(1) - b[index].mean(1)).astype(float)
    expected = np.quantile(naive, [0.025, 0.975])
    low, high = paired_bootstrap_ci(a, b)
    assert low == pytest.approx(expected[0], abs=0.006)
    assert high == pytest.approx(expected[1], abs=0.006)
    # the normal approximation of a paired difference of proportions agrees as well
    n, d = len(a), np.asarray(a, float) - np.asarray(b, float)
    half = 1.96 * d.std(ddof=1) / math.sqrt(n)
    assert (high - low) == pytest.approx(2 * half, rel=0.1)


def test_paired_samples_must_have_the_same_length():
    with pytest.raises(ValueError, match="differ in length"):
        compare(np.ones(3, bool), np.ones(4, bool))


def test_mean_and_sample_std_over_seeds():
    assert mean_std([0.90, 0.92, 0.94]) == pytest.approx((0.92, 0.02))
    assert mean_std([0.5]) == (0.5, None)
