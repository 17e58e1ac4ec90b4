"""framework.sequential: the anytime-valid statistics the strategies share, checked exactly where
possible (enumeration) and against scipy's textbook formulas."""
from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy import stats

from framework import sequential as sq


def binomial_expectation(fn, n: int, p: float) -> float:
    return sum(stats.binom.pmf(s, n, p) * fn(s) for s in range(n + 1))


@pytest.mark.parametrize("mixture", [sq.BetaMixture.jeffreys(), sq.two_arm_mixture(0.5, 0.05), sq.BetaMixture([(2, 5), (1, 1)], [3, 1])])
@pytest.mark.parametrize("n, p0", [(1, 0.3), (10, 0.5), (60, 0.05), (200, 0.8)])
def test_the_e_value_has_expectation_one_under_the_null(mixture, n, p0):
    # a mixture of likelihood ratios: E[E] = 1 exactly, at every n (a test martingale)
    assert binomial_expectation(lambda s: math.exp(mixture.log_e(s, n, p0)), n, p0) == pytest.approx(1.0, rel=1e-9)


def test_bounded_rewards_keep_the_expectation_below_one():
    # rewards in [0, 1] with mean p0 (not Bernoulli): the e-value is a supermartingale
    rng = np.random.default_rng(0)
    mixture = sq.BetaMixture.jeffreys()
    rewards = rng.beta(2, 3, size=(100_000, 5))  # mean 0.4
    values = [math.exp(mixture.log_e(float(r.sum()), 5, 0.4)) for r in rewards[:20_000]]
    assert np.mean(values) <= 1.0 + 3 * np.std(values) / math.sqrt(len(values))


def test_confidence_sequence_ends_where_the_e_value_reaches_one_over_alpha():
    mixture = sq.BetaMixture.centred(0.2, 0.1)
    for s, n in [(0, 10), (5, 1000), (500, 100_000), (800, 1000), (1000, 1000), (3, 7), (0.4, 1)]:
        cs = mixture.bounds(s, n, 0.05)
        assert 0.0 <= cs.lower <= s / n <= cs.upper <= 1.0
        for bound, edge in ((cs.lower, 0.0), (cs.upper, 1.0)):
            if bound != edge:
                assert mixture.log_e(s, n, bound) == pytest.approx(math.log(20), abs=1e-6)


def test_confidence_sequence_covers_at_all_times_at_once():
    # 400 Bernoulli(0.3) paths of 2,000 steps, the bound checked at every step: misses <= alpha
    rng = np.random.default_rng(1)
    mixture = sq.BetaMixture.jeffreys()
    misses = 0
    for _ in range(400):
        path = np.cumsum(rng.random(2000) < 0.3)
        for n in range(10, 2001, 10):
            cs = mixture.bounds(float(path[n - 1]), n, 0.1)
            if not cs.lower <= 0.3 <= cs.upper:
                misses += 1
                break
    assert misses <= 40 + 3 * math.sqrt(400 * 0.1 * 0.9)


def test_two_arm_test_is_a_martingale_whatever_the_common_rate():
    mixture = sq.two_arm_mixture(0.3, 0.1)
    # given N successes and M failures, each lands on arm b with chance 0.3 under H0
    for n_s, n_f in [(5, 40), (30, 3), (12, 12)]:
        total = 0.0
        for sb in range(n_s + 1):
            for fb in range(n_f + 1):
                weight = stats.binom.pmf(sb, n_s, 0.3) * stats.binom.pmf(fb, n_f, 0.3)
                total += weight * math.exp(sq.two_arm_bernoulli_log_e(n_s - sb, n_f - fb, sb, fb, 0.3, mixture))
        assert total == pytest.approx(1.0, rel=1e-9)


def test_rate_ratio_bounds_map_the_share_of_events():
    cs = sq.ConfidenceSequence(0.5, 0.6, 55, 100, 0.05)
    lo, hi = sq.rate_ratio_bounds(cs, 0.5)
    assert lo == pytest.approx(1.0) and hi == pytest.approx(1.5)


def test_normal_mixture_sprt_and_its_confidence_sequence_agree():
    tau2, variance, alpha = 0.04, 0.01, 0.05
    radius = sq.normal_mixture_radius(variance, tau2, alpha)
    # at delta_hat = radius the mixture likelihood ratio is exactly 1 / alpha
    assert sq.normal_mixture_log_e(radius, variance, tau2) == pytest.approx(math.log(1 / alpha))
    assert sq.normal_mixture_log_e(0.0, variance, tau2) < 0  # no effect: evidence against H1
    assert sq.p_value(math.log(40)) == pytest.approx(0.025) and sq.p_value(-1.0) == 1.0


def test_alpha_splits():
    assert sq.bonferroni(0.05, 4) == 0.0125
    assert sq.holm({"a": 0.01, "b": 0.04, "c": 0.03}, 0.05) == {"a"}
    assert sq.holm({"a": 0.01, "b": 0.02, "c": 0.03}, 0.06) == {"a", "b", "c"}


def test_fixed_horizon_sample_sizes_match_the_textbook():
    n = sq.sample_size_two_proportions(0.8, 0.84, 0.05, 0.8)
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    expected = ((za * math.sqrt(2 * 0.82 * 0.18) + zb * math.sqrt(0.8 * 0.2 + 0.84 * 0.16)) / 0.04) ** 2
    assert n == math.ceil(expected)
    assert sq.sample_size_two_means(0.5, 2.0, 0.05, 0.9) == math.ceil(2 * ((za + stats.norm.ppf(0.9)) * 4) ** 2)
    with pytest.raises(ValueError):
        sq.sample_size_two_proportions(0.5, 0.5, 0.05, 0.8)
    assert sq.two_proportion_z_p_value(170, 200, 176, 200) == pytest.approx(
        2 * stats.norm.sf(0.03 / math.sqrt(0.865 * 0.135 * 2 / 200)))


def test_pure_python_and_cheap():
    code = "import sys, framework.sequential; print('numpy' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
