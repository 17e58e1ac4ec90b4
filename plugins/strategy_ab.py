"""Traffic strategy ``ab``: a sticky weighted split between arms, judged by a significance test.

Routing hashes ``(seed, key)`` with blake2b (stable across processes, unlike the salted builtin
``hash``) into the cumulative weight intervals: a user (``RouteRequest.key``, which the host
fills from the request field named by ``sticky_key``) always reaches the same arm while the
weights stay put; without a key the request id is hashed. Changing ``seed`` reshuffles users
between experiments.

Decisions, from feedback only (``Feedback.prediction`` vs ``label`` for ``accuracy``,
``Feedback.reward`` for ``reward``):

* until every arm with traffic has ``min_samples_per_arm`` feedback: HOLD "need N more samples";
* then at each *look* (every time the smallest per-arm sample crosses another multiple of
  ``min_samples_per_arm``), the best arm is tested against every other one: a pooled
  two-proportion z-test for accuracy, Welch's t-test for reward, both two-sided, with alpha
  Bonferroni-divided by the number of comparisons when there are more than two arms;
* significant against all others: the winner goes to ``state()["winner"]``; verdict PROMOTE
  if ``auto_promote`` else HOLD (an operator promotes through the admin endpoint);
* not significant: HOLD with the p-value and the per-arm sample size giving 80 % power at the
  observed effect.

Testing at looks rather than after every feedback limits the "peeking" inflation of the false
positive rate, but does not remove it: with many looks the real alpha is higher than nominal.
For a strict fixed-horizon test, set ``min_samples_per_arm`` to the sample size the power
figure asks for: the first look is then the only one that matters.
"""
from __future__ import annotations

import dataclasses
import math
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass, field
from hashlib import blake2b
from statistics import NormalDist
from typing import Dict, Mapping, Sequence

from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.strategy_tools import refuse_accuracy_for_regression as _refuse_accuracy
from framework.strategy_tools import nearest_rank_percentile as _percentile
from framework.strategy_tools import same_prediction as _same
from framework.hookspecs import hookimpl

LATENCY_WINDOW = 2048
METRICS = ("accuracy", "reward")
POWER = 0.8
_HASH_SPACE = 2**64
_NORMAL = NormalDist()


@dataclass
class ABConfig:
    #: arm -> traffic weight (normalised); empty: equal weights over every declared arm
    weights: Dict[str, float] = field(default_factory=dict)
    #: request field / header whose value the host passes as the sticky key (None: request id)
    sticky_key: str = "user_id"
    #: "accuracy" (label == prediction) or "reward" (Feedback.reward)
    metric: str = "accuracy"
    alpha: float = 0.05
    min_samples_per_arm: int = 100
    auto_promote: bool = False
    #: salt of the routing hash: a new seed reassigns users to arms
    seed: int = 0


class _ArmStats:
    __slots__ = ("requests", "errors", "latencies", "n", "successes", "mean", "m2")

    def __init__(self) -> None:
        self.requests = self.errors = self.n = self.successes = 0
        self.mean = self.m2 = 0.0  # Welford running mean / sum of squared deviations (reward)
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def value(self, metric: str) -> float:
        if metric == "accuracy":
            return self.successes / self.n if self.n else 0.0
        return self.mean

    def variance(self) -> float:
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0


class ABStrategy(TrafficStrategy):
    name = "ab"
    Config = ABConfig
    summary = "sticky weighted A/B split; z-test (accuracy) or Welch t-test (reward) picks the winner"
    sticky = True

    @classmethod
    def check_task(cls, config, task, key):
        _refuse_accuracy(cls.name, task, f"{key}.metric", config.metric == "accuracy",
                         "use metric: reward, with feedback rewards (e.g. minus the absolute error)")

    def __init__(self, config: ABConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        self._key = str(self.config.seed).encode()[:64]
        self._stats = {arm: _ArmStats() for arm in self.arms}
        self._incumbent = next(iter(self.arms))
        self.winner: dict | None = None
        self.finished: str | None = None
        self._look = 0  # looks already evaluated
        self._decision: Decision | None = None
        self._dirty = True
        self._set(_normalise(self.config.weights, self.arms) if self.config.weights else dict.fromkeys(self.arms, 1.0 / len(self.arms)))
        if self.config.metric == "reward":
            _student_t_sf(1.0, 10.0)  # import scipy now, not on the first look inside a request

    # -- plan-time validation --------------------------------------------------------------
    @classmethod
    def check_config(cls, config: ABConfig, key: str, refs: Mapping[str, type] | None = None) -> None:
        if config.metric not in METRICS:
            raise RecipeError(f"{key}.metric: '{config.metric}' is not one of {', '.join(METRICS)}")
        if not 0.0 < config.alpha < 1.0:
            raise RecipeError(f"{key}.alpha: significance level must be in (0, 1), got {config.alpha}")
        if config.min_samples_per_arm < 2:
            raise RecipeError(f"{key}.min_samples_per_arm: must be >= 2, got {config.min_samples_per_arm}")
        if not config.sticky_key:
            raise RecipeError(f"{key}.sticky_key: name the request field that identifies a user, e.g. user_id")
        bad = {a: w for a, w in config.weights.items() if not (w >= 0 and math.isfinite(w))}
        if bad:
            raise RecipeError(f"{key}.weights: weights must be finite and >= 0, got {bad}")

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

    def feedback(self, feedback: Feedback) -> None:
        stats = self._stats.get(feedback.arm)
        if stats is None:
            return
        if self.config.metric == "accuracy":
            if feedback.label is None or feedback.prediction is None:
                return
            stats.n += 1
            stats.successes += _same(feedback.label, feedback.prediction)
        else:
            try:
                reward = float(feedback.reward)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return
            if not math.isfinite(reward):
                return
            stats.n += 1
            delta = reward - stats.mean
            stats.mean += delta / stats.n
            stats.m2 += delta * (reward - stats.mean)
        self._dirty = True

    # -- decisions -------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self._decision is not None and not self._dirty:
            return self._decision  # nothing new since the last call (e.g. after an observe)
        self._decision = self._evaluate()
        # a PROMOTE is said once: the next call re-evaluates and finds the experiment finished
        self._dirty = self._decision.verdict is not Verdict.HOLD
        return self._decision

    def _hold(self, reason: str) -> Decision:
        return Decision(Verdict.HOLD, reason, self._weights_view)

    def _evaluate(self) -> Decision:
        if self.finished is not None:
            return self._hold(f"experiment finished: {self.finished}")
        metric, m = self.config.metric, self.config.min_samples_per_arm
        if self.winner is not None:
            return self._hold(f"{self.winner['reason']}; winner recorded, promote it through the admin endpoint")
        live = [a for a, w in self.weights.items() if w > 0]
        if len(live) < 2:
            return self._hold(f"only arm {live[0]} gets traffic: nothing to compare")
        ns = {a: self._stats[a].n for a in live}
        short = [(m - n, a) for a, n in ns.items() if n < m]
        if short:
            need, arm = max(short)
            counts = ", ".join(f"{a}: {n}/{m}" for a, n in ns.items())
            return self._hold(f"need {need} more samples for arm {arm} ({metric} feedback {counts})")
        look = min(ns.values()) // m
        if look <= self._look and self._decision is not None:
            # between looks the last look's verdict stands (with the current weights)
            return self._hold(self._decision.reason)
        self._look = look
        return self._test(live, look)

    def _test(self, live: list[str], look: int) -> Decision:
        metric, stats = self.config.metric, self._stats
        best = max(live, key=lambda a: stats[a].value(metric))  # ties: the first declared
        others = [a for a in live if a != best]
        alpha = self.config.alpha / len(others)  # Bonferroni over the best-vs-other comparisons
        tests = {a: self._compare(stats[best], stats[a], alpha) for a in others}
        weakest = max(others, key=lambda a: tests[a][0])
        p_max = tests[weakest][0]
        values = ", ".join(f"{stats[a].value(metric):.3f}" for a in others)
        ns = ", ".join(str(stats[a].n) for a in others)
        corrected = f"; Bonferroni alpha {alpha:.3g}" if len(others) > 1 else ""
        if p_max < alpha:
            reason = (
                f"arm {best} beats {', '.join(others)} on {metric}: {stats[best].value(metric):.3f} vs {values}, "
                f"p={p_max:.3g} (n={stats[best].n} vs {ns}{corrected})"
            )
            self.winner = {
                "arm": best,
                "metric": metric,
                "value": stats[best].value(metric),
                "versus": {a: stats[a].value(metric) for a in others},
                "p_value": p_max,
                "alpha": alpha,
                "n": {a: stats[a].n for a in live},
                "reason": reason,
            }
            if self.config.auto_promote:
                self.finished = f"{reason}; promoted automatically"
                return Decision(Verdict.PROMOTE, reason, {a: 1.0 if a == best else 0.0 for a in self.arms}, arm=best)
            return self._hold(f"{reason}; winner recorded, promote it through the admin endpoint")
        needed = [tests[a][1] for a in others]
        if any(n is None for n in needed):
            power = "no observed difference, so no sample size reaches 80% power"
        else:
            power = f"~{max(needed)} samples per arm needed for 80% power at the observed effect"
        m = self.config.min_samples_per_arm
        return self._hold(
            f"no significant difference on {metric} yet (look {look}): {best} {stats[best].value(metric):.3f} vs "
            f"{weakest} {stats[weakest].value(metric):.3f}, p={p_max:.3g} >= alpha {alpha:.3g} "
            f"(n={stats[best].n} vs {stats[weakest].n}); {power}; next look at {(look + 1) * m} per arm"
        )

    def _compare(self, a: _ArmStats, b: _ArmStats, alpha: float) -> tuple[float, int | None]:
        """(two-sided p-value, per-arm n for 80 % power at the observed effect) of a vs b."""
        z_a = _NORMAL.inv_cdf(1 - alpha / 2)
        z_b = _NORMAL.inv_cdf(POWER)
        if self.config.metric == "accuracy":
            p1, p2 = a.value("accuracy"), b.value("accuracy")
            pooled = (a.successes + b.successes) / (a.n + b.n)
            se = math.sqrt(pooled * (1 - pooled) * (1 / a.n + 1 / b.n))
            p_value = math.erfc(abs(p1 - p2) / se / math.sqrt(2)) if se > 0 else 1.0
            if p1 == p2:
                return p_value, None
            bar = (p1 + p2) / 2
            root = z_a * math.sqrt(2 * bar * (1 - bar)) + z_b * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
            return p_value, math.ceil((root / (p1 - p2)) ** 2)
        v1, v2 = a.variance() / a.n, b.variance() / b.n
        delta = a.mean - b.mean
        se = math.sqrt(v1 + v2)
        if se == 0:
            return (1.0 if delta == 0 else 0.0), None
        df = (v1 + v2) ** 2 / (v1**2 / (a.n - 1) + v2**2 / (b.n - 1)) if (v1 or v2) else float(a.n + b.n - 2)
        p_value = 2 * _student_t_sf(abs(delta) / se, df)
        if delta == 0:
            return p_value, None
        return p_value, math.ceil((z_a + z_b) ** 2 * (a.variance() + b.variance()) / delta**2)

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
                "latency_ms": {"window": len(lat), "p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
                "feedback": s.n,
                "successes": s.successes if metric == "accuracy" else None,
                metric: s.value(metric) if s.n else None,
            }
        return {
            "strategy": self.name,
            "metric": metric,
            "sticky_key": self.config.sticky_key,
            "alpha": self.config.alpha,
            "min_samples_per_arm": self.config.min_samples_per_arm,
            "weights": dict(self.weights),
            "arms": arms,
            "looks": self._look,
            "winner": self.winner,
            "last_reason": self._decision.reason if self._decision is not None else None,
            "finished": self.finished,
        }


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


def _student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (scipy, imported on first use)."""
    from scipy.special import stdtr

    return float(stdtr(df, -t))


@hookimpl
def register_traffic_strategies():
    return [ABStrategy]
