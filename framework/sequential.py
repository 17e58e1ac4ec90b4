"""Anytime-valid statistics shared by the traffic strategies: pure Python (``math`` only), cheap.

A strategy calls ``decide()`` after every outcome and feedback, i.e. it *looks* at its data again
and again. A fixed-sample test (z-test, t-test, sign test, "P(best) > 0.95") looked at that often
rejects a true null far more often than its nominal level. Everything here stays valid under
such continuous monitoring: each test is an **e-process** (a non-negative supermartingale with
mean <= 1 under the null), so by Ville's inequality P(sup_t E_t >= 1/alpha) <= alpha, whenever and
however often one looks, and whatever the stopping rule. Inverting the tests gives **confidence
sequences**: intervals that contain the true value at all times at once with probability
>= 1 - alpha.

* :class:`BetaMixture`: the conjugate Beta mixture of Bernoulli likelihood ratios (Robbins 1970;
  Howard, Ramdas, McAuliffe & Sekhon 2021, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Ann. Statist., section on conjugate mixtures). Exact, non-asymptotic, also valid for
  any reward in [0, 1] (the Bernoulli likelihood ratio is convex in the observation) and under
  adaptive sampling (a bandit's arms: each arm's own stream). Gives an e-value for H0: p = p0 and
  a confidence sequence for p.
* :func:`two_arm_bernoulli_log_e`: an exact test of p_a = p_b for two binary arms whose traffic
  split is known (an A/B test): conditional on an outcome, the arm it happened on is
  Bernoulli(w) under H0 whatever the common rate (the device of Lindon & Malek 2022, "Anytime-valid
  inference for multinomial count data"); one Beta mixture over the arms of successes times one
  over the arms of failures is a test martingale. Works at click rates of 0.5% as well as at 80%.
* :func:`normal_mixture_log_e` / :func:`normal_mixture_radius`: the mixture SPRT of Johari,
  Koomen, Pekelis & Walsh (2017/2022, "Always valid inference: continuous monitoring of A/B
  tests", Oper. Res.) for a difference of means with a N(0, tau^2) mixing distribution, tau set
  from the declared minimum effect (asymptotic: the variance is a plug-in estimate).
* :func:`bonferroni`, :func:`holm`: splitting alpha across comparisons and guardrails.
* :func:`sample_size_two_proportions`, :func:`sample_size_two_means`: fixed-horizon sample sizes
  from alpha, power and the minimum effect, for a user who wants a classic test.

Conventions: ``log_e`` is the natural log of an e-value; an always-valid p-value is
``min(1, 1 / max_t E_t)`` (:func:`p_value`); "minimum effect" is *relative* (0.05: a 5% lift of
the incumbent's rate) unless a name says absolute.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Mapping, Sequence

__all__ = [
    "BetaMixture",
    "ConfidenceSequence",
    "bonferroni",
    "combine_two_streams",
    "holm",
    "log_beta",
    "normal_mixture_log_e",
    "normal_mixture_radius",
    "normal_mixture_tau2",
    "p_value",
    "rate_ratio_bounds",
    "sample_size_two_means",
    "sample_size_two_proportions",
    "two_arm_bernoulli_log_e",
    "two_arm_mixture",
    "two_mean_z_p_value",
    "two_proportion_z_p_value",
]

_NORMAL = NormalDist()
_lgamma = math.lgamma
_log = math.log
_LOG3 = math.log(3.0)


def log_beta(a: float, b: float) -> float:
    """log B(a, b)."""
    return _lgamma(a) + _lgamma(b) - _lgamma(a + b)


def p_value(max_log_e: float) -> float:
    """The always-valid p-value of an e-process whose largest value so far is ``exp(max_log_e)``."""
    return 1.0 if max_log_e <= 0 else math.exp(-max_log_e)


def _logsumexp(values: Sequence[float]) -> float:
    top = max(values)
    if top == -math.inf:
        return top
    return top + _log(sum(math.exp(v - top) for v in values))


# ---------------------------------------------------------------------------------------------
# Bernoulli (and [0, 1]-bounded) streams: the conjugate Beta mixture
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConfidenceSequence:
    """A confidence sequence's current interval, with what it was computed from."""

    lower: float
    upper: float
    successes: float
    n: float
    alpha: float

    @property
    def mean(self) -> float:
        return self.successes / self.n if self.n else float("nan")

    def as_list(self) -> list[float]:
        return [self.lower, self.upper]


class BetaMixture:
    """A mixture over Beta priors of Bernoulli likelihood ratios (Robbins' mixture martingale).

    For S successes in n trials (S may be fractional: rewards in [0, 1]), the e-value of
    H0: p = p0 is ``E(p0) = m(S, n) / (p0^S (1 - p0)^(n - S))`` where ``m`` is the prior-weighted
    marginal likelihood. Under H0, E is a test martingale in n, so P(ever E >= 1/alpha) <= alpha
    (Ville); the set {p0 : E(p0) < 1/alpha} is a confidence sequence. For a reward X in [0, 1]
    with mean p0, ``E[(p/p0)^X ((1-p)/(1-p0))^(1-X)] <= 1`` by convexity in X, so the same holds
    for bounded rewards, and for any adaptive choice of *when* an arm is sampled (Howard et al. 2021).

    ``priors`` is a sequence of ``(a, b)`` Beta parameters, mixed with ``weights`` (equal by
    default). A prior never depends on the data it tests: it encodes where the effect is expected.
    """

    __slots__ = ("priors", "log_weights", "_log_b0", "_terms")

    def __init__(self, priors: Sequence[tuple[float, float]], weights: Sequence[float] | None = None):
        if not priors:
            raise ValueError("BetaMixture needs at least one (a, b) prior")
        for a, b in priors:
            if not (a > 0 and b > 0):
                raise ValueError(f"Beta prior parameters must be > 0, got ({a}, {b})")
        weights = list(weights) if weights is not None else [1.0] * len(priors)
        total = float(sum(weights))
        self.priors = tuple((float(a), float(b)) for a, b in priors)
        self.log_weights = tuple(_log(w / total) for w in weights)
        self._log_b0 = tuple(log_beta(a, b) for a, b in self.priors)
        # (a, b, a + b, log weight - log B(a, b)) per prior: the hot loop of log_marginal
        self._terms = tuple((a, b, a + b, lw - lb0) for (a, b), lw, lb0 in zip(self.priors, self.log_weights, self._log_b0))

    @classmethod
    def jeffreys(cls) -> "BetaMixture":
        """Beta(1/2, 1/2): no preferred location; the default for one arm's mean."""
        return cls([(0.5, 0.5)])

    @classmethod
    def centred(cls, mean: float, sd: float, scales: Sequence[float] = (1.0, 4.0)) -> "BetaMixture":
        """Beta priors with the given mean and standard deviations ``sd * scale`` (equal
        weights): a mixture over several scales stays powerful when the true effect is larger than
        the declared minimum (a single tight prior would not), at the price of log(len(scales))."""
        if not 0.0 < mean < 1.0:
            raise ValueError(f"prior mean must be in (0, 1), got {mean}")
        priors = []
        for scale in scales:
            var = (sd * scale) ** 2
            kappa = mean * (1.0 - mean) / var - 1.0 if var > 0 else 1e9
            kappa = max(kappa, 2.0)  # no sharper than the data could ever need, no flatter than Beta(1,1)-like
            priors.append((mean * kappa, (1.0 - mean) * kappa))
        return cls(priors)

    def log_marginal(self, s: float, n: float) -> float:
        """log of the prior-weighted marginal likelihood of S successes in n trials."""
        lg = _lgamma
        terms = [c + lg(a + s) + lg(b + n - s) - lg(ab + n) for a, b, ab, c in self._terms]
        if len(terms) == 1:
            return terms[0]
        top = max(terms)
        return top + _log(sum([math.exp(v - top) for v in terms]))

    def log_e(self, s: float, n: float, p0: float) -> float:
        """log e-value of H0: p = p0 after S successes in n trials."""
        if n <= 0:
            return 0.0
        if p0 <= 0.0:
            return math.inf if s > 0 else self.log_marginal(s, n)
        if p0 >= 1.0:
            return math.inf if s < n else self.log_marginal(s, n)
        return self.log_marginal(s, n) - s * _log(p0) - (n - s) * math.log1p(-p0)

    def bounds(self, s: float, n: float, alpha: float) -> ConfidenceSequence:
        """The confidence sequence {p0 : E(p0) < 1/alpha} after S successes in n trials."""
        if n <= 0:
            return ConfidenceSequence(0.0, 1.0, s, n, alpha)
        s = min(max(s, 0.0), n)
        # E(p0) < 1/alpha  <=>  s log p0 + (n - s) log(1 - p0) > log m(S, n) - log(1/alpha)
        c = self.log_marginal(s, n) - _log(1.0 / alpha)
        lower = 0.0 if s <= 0 else _root(s, n - s, c)
        upper = 1.0 if s >= n else 1.0 - _root(n - s, s, c)
        return ConfidenceSequence(lower, upper, s, n, alpha)


def _root(k: float, m: float, c: float) -> float:
    """The p < k / (k + m) with k log p + m log(1 - p) = c, where c is below the maximum.

    In u = log p the left side is concave and increasing below the maximum, so Newton's method
    started left of the root converges monotonically (a handful of steps)."""
    if m <= 0:  # k log p = c
        return math.exp(min(c / k, 0.0))
    p_hat = k / (k + m)
    u, back = _log(p_hat), 1.0
    while k * u + m * math.log1p(-math.exp(u)) >= c:  # step left until below the level
        u -= back
        back *= 2.0
    for _ in range(100):
        p = math.exp(u)
        g = k * u + m * math.log1p(-p) - c
        dg = k - m * p / (1.0 - p)
        step = -g / dg
        u += step
        if abs(step) < 1e-11:
            break
    return math.exp(u)


# ---------------------------------------------------------------------------------------------
# Two binary arms with a known traffic split: an exact conditional test
# ---------------------------------------------------------------------------------------------
def two_arm_mixture(share_b: float, minimum_effect: float) -> BetaMixture:
    """The mixture over pi = P(an outcome happened on arm b) for a relative effect of size
    ``minimum_effect`` on a rate: pi moves by about share_b (1 - share_b) * effect from
    ``share_b``; priors centred on ``share_b`` with that spread, 4 and 16 times it (at high rates
    the failures move pi by far more than the declared lift moves the successes)."""
    spread = share_b * (1.0 - share_b) * max(minimum_effect, 1e-6)
    return BetaMixture.centred(share_b, spread, scales=(1.0, 4.0, 16.0))


def two_arm_bernoulli_log_e(
    successes_a: float, failures_a: float, successes_b: float, failures_b: float,
    share_b: float, mixture: BetaMixture,
) -> float:
    """log e-value of H0: p_a = p_b for binary outcomes of two arms, ``share_b`` of whose
    traffic goes to b (the share among the two, known: the router's split).

    Under H0, whatever the common rate, each success happened on b with probability share_b,
    and so did each failure: the Beta mixture over the arms of the successes (E_s) and the one
    over the arms of the failures (E_f) are test martingales over requests, and so is their
    product (each request updates exactly one of them). The e-value is the average of E_s, E_f
    and E_s E_f: an average of e-processes is one, and it keeps the power of the product at high
    rates (both streams informative) without paying, at click-through rates, for a failure stream
    that says nothing (measured: the median sample size stays 1.4-1.7x the fixed-horizon one from
    0.5% to 80% rates, see benchmarks/experiments.py). Exact at any rate (Lindon & Malek 2022
    condition on events the same way)."""
    s_total = successes_a + successes_b
    f_total = failures_a + failures_b
    return combine_two_streams(mixture.log_e(successes_b, s_total, share_b), mixture.log_e(failures_b, f_total, share_b))


def combine_two_streams(log_e_successes: float, log_e_failures: float) -> float:
    """log of (E_s + E_f + E_s E_f) / 3 (see :func:`two_arm_bernoulli_log_e`)."""
    return _logsumexp([log_e_successes, log_e_failures, log_e_successes + log_e_failures]) - _LOG3


def rate_ratio_bounds(pi: ConfidenceSequence, share_b: float) -> tuple[float, float]:
    """A confidence sequence on pi (share of events on b) as one on the rate ratio p_b / p_a."""
    odds0 = (1.0 - share_b) / share_b

    def ratio(p: float) -> float:
        if p >= 1.0:
            return math.inf
        return p / (1.0 - p) * odds0

    return ratio(pi.lower), ratio(pi.upper)


# ---------------------------------------------------------------------------------------------
# Gaussian streams (continuous rewards): the mixture SPRT of Johari et al.
# ---------------------------------------------------------------------------------------------
def normal_mixture_tau2(minimum_effect_absolute: float) -> float:
    """Mixing variance tau^2 of the mSPRT from the smallest absolute effect of interest: the
    mixture is most powerful for effects of about tau (Johari et al. choose tau to match the
    effects a user expects)."""
    return max(minimum_effect_absolute, 1e-12) ** 2


def normal_mixture_log_e(delta_hat: float, variance: float, tau2: float, theta0: float = 0.0) -> float:
    """log Lambda of the mixture SPRT for H0: theta = theta0, where delta_hat ~ N(theta,
    variance) (e.g. a difference of two means, variance = s_a^2/n_a + s_b^2/n_b) and the
    alternative mixes theta ~ N(theta0, tau2) (Johari et al., eq. for the normal mSPRT)."""
    if variance <= 0:
        return math.inf if delta_hat != theta0 else 0.0
    d = delta_hat - theta0
    return 0.5 * _log(variance / (variance + tau2)) + tau2 * d * d / (2.0 * variance * (variance + tau2))


def normal_mixture_radius(variance: float, tau2: float, alpha: float) -> float:
    """Half-width of the mSPRT's confidence sequence: theta in delta_hat +- radius at all times
    with probability >= 1 - alpha (the two-sided normal-mixture boundary of Howard et al. 2021)."""
    if variance <= 0:
        return 0.0
    return math.sqrt(variance * (variance + tau2) / tau2 * (2.0 * _log(1.0 / alpha) + _log((variance + tau2) / variance)))


# ---------------------------------------------------------------------------------------------
# Several comparisons
# ---------------------------------------------------------------------------------------------
def bonferroni(alpha: float, comparisons: int) -> float:
    """alpha split evenly over ``comparisons`` tests: the family-wise error stays <= alpha (valid
    for e-processes too, and for any dependence between the tests)."""
    return alpha / max(int(comparisons), 1)


def holm(p_values: Mapping[str, float], alpha: float) -> set[str]:
    """Holm's step-down procedure: the names whose null is rejected at family-wise level alpha.
    With always-valid p-values it stays valid at any stopping time."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(ordered)
    rejected: set[str] = set()
    for i, (name, p) in enumerate(ordered):
        if p > alpha / (m - i):
            break
        rejected.add(name)
    return rejected


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's adjusted p-values, in the order given: a test rejects at family-wise level alpha
    exactly when its adjusted p-value is <= alpha (the same verdicts as ``holm``)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


# ---------------------------------------------------------------------------------------------
# Fixed-horizon sample sizes (for the classic test a user may want instead)
# ---------------------------------------------------------------------------------------------
def sample_size_two_proportions(p_a: float, p_b: float, alpha: float, power: float, two_sided: bool = True) -> int:
    """Per-arm sample size of the pooled two-proportion z-test to detect p_a vs p_b with the given
    power (Fleiss' formula without continuity correction)."""
    if p_a == p_b:
        raise ValueError("the two rates are equal: no sample size detects a zero effect")
    z_a = _NORMAL.inv_cdf(1 - alpha / 2 if two_sided else 1 - alpha)
    z_b = _NORMAL.inv_cdf(power)
    bar = (p_a + p_b) / 2
    root = z_a * math.sqrt(2 * bar * (1 - bar)) + z_b * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))
    return math.ceil((root / (p_a - p_b)) ** 2)


def sample_size_two_means(delta: float, sd: float, alpha: float, power: float, two_sided: bool = True) -> int:
    """Per-arm sample size of the two-sample z-test (equal sd) to detect a mean difference delta."""
    if delta == 0:
        raise ValueError("a zero effect cannot be detected")
    z_a = _NORMAL.inv_cdf(1 - alpha / 2 if two_sided else 1 - alpha)
    z_b = _NORMAL.inv_cdf(power)
    return math.ceil(2 * ((z_a + z_b) * sd / delta) ** 2)


def two_proportion_z_p_value(s_a: float, n_a: float, s_b: float, n_b: float) -> float:
    """Two-sided p-value of the pooled two-proportion z-test (the fixed-horizon test)."""
    if n_a <= 0 or n_b <= 0:
        return 1.0
    pooled = (s_a + s_b) / (n_a + n_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    if se == 0:
        return 1.0
    z = abs(s_a / n_a - s_b / n_b) / se
    return math.erfc(z / math.sqrt(2))


def two_mean_z_p_value(mean_a: float, var_a: float, n_a: float, mean_b: float, var_b: float, n_b: float) -> float:
    """Two-sided p-value of the (large-sample) two-mean z-test."""
    se = math.sqrt(var_a / n_a + var_b / n_b) if n_a > 0 and n_b > 0 else 0.0
    if se == 0:
        return 1.0 if mean_a == mean_b else 0.0
    return math.erfc(abs(mean_a - mean_b) / se / math.sqrt(2))
