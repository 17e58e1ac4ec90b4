"""Traffic strategy ``ab``: a sticky weighted split between arms, judged by an anytime-valid test.

Routing hashes ``(seed, key)`` with blake2b (stable across processes, unlike the salted builtin
``hash``) into the cumulative weight intervals: a user (``RouteRequest.key``, which the host
fills from the request field named by ``sticky_key``) always reaches the same arm while the
weights stay put; without a key the request id is hashed. Changing ``seed`` reshuffles users
between experiments.

**What the user declares**: ``metric`` (``accuracy``: label == prediction; ``clicks``: a feedback
with a click is a success, one without is not; ``reward``: ``Feedback.reward``, any number),
``alpha`` (the chance of naming a winner between equal arms, however long the test runs and
however often it is looked at), ``minimum_effect`` (the smallest *relative* lift worth finding:
0.05 = +5% of the incumbent's rate), and ``guardrails``.

**Sequential mode (default).** ``decide()`` runs after every feedback; the test stays valid:

* binary metrics: for every pair of arms, an exact e-value of H0 "equal rates" that conditions
  on outcomes: under H0 each success, and each failure, lands on arm b with the known share of
  the split (``framework.sequential.two_arm_bernoulli_log_e``: Beta mixtures scaled to the
  minimum effect, over the successes, the failures and both). Exact at click-through rates of
  0.5% as at accuracies of 80%;
* ``reward``: the mixture SPRT of Johari et al. on the difference of means (mixing sd = the
  minimum effect times the incumbent's mean; plug-in variances, so asymptotic);
* alpha is Bonferroni-split over all pairs; a pair is decided once its e-value reaches
  ``1 / (alpha / pairs)``, i.e. its always-valid p-value falls below the split alpha. An arm that
  beats every other arm is the winner: PROMOTE if ``auto_promote``, else HOLD with the winner
  recorded (an operator promotes);
* when every pair's confidence sequence on the rate ratio lies within ``1 +- minimum_effect``,
  HOLD says the arms are equivalent at that precision (no effect of the declared size).

**Fixed-horizon mode** (``mode: fixed_horizon``): the per-arm sample size is computed up front
from ``baseline`` (the incumbent's expected rate; for ``reward`` also ``baseline_sd``),
``minimum_effect``, ``alpha`` and ``power``; nothing is tested before every arm has it, then one
two-sided z-test (alpha Bonferroni-split over pairs) names the winner or says there is none.

**Guardrails** (``guardrails``), checked continuously with confidence sequences for every arm
against the incumbent (the first declared arm), ``guardrails.alpha`` split over all of them: an
arm whose error rate exceeds the incumbent's by more than ``error_rate_increase_max``, whose p95
latency exceeds ``latency_p95_ms_max`` (more than 5% of its answers slower), or whose mean
``Feedback.reward`` (a business metric beside an accuracy or clicks primary) falls below the
incumbent's by more than ``reward_drop_max`` is ROLLED BACK, whatever the primary metric says.

Every verdict's ``Decision.evidence`` carries the statistic, the always-valid p-value, the bounds,
the samples per arm, alpha and the minimum effect; the host copies it into the event log.
"""
from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from hashlib import blake2b
from itertools import combinations
from typing import Dict, Mapping, Optional, Sequence

from framework import sequential as sq
from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.hookspecs import hookimpl
from framework.strategy_tools import refuse_accuracy_for_regression as _refuse_accuracy
from framework.strategy_tools import nearest_rank_percentile as _percentile
from framework.strategy_tools import same_prediction as _same

LATENCY_WINDOW = 2048
METRICS = ("accuracy", "clicks", "reward")
MODES = ("sequential", "fixed_horizon")
#: share of answers allowed above latency_p95_ms_max: that is what "p95 <= max" means
P95_EXCEEDANCE = 0.05
#: answers between two looks of the error-rate and latency guardrails (besides every bad answer)
GUARD_EVERY = 64
#: feedback between two rewrites of a "no winner yet" HOLD's figures (a verdict is never delayed:
#: the e-values are updated and compared with the threshold at every feedback)
HOLD_REFRESH = 16
_HASH_SPACE = 2**64
_JEFFREYS = sq.BetaMixture.jeffreys()


@dataclass
class ABGuardrails:
    #: largest tolerated error-rate increase of an arm over the incumbent (absolute); None: off
    error_rate_increase_max: Optional[float] = 0.0
    #: p95 latency (ms) an arm must keep; None: off
    latency_p95_ms_max: Optional[float] = None
    #: largest tolerated drop of an arm's mean Feedback.reward below the incumbent's (a business
    #: metric beside an accuracy / clicks primary); None: off
    reward_drop_max: Optional[float] = None
    #: error budget of all guardrails together (split evenly); None: the strategy's alpha
    alpha: Optional[float] = None
    #: answers (feedback for the reward guardrail) per arm before a guardrail may trip
    min_samples: int = 100


@dataclass
class ABConfig:
    #: arm -> traffic weight (normalised); empty: equal weights over every declared arm
    weights: Dict[str, float] = field(default_factory=dict)
    #: request field / header whose value the host passes as the sticky key (None: request id)
    sticky_key: str = "user_id"
    #: "accuracy" (label == prediction), "clicks" (a click is a success) or "reward"
    metric: str = "accuracy"
    #: chance of naming a winner between equal arms, under continuous monitoring
    alpha: float = 0.05
    #: smallest relative lift of interest (0.05: +5% of the incumbent's rate or mean)
    minimum_effect: float = 0.05
    #: "sequential" (anytime-valid, the default) or "fixed_horizon" (one test at a planned size)
    mode: str = "sequential"
    #: fixed_horizon: power at the minimum effect
    power: float = 0.8
    #: fixed_horizon: the incumbent's expected rate (binary metrics) or mean (reward)
    baseline: Optional[float] = None
    #: fixed_horizon with metric reward: the expected standard deviation of a reward
    baseline_sd: Optional[float] = None
    #: feedback per arm before any verdict (sequential; the test is valid without it)
    min_samples_per_arm: int = 100
    auto_promote: bool = False
    guardrails: ABGuardrails = field(default_factory=ABGuardrails)
    #: salt of the routing hash: a new seed reassigns users to arms
    seed: int = 0


class _ArmStats:
    __slots__ = ("requests", "errors", "slow", "latencies", "n", "successes", "mean", "m2",
                 "seg_s", "seg_f", "rewards", "r_mean", "r_m2")

    def __init__(self) -> None:
        self.requests = self.errors = self.slow = self.n = self.successes = 0
        self.seg_s = self.seg_f = 0  # successes / failures since the split was last set
        self.mean = self.m2 = 0.0  # Welford running mean / sum of squared deviations (metric reward)
        self.rewards = 0  # the reward guardrail's own Welford (business metric)
        self.r_mean = self.r_m2 = 0.0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def value(self, metric: str) -> float:
        if metric == "reward":
            return self.mean
        return self.successes / self.n if self.n else 0.0

    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


class ABStrategy(TrafficStrategy):
    name = "ab"
    Config = ABConfig
    summary = "sticky weighted A/B split; anytime-valid test (or fixed horizon) picks the winner; guardrails roll back"
    sticky = True

    @classmethod
    def check_task(cls, config, task, key):
        _refuse_accuracy(cls.name, task, f"{key}.metric", config.metric == "accuracy",
                         "use metric: reward, with feedback rewards (e.g. minus the absolute error)")

    def __init__(self, config: ABConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        cfg: ABConfig = self.config
        self._key = str(cfg.seed).encode()[:64]
        self._stats = {arm: _ArmStats() for arm in self.arms}
        self._incumbent = next(iter(self.arms))
        self.winner: dict | None = None
        self.finished: str | None = None
        self.equivalent = False
        self._decision: Decision | None = None
        self._dirty = True
        # pair -> log e-value carried over from splits set before the current one, running max
        self._carried: dict[tuple[str, str], float] = {}
        self._max_log_e: dict[tuple[str, str], float] = {}
        self._pair_setup: dict[tuple[str, str], tuple] = {}  # share, mixture, memo of each stream
        self._mixtures: dict[float, sq.BetaMixture] = {}
        self._tau2: float | None = None  # reward metric: frozen at the first test
        self._planned: int | None = None
        self._guard_checks = self._guardrail_checks()
        self._guard_due = False
        self._equivalence_at = 0
        self._plan_cache: tuple | None = None
        self._held: tuple[int, Decision] | None = None  # (feedback count, the last "no winner yet" HOLD)
        self._set(_normalise(cfg.weights, self.arms) if cfg.weights else dict.fromkeys(self.arms, 1.0 / len(self.arms)))
        if cfg.mode == "fixed_horizon":
            self._planned = _planned_size(cfg, len(self.routable))

    # -- plan-time validation --------------------------------------------------------------
    @classmethod
    def check_config(cls, config: ABConfig, key: str, refs: Mapping[str, type] | None = None) -> None:
        if config.metric not in METRICS:
            raise RecipeError(f"{key}.metric: '{config.metric}' is not one of {', '.join(METRICS)}")
        if config.mode not in MODES:
            raise RecipeError(f"{key}.mode: '{config.mode}' is not one of {', '.join(MODES)}")
        if not 0.0 < config.alpha < 1.0:
            raise RecipeError(f"{key}.alpha: significance level must be in (0, 1), got {config.alpha}")
        if not config.minimum_effect > 0:
            raise RecipeError(f"{key}.minimum_effect: a relative lift > 0 (0.05 = 5%), got {config.minimum_effect}")
        if not 0.0 < config.power < 1.0:
            raise RecipeError(f"{key}.power: must be in (0, 1), got {config.power}")
        if config.min_samples_per_arm < 2:
            raise RecipeError(f"{key}.min_samples_per_arm: must be >= 2, got {config.min_samples_per_arm}")
        if not config.sticky_key:
            raise RecipeError(f"{key}.sticky_key: name the request field that identifies a user, e.g. user_id")
        bad = {a: w for a, w in config.weights.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise RecipeError(f"{key}.weights: weights must be finite and >= 0, got {bad}")
        if config.mode == "fixed_horizon":
            if config.baseline is None:
                raise RecipeError(
                    f"{key}.baseline: mode fixed_horizon sizes the test up front and needs the incumbent's expected "
                    f"{'mean reward' if config.metric == 'reward' else 'rate'}, e.g. {key}.baseline=0.8"
                )
            if config.metric == "reward":
                if config.baseline == 0 or not (config.baseline_sd or 0) > 0:
                    raise RecipeError(f"{key}.baseline_sd: mode fixed_horizon with metric reward needs baseline != 0 and baseline_sd > 0")
            elif not 0.0 < config.baseline < 1.0 or not config.baseline * (1 + config.minimum_effect) < 1.0:
                raise RecipeError(
                    f"{key}.baseline: a rate in (0, 1) whose lift by minimum_effect stays below 1, got {config.baseline}"
                )
        g = config.guardrails
        if g.error_rate_increase_max is not None and not 0.0 <= g.error_rate_increase_max < 1.0:
            raise RecipeError(f"{key}.guardrails.error_rate_increase_max: a rate difference in [0, 1), got {g.error_rate_increase_max}")
        if g.latency_p95_ms_max is not None and not g.latency_p95_ms_max > 0:
            raise RecipeError(f"{key}.guardrails.latency_p95_ms_max: milliseconds > 0, got {g.latency_p95_ms_max}")
        if g.reward_drop_max is not None and not g.reward_drop_max >= 0:
            raise RecipeError(f"{key}.guardrails.reward_drop_max: a drop >= 0, got {g.reward_drop_max}")
        if g.alpha is not None and not 0.0 < g.alpha < 1.0:
            raise RecipeError(f"{key}.guardrails.alpha: must be in (0, 1), got {g.alpha}")
        if g.min_samples < 1:
            raise RecipeError(f"{key}.guardrails.min_samples: must be >= 1, got {g.min_samples}")

    @classmethod
    def arm_names(cls, config: ABConfig | None, arms: Mapping[str, str]) -> Sequence[str]:
        """The arms that get traffic, in declaration order."""
        declared = list(arms)
        if len(declared) < 2:
            raise RecipeError(
                f"serve.models: strategy 'ab' compares at least two arms, but serve.models declares "
                f"{len(declared)} ({', '.join(declared) or 'none'}). Declare e.g. "
                f"serve.models={{champion: NAME@champion, challenger: this_run}}."
            )
        weights = dict(getattr(config, "weights", None) or {})
        unknown = sorted(set(weights) - set(arms))
        if unknown:
            raise RecipeError(
                f"strategy.weights: {', '.join(unknown)} not declared in serve.models "
                f"(declared: {', '.join(declared)}). Weight only declared arms."
            )
        if not weights:
            return declared
        if any(not (w >= 0 and math.isfinite(w)) for w in weights.values()) or sum(weights.values()) <= 0:
            raise RecipeError(f"strategy.weights: weights must be >= 0 with a positive sum, got {weights}")
        live = [a for a in declared if weights.get(a, 0.0) > 0]
        if len(live) < 2:
            raise RecipeError(
                f"strategy.weights: an A/B test needs at least two arms with a positive weight, got {weights}"
            )
        return live

    # -- roles for apply() -----------------------------------------------------------------
    def incumbent(self) -> str:
        """The first declared arm (the current model), even when weighted out of the test: the
        default, the first arm with traffic, would roll back to a challenger then."""
        return self._incumbent

    def candidate(self) -> str:
        """The recorded winner, else the first declared arm after the incumbent."""
        if self.winner is not None:
            return self.winner["arm"]
        return next(a for a in self.arms if a != self._incumbent)

    # -- routing ---------------------------------------------------------------------------
    def _set(self, weights: Mapping[str, float]) -> None:
        # the conditional test assumes the split it was run under: close the current segment
        for pair in list(self._max_log_e):
            self._carried[pair] = self._carried.get(pair, 0.0) + self._segment_log_e(pair)
        for s in self._stats.values():
            s.seg_s = s.seg_f = 0
        self._pair_setup.clear()
        self._held = None
        self.weights = {arm: float(weights.get(arm, 0.0)) for arm in self.arms}
        self._weights_view = dict(self.weights)  # shared by HOLD decisions until the next reweight
        live = [(arm, w) for arm, w in self.weights.items() if w > 0]
        self._routes = [Route(arm) for arm, _ in live]
        cuts, acc = [], 0.0
        for _, w in live:
            acc += w
            cuts.append(int(acc * _HASH_SPACE))
        cuts[-1] = _HASH_SPACE  # float rounding must not leave a gap at the top
        self._cuts = cuts
        self._only = self._routes[0] if len(live) == 1 else None
        self._dirty = True

    def choose(self, request: RouteRequest) -> Route:
        if self._only is not None:
            return self._only
        key = request.key if request.key is not None else request.request_id
        h = int.from_bytes(blake2b(key.encode(), digest_size=8, key=self._key).digest(), "big")
        return self._routes[bisect_right(self._cuts, h)]

    def set_weights(self, weights: Mapping[str, float]) -> None:
        self._set(_normalise(weights, self.arms))
        self.reopen()  # an operator's reweighting is followed, after a verdict too

    # -- observations ----------------------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        stats = self._stats.get(outcome.arm)
        if stats is None:
            return
        stats.requests += 1
        if outcome.error:
            stats.errors += 1
        else:
            stats.latencies.append(outcome.latency_ms)
            limit = self.config.guardrails.latency_p95_ms_max
            if limit is not None and outcome.latency_ms > limit:
                stats.slow += 1
                self._guard_due = True
        # a guardrail's own bound only rises with a new error or slow answer; the incumbent's
        # moves slowly: look at every bad answer and every GUARD_EVERY answers (any schedule of
        # looks is valid for confidence sequences)
        if outcome.error or stats.requests % GUARD_EVERY == 0:
            self._guard_due = True
        if self._guard_due and self._guard_checks:
            self._dirty = True

    def feedback(self, feedback: Feedback) -> None:
        stats = self._stats.get(feedback.arm)
        if stats is None:
            return
        metric = self.config.metric
        if self.config.guardrails.reward_drop_max is not None and metric != "reward":
            reward = _finite(feedback.reward)
            if reward is not None:
                stats.rewards += 1
                delta = reward - stats.r_mean
                stats.r_mean += delta / stats.rewards
                stats.r_m2 += delta * (reward - stats.r_mean)
                self._guard_due = self._dirty = True
        if metric == "reward":
            reward = _finite(feedback.reward)
            if reward is None:
                return
            stats.n += 1
            delta = reward - stats.mean
            stats.mean += delta / stats.n
            stats.m2 += delta * (reward - stats.mean)
        else:
            success = _success(feedback, metric)
            if success is None:
                return
            stats.n += 1
            stats.successes += success
            if success:
                stats.seg_s += 1
            else:
                stats.seg_f += 1
        self._dirty = True

    # -- decisions -------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self._decision is not None and not self._dirty:
            return self._decision  # nothing new since the last call
        self._decision = self._evaluate()
        # a PROMOTE / ROLLBACK is said once: the next call re-evaluates and finds the experiment finished
        self._dirty = self._decision.verdict is not Verdict.HOLD
        return self._decision

    def _hold(self, reason: str, evidence: Mapping | None = None) -> Decision:
        return Decision(Verdict.HOLD, reason, self._weights_view, evidence=evidence)

    def _live(self) -> list[str]:
        return [a for a, w in self.weights.items() if w > 0]

    def _evaluate(self) -> Decision:
        if self.finished is not None:
            return self._hold(f"experiment finished: {self.finished}")
        live = self._live()
        if len(live) < 2:
            return self._hold(f"only arm {live[0]} gets traffic: nothing to compare")
        breach = self._guardrails(live)
        if breach is not None:
            return breach
        if self.winner is not None:
            return self._hold(f"{self.winner['reason']}; winner recorded, promote it through the admin endpoint",
                              self.winner["evidence"])
        if self.config.mode == "fixed_horizon":
            return self._fixed_horizon(live)
        return self._sequential(live)

    # -- the primary metric, sequential ----------------------------------------------------
    def _segment_log_e(self, pair: tuple[str, str]) -> float:
        """log e-value of the pair on the data since the split was last set (memoised per stream:
        a feedback moves one of the two)."""
        if self.config.metric == "reward":
            return 0.0  # the Gaussian mSPRT does not depend on the split: nothing to carry
        setup = self._pair_setup.get(pair)
        if setup is None:
            a, b = pair
            wa, wb = self.weights.get(a, 0.0), self.weights.get(b, 0.0)
            if wa <= 0 or wb <= 0:
                return 0.0
            share = wb / (wa + wb)
            setup = self._pair_setup[pair] = (share, self._mixture(share), [None, 0.0], [None, 0.0])
        share, mixture, s_memo, f_memo = setup
        sa, sb = self._stats[pair[0]], self._stats[pair[1]]
        s_state = (sb.seg_s, sa.seg_s + sb.seg_s)
        if s_memo[0] != s_state:
            s_memo[0], s_memo[1] = s_state, mixture.log_e(s_state[0], s_state[1], share)
        f_state = (sb.seg_f, sa.seg_f + sb.seg_f)
        if f_memo[0] != f_state:
            f_memo[0], f_memo[1] = f_state, mixture.log_e(f_state[0], f_state[1], share)
        return sq.combine_two_streams(s_memo[1], f_memo[1])

    def _mixture(self, share: float) -> sq.BetaMixture:
        key = round(share, 12)
        mixture = self._mixtures.get(key)
        if mixture is None:
            mixture = self._mixtures[key] = sq.two_arm_mixture(share, self.config.minimum_effect)
        return mixture

    def _pair_log_e(self, pair: tuple[str, str]) -> float:
        if self.config.metric == "reward":
            return self._reward_log_e(pair)[0]
        log_e = self._carried.get(pair, 0.0) + self._segment_log_e(pair)
        best = max(self._max_log_e.get(pair, -math.inf), log_e)
        self._max_log_e[pair] = best
        return log_e

    def _reward_log_e(self, pair: tuple[str, str]) -> tuple[float, float, float]:
        """(log Lambda, delta_hat b - a, variance) of the Gaussian mSPRT on a pair."""
        a, b = (self._stats[x] for x in pair)
        variance = a.variance() / a.n + b.variance() / b.n
        delta = b.mean - a.mean
        if self._tau2 is None:
            base = self._stats[self._incumbent] if self._stats[self._incumbent].n > 1 else a
            scale = abs(base.mean) if base.mean != 0 else math.sqrt(base.variance())
            self._tau2 = sq.normal_mixture_tau2(self.config.minimum_effect * (scale or 1.0))
        log_e = sq.normal_mixture_log_e(delta, variance, self._tau2)
        self._max_log_e[pair] = max(self._max_log_e.get(pair, -math.inf), log_e)
        return log_e, delta, variance

    def _plan(self, live: list[str]) -> tuple:
        """(pairs, pair of two arms in either order, alpha per pair, log threshold), per live set."""
        key = tuple(live)
        if self._plan_cache is None or self._plan_cache[0] != key:
            pairs = list(combinations(live, 2))
            lookup = {**{(a, b): (a, b) for a, b in pairs}, **{(b, a): (a, b) for a, b in pairs}}
            alpha_pair = sq.bonferroni(self.config.alpha, len(pairs))
            self._plan_cache = (key, pairs, lookup, alpha_pair, math.log(1.0 / alpha_pair))
        return self._plan_cache[1:]

    def _sequential(self, live: list[str]) -> Decision:
        cfg, metric, stats = self.config, self.config.metric, self._stats
        m = cfg.min_samples_per_arm
        ns = {a: stats[a].n for a in live}
        if min(ns.values()) < m:
            need, arm = max((m - n, a) for a, n in ns.items() if n < m)
            counts = ", ".join(f"{a}: {n}/{m}" for a, n in ns.items())
            return self._hold(f"need {need} more samples for arm {arm} ({metric} feedback {counts})")
        pairs, lookup, alpha_pair, threshold = self._plan(live)
        max_log_e = self._max_log_e
        for pair in pairs:
            self._pair_log_e(pair)
        total = sum(ns.values())
        held = self._held
        if held is not None and not self.equivalent and total - held[0] < HOLD_REFRESH and total < self._equivalence_at \
                and all(max_log_e[p] < threshold for p in pairs):
            return held[1]  # no verdict possible: the last HOLD stands (its figures refresh every HOLD_REFRESH)
        values = {a: stats[a].value(metric) for a in live}
        best = max(live, key=values.__getitem__)  # ties: the first declared
        others = [a for a in live if a != best]
        weakest = min(others, key=lambda a: max_log_e[lookup[best, a]])
        pair = lookup[best, weakest]
        top = values[best]
        if max_log_e[pair] >= threshold and all(top > values[a] for a in others):
            waiting = self._guardrails_waiting(live)
            if waiting:  # a winner is named only once every guardrail could have spoken
                return self._hold(f"arm {best} leads on {metric} with always-valid p={sq.p_value(max_log_e[pair]):.3g} "
                                  f"< {alpha_pair:.3g}; waiting for the guardrails' minimum samples ({waiting})")
            self._guard_due = True  # the guardrails look at the data the winner is named on
            breach = self._guardrails(live)
            if breach is not None:
                return breach
            return self._winner(best, others, pair, alpha_pair, len(pairs), live)
        if total >= self._equivalence_at:  # a confidence sequence per pair: looked at now and then
            self._equivalence_at = total + GUARD_EVERY
            self.equivalent = self._all_equivalent(pairs)
        evidence = self._evidence(pair, alpha_pair, live, bounds=False)
        if self.equivalent:
            return self._hold(
                f"no effect of {cfg.minimum_effect:.0%} or more between the arms on {metric} (every pair's confidence "
                f"sequence on the ratio lies within 1 +- {cfg.minimum_effect:g}): stop the test, keep the incumbent", evidence)
        split = f"; alpha {alpha_pair:.3g} per pair of {len(pairs)}" if len(pairs) > 1 else ""
        decision = self._hold(
            f"no winner on {metric} yet: {best} {top:.4g} vs {weakest} {values[weakest]:.4g}, "
            f"e-value {evidence['statistic']:.3g} < {1 / alpha_pair:.3g} (always-valid p={evidence['p_value']:.3g}; "
            f"n={ns[best]} vs {ns[weakest]}{split}); the test may be read at any time", evidence)
        self._held = (total, decision)
        return decision

    def _winner(self, best: str, others: list[str], pair: tuple[str, str], alpha_pair: float, n_pairs: int,
                live: list[str]) -> Decision:
        cfg, metric, stats = self.config, self.config.metric, self._stats
        evidence = self._evidence(pair, alpha_pair, live)
        values = ", ".join(f"{stats[a].value(metric):.4g}" for a in others)
        n_others = ", ".join(str(stats[a].n) for a in others)
        split = f"; alpha {alpha_pair:.3g} per pair of {n_pairs}" if n_pairs > 1 else ""
        reason = (
            f"arm {best} beats {', '.join(others)} on {metric}: {stats[best].value(metric):.4g} vs {values}, "
            f"always-valid p={evidence['p_value']:.3g} < {alpha_pair:.3g} (n={stats[best].n} vs {n_others}{split})"
        )
        self.winner = {
            "arm": best,
            "metric": metric,
            "value": stats[best].value(metric),
            "versus": {a: stats[a].value(metric) for a in others},
            "p_value": evidence["p_value"],
            "alpha": alpha_pair,
            "n": {a: stats[a].n for a in live},
            "reason": reason,
            "evidence": evidence,
        }
        if cfg.auto_promote:
            self.finished = f"{reason}; promoted automatically"
            return Decision(Verdict.PROMOTE, reason, {a: 1.0 if a == best else 0.0 for a in self.arms},
                            arm=best, evidence=evidence)
        return self._hold(f"{reason}; winner recorded, promote it through the admin endpoint", evidence)

    def _all_equivalent(self, pairs: list[tuple[str, str]]) -> bool:
        if self.config.metric == "reward":
            return False
        m = self.config.minimum_effect
        return all(lo >= 1.0 / (1.0 + m) and hi <= 1.0 + m for lo, hi in (self._ratio_bounds(p) for p in pairs))

    def _ratio_bounds(self, pair: tuple[str, str], alpha: float | None = None, kind: str = "success") -> tuple[float, float]:
        """Confidence sequence on p_b / p_a (pair = (a, b); ``kind`` failure: on (1 - p_b) / (1 - p_a))
        from the outcomes of the current split."""
        a, b = pair
        wa, wb = self.weights.get(a, 0.0), self.weights.get(b, 0.0)
        if wa <= 0 or wb <= 0:
            return 0.0, math.inf
        share = wb / (wa + wb)
        sa, sb = self._stats[a], self._stats[b]
        alpha = alpha if alpha is not None else self.config.alpha
        if kind == "success":
            cs = self._mixture(share).bounds(sb.seg_s, sa.seg_s + sb.seg_s, alpha)
        else:
            cs = self._mixture(share).bounds(sb.seg_f, sa.seg_f + sb.seg_f, alpha)
        return sq.rate_ratio_bounds(cs, share)

    def _evidence(self, pair: tuple[str, str], alpha_pair: float, live: list[str], bounds: bool = True) -> dict:
        """What a verdict rests on; ``bounds``: also the confidence sequences (dearer: verdicts)."""
        cfg = self.config
        log_e = self._max_log_e.get(pair, 0.0)
        evidence = {
            "method": "gaussian mSPRT (Johari et al.)" if cfg.metric == "reward" else
                      "exact conditional e-value, Beta mixtures (successes x failures)",
            "pair": list(pair),
            "statistic": math.exp(min(log_e, 700.0)),
            "p_value": sq.p_value(log_e),
            "alpha": alpha_pair,
            "alpha_total": cfg.alpha,
            "minimum_effect": cfg.minimum_effect,
            "samples": {a: self._stats[a].n for a in live},
        }
        if not bounds:
            return evidence
        if cfg.metric == "reward":
            _, delta, variance = self._reward_log_e(pair)
            radius = sq.normal_mixture_radius(variance, self._tau2 or 1.0, alpha_pair)
            evidence["bound"] = {"difference": [delta - radius, delta + radius]}
        else:
            evidence["bound"] = {
                f"{kind}_rate_ratio": [lo, hi if math.isfinite(hi) else None]
                for kind in ("success", "failure") for lo, hi in [self._ratio_bounds(pair, alpha_pair, kind)]
            }
        return evidence

    # -- the primary metric, fixed horizon -------------------------------------------------
    def _fixed_horizon(self, live: list[str]) -> Decision:
        cfg, metric, stats = self.config, self.config.metric, self._stats
        n_plan = self._planned or 0
        ns = {a: stats[a].n for a in live}
        if min(ns.values()) < n_plan:
            counts = ", ".join(f"{a}: {n}/{n_plan}" for a, n in ns.items())
            return self._hold(f"fixed horizon: collecting {n_plan} samples per arm, planned from power "
                              f"{cfg.power:g} at a {cfg.minimum_effect:.0%} effect ({counts}); no test before that")
        pairs, _, alpha_pair, _ = self._plan(live)
        best = max(live, key=lambda a: stats[a].value(metric))
        others = [a for a in live if a != best]
        p_values = {}
        for a in others:
            x, y = stats[best], stats[a]
            if metric == "reward":
                p_values[a] = sq.two_mean_z_p_value(x.mean, x.variance(), x.n, y.mean, y.variance(), y.n)
            else:
                p_values[a] = sq.two_proportion_z_p_value(x.successes, x.n, y.successes, y.n)
        p_max = max(p_values.values())
        evidence = {
            "method": "fixed horizon two-sided z-test at the planned size",
            "statistic": None,
            "p_value": p_max,
            "alpha": alpha_pair,
            "alpha_total": cfg.alpha,
            "minimum_effect": cfg.minimum_effect,
            "planned_per_arm": n_plan,
            "samples": ns,
        }
        values = ", ".join(f"{stats[a].value(metric):.4g}" for a in others)
        if p_max < alpha_pair:
            reason = (f"arm {best} beats {', '.join(others)} on {metric}: {stats[best].value(metric):.4g} vs {values}, "
                      f"p={p_max:.3g} < {alpha_pair:.3g} at the planned {n_plan} per arm")
            self.winner = {"arm": best, "metric": metric, "value": stats[best].value(metric),
                           "versus": {a: stats[a].value(metric) for a in others}, "p_value": p_max,
                           "alpha": alpha_pair, "n": ns, "reason": reason, "evidence": evidence}
            if cfg.auto_promote:
                self.finished = f"{reason}; promoted automatically"
                return Decision(Verdict.PROMOTE, reason, {a: 1.0 if a == best else 0.0 for a in self.arms},
                                arm=best, evidence=evidence)
            return self._hold(f"{reason}; winner recorded, promote it through the admin endpoint", evidence)
        self.finished = (f"no significant difference on {metric} at the planned {n_plan} per arm "
                         f"(p={p_max:.3g} >= {alpha_pair:.3g}): keep the incumbent")
        return self._hold(self.finished, evidence)

    # -- guardrails ------------------------------------------------------------------------
    def _guardrail_checks(self) -> list[str]:
        g, checks = self.config.guardrails, []
        if g.error_rate_increase_max is not None:
            checks.append("error_rate")
        if g.latency_p95_ms_max is not None:
            checks.append("latency_p95")
        if g.reward_drop_max is not None and self.config.metric != "reward":
            checks.append("reward")
        return checks

    def _guardrails_waiting(self, live: list[str]) -> str:
        """Which guardrail still lacks its minimum samples on some arm ("" when none)."""
        g, need = self.config.guardrails, []
        for check in self._guard_checks:
            for arm in live:
                s = self._stats[arm]
                have = s.rewards if check == "reward" else s.requests
                if have < g.min_samples:
                    need.append(f"{check} {arm} {have}/{g.min_samples}")
        return ", ".join(need)

    def _guardrails(self, live: list[str]) -> Decision | None:
        checks = self._guard_checks
        if not checks or not self._guard_due:
            return None
        self._guard_due = False
        g = self.config.guardrails
        inc = self._incumbent
        arms = [a for a in live if a != inc]
        # each check of each arm gets an even share; a comparison spends it on two sequences
        alpha_each = sq.bonferroni(g.alpha if g.alpha is not None else self.config.alpha, len(checks) * len(arms))
        base = self._stats[inc]
        for arm in arms:
            s = self._stats[arm]
            if "error_rate" in checks and s.requests >= g.min_samples and base.requests >= g.min_samples:
                mine = _JEFFREYS.bounds(s.errors, s.requests, alpha_each / 2)
                theirs = _JEFFREYS.bounds(base.errors, base.requests, alpha_each / 2)
                if mine.lower - theirs.upper > g.error_rate_increase_max:
                    return self._breach(arm, "error_rate", alpha_each, mine, theirs,
                                        f"error rate {mine.mean:.4f} vs incumbent {inc} {theirs.mean:.4f}: at least "
                                        f"{mine.lower - theirs.upper:+.4f} > the {g.error_rate_increase_max:g} tolerated")
            answered = s.requests - s.errors
            if "latency_p95" in checks and answered >= g.min_samples:
                slow = _JEFFREYS.bounds(s.slow, answered, alpha_each)
                if slow.lower > P95_EXCEEDANCE:
                    p95 = _percentile(sorted(s.latencies), 95)
                    return self._breach(arm, "latency_p95", alpha_each, slow, None,
                                        f"p95 latency {p95:.1f} ms > {g.latency_p95_ms_max:g} ms: at least "
                                        f"{slow.lower:.3f} of its answers are slower (> {P95_EXCEEDANCE:g})")
            if "reward" in checks and s.rewards >= g.min_samples and base.rewards >= g.min_samples:
                lo_mine, hi_mine = _mean_bounds(s.r_mean, s.r_m2, s.rewards, g.reward_drop_max, alpha_each / 2)
                lo_base, hi_base = _mean_bounds(base.r_mean, base.r_m2, base.rewards, g.reward_drop_max, alpha_each / 2)
                if hi_mine - lo_base < -g.reward_drop_max:
                    return self._breach(arm, "reward", alpha_each, (lo_mine, hi_mine), (lo_base, hi_base),
                                        f"mean reward {s.r_mean:.4g} vs incumbent {inc} {base.r_mean:.4g}: at most "
                                        f"{hi_mine - lo_base:+.4g} < -{g.reward_drop_max:g} tolerated")
        return None

    def _breach(self, arm: str, guardrail: str, alpha_each: float, mine, theirs, what: str) -> Decision:
        """ROLLBACK of ``arm``; a comparison spent ``alpha_each`` on two sequences, half each."""
        inc = self._incumbent

        def bound(cs):
            if cs is None:
                return None
            return cs.as_list() if isinstance(cs, sq.ConfidenceSequence) else list(cs)

        evidence = {
            "method": "guardrail: confidence sequences per arm (Beta mixture; Gaussian mixture for rewards)",
            "guardrail": guardrail,
            "statistic": None,
            "bound": {arm: bound(mine), **({inc: bound(theirs)} if theirs is not None else {})},
            "alpha": alpha_each,
            "alpha_total": self.config.guardrails.alpha if self.config.guardrails.alpha is not None else self.config.alpha,
            "minimum_effect": self.config.minimum_effect,
            "samples": {a: {"requests": self._stats[a].requests, "feedback": self._stats[a].n,
                            "rewards": self._stats[a].rewards} for a in (arm, inc)},
        }
        per_sequence = alpha_each / 2 if theirs is not None else alpha_each
        reason = (f"guardrail {guardrail} breached by arm {arm}: {what} (confidence "
                  f"sequence{'s' if theirs is not None else ''} at {per_sequence:.3g}{' each' if theirs is not None else ''}, "
                  f"valid at any time)")
        self.finished = f"rolled back: {reason}"
        return Decision(Verdict.ROLLBACK, reason, {a: 1.0 if a == inc else 0.0 for a in self.arms}, arm=arm,
                        evidence=evidence)

    def apply(self, decision: Decision) -> None:
        if decision.verdict is Verdict.PROMOTE and decision.arm is None and decision.weights:
            # a PROMOTE that only weights the arms: the heaviest one wins (ties: the first listed)
            decision = dataclasses.replace(decision, arm=max(decision.weights, key=decision.weights.__getitem__))
        super().apply(decision)  # ValueError for an undeclared arm, before anything changed
        if decision.verdict is Verdict.HOLD:
            return
        self._set({self.final: 1.0})  # the weights reported from now on
        if decision.verdict is Verdict.PROMOTE:
            self.finished = f"promoted {self.final} ({decision.reason or 'operator'})"
        else:
            self.finished = f"rolled back to {self.final} ({decision.reason or 'operator'})"

    def state(self) -> dict:
        metric = self.config.metric
        arms = {}
        for arm, s in self._stats.items():
            lat = sorted(s.latencies)
            arms[arm] = {
                "model_version": self.arms[arm],
                "weight": self.weights[arm],
                "requests": s.requests,
                "errors": s.errors,
                "error_rate": (s.errors / s.requests) if s.requests else 0.0,
                "latency_ms": {"window": len(lat), "p50": _percentile(lat, 50), "p95": _percentile(lat, 95),
                               "p99": _percentile(lat, 99)},
                "feedback": s.n,
                "successes": s.successes if metric != "reward" else None,
                metric: s.value(metric) if s.n else None,
            }
        return {
            "strategy": self.name,
            "metric": metric,
            "mode": self.config.mode,
            "sticky_key": self.config.sticky_key,
            "alpha": self.config.alpha,
            "minimum_effect": self.config.minimum_effect,
            "min_samples_per_arm": self.config.min_samples_per_arm,
            "planned_per_arm": self._planned,
            "weights": dict(self.weights),
            "arms": arms,
            "p_values": {f"{a}|{b}": sq.p_value(v) for (a, b), v in self._max_log_e.items()},
            "equivalent": self.equivalent,
            "winner": self.winner,
            "last_reason": self._decision.reason if self._decision is not None else None,
            "finished": self.finished,
        }


def _success(feedback: Feedback, metric: str) -> int | None:
    """1 / 0 for a binary metric, None when the feedback says nothing about it."""
    if metric == "accuracy":
        if feedback.label is None or feedback.prediction is None:
            return None
        return int(_same(feedback.label, feedback.prediction))
    # clicks: a click (or a positive reward) is a success; a feedback without one is a miss,
    # unless it only carries a label (that says nothing about clicks)
    if feedback.clicks:
        return 1
    reward = _finite(feedback.reward)
    if reward is not None:
        return int(reward > 0)
    if feedback.label is not None:
        return None
    return 0


def _finite(value) -> float | None:
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _mean_bounds(mean: float, m2: float, n: int, scale: float, alpha: float) -> tuple[float, float]:
    """Gaussian-mixture confidence sequence on one arm's mean reward (plug-in variance; mixing
    sd = the guardrail's tolerance, or the spread when the tolerance is 0)."""
    variance = (m2 / (n - 1) if n > 1 else 0.0) / max(n, 1)
    sd = math.sqrt(m2 / (n - 1)) if n > 1 else 1.0
    radius = sq.normal_mixture_radius(variance, sq.normal_mixture_tau2(scale or sd or 1.0), alpha)
    return mean - radius, mean + radius


def _planned_size(cfg: ABConfig, arms: int) -> int:
    alpha = sq.bonferroni(cfg.alpha, arms * (arms - 1) // 2)
    if cfg.metric == "reward":
        return sq.sample_size_two_means(cfg.minimum_effect * abs(cfg.baseline), cfg.baseline_sd, alpha, cfg.power)
    return sq.sample_size_two_proportions(cfg.baseline, cfg.baseline * (1 + cfg.minimum_effect), alpha, cfg.power)


def _normalise(weights: Mapping[str, float], arms: Mapping[str, str]) -> dict[str, float]:
    unknown = sorted(set(weights) - set(arms))
    if unknown:
        raise ValueError(f"weights name undeclared arm(s) {', '.join(unknown)}; arms: {', '.join(arms)}")
    values = {a: float(w) for a, w in weights.items()}
    if any(not (w >= 0 and math.isfinite(w)) for w in values.values()):
        raise ValueError(f"weights must be finite and >= 0, got {values}")
    total = sum(values.values())
    if total <= 0:
        raise ValueError(f"weights must have a positive sum, got {values}")
    return {a: values.get(a, 0.0) / total for a in arms}


@hookimpl
def register_traffic_strategies():
    return [ABStrategy]
