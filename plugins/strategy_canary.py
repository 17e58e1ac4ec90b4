"""Traffic strategy ``canary``: step the challenger's share of traffic up, gate by gate, window by window.

Arms: exactly ``champion`` and ``challenger`` (names configurable). The challenger answers
``steps[i]`` percent of requests, chosen by hashing ``(seed, key)`` (the request id without a
key): deterministic, sticky per user, and monotone: a user sent to the challenger at 5 % stays
there at 25 %.

**Windows.** One window per step. ``window_requests`` is the total traffic a window is sized
for; it closes once the *challenger* has answered ``max(ceil(window_requests * step / 100),
min_challenger_requests)`` requests (so a 5 % step is not judged on 25 answers), and, when the
accuracy gate is on, once both arms have ``gates.min_feedback`` labelled answers (the champion's
reference falls back to the whole rollout when it got too few in this window, e.g. at 100 %).
Feedback counts toward the window it arrives in. At the close: any gate fails -> ROLLBACK; all
pass -> the next step (HOLD "step 25% -> 50%"); the last step passed -> PROMOTE.

**Gates are tests, not point comparisons**, so a healthy challenger is not rolled back by noise
in a 50-request window: a gate fails only when the evidence that the challenger breaks it is
significant at one-sided ``gates.alpha`` (default 0.05):

* ``error_rate_max``: exact binomial test of H0 "error rate <= error_rate_max" on the window's
  challenger answers, and again on all its answers since the rollout began (more power at the
  later steps, at no cost to a healthy canary). Equivalent: the Clopper-Pearson lower bound
  exceeds the max. With the defaults, a 5 % error challenger is caught within 3 windows (miss
  rate ~1e-4 per rollout) while 0.1 % background errors cause a false rollback in ~3e-5 of
  rollouts. The critical error count of the window is computed when it opens, so the moment the
  challenger's errors alone reach it, the rollback is immediate (no wait for the window's end);
* ``p99_latency_ms_max``: the same binomial test on the number of answers slower than the max
  (H0: at most 1 % of answers are, i.e. p99 <= max): counters only, no sorting per request;
* ``accuracy_delta_min``: one-sided z-test (Agresti-Caffo adjusted) of H0 "challenger accuracy -
  champion accuracy >= accuracy_delta_min".

Once ROLLBACK or PROMOTE has been returned, ``decide()`` holds ("rollout finished: ...");
routing changes only when the host calls ``apply()`` with the verdict. An operator's PROMOTE
that names the champion (``Decision.arm``) ends the rollout with the champion answering everything.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from hashlib import blake2b
from statistics import NormalDist
from typing import List, Mapping, Optional, Sequence

from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.strategy_tools import refuse_accuracy_for_regression as _refuse_accuracy
from framework.strategy_tools import nearest_rank_percentile as _percentile
from framework.strategy_tools import same_prediction as _same
from framework.hookspecs import hookimpl

LATENCY_WINDOW = 2048
HISTORY_KEPT = 100
#: share of answers allowed above p99_latency_ms_max: that is what "p99 <= max" means
P99_EXCEEDANCE = 0.01
_HASH_SPACE = 2**64
_NORMAL = NormalDist()


@dataclass
class Gates:
    #: challenger error rate allowed per window
    error_rate_max: float = 0.01
    #: challenger p99 latency allowed per window (None: no latency gate)
    p99_latency_ms_max: Optional[float] = None
    #: smallest accepted challenger accuracy minus champion accuracy (None: no accuracy gate)
    accuracy_delta_min: Optional[float] = None
    #: labelled answers per arm a window needs before the accuracy gate can judge it
    min_feedback: int = 30
    #: one-sided significance level of every gate's test
    alpha: float = 0.05


@dataclass
class CanaryConfig:
    champion: str = "champion"
    challenger: str = "challenger"
    #: percent of traffic to the challenger at each step: increasing, in (0, 100]
    steps: List[float] = field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0])
    #: total requests a window is sized for; the challenger's share of it closes the window
    window_requests: int = 500
    #: fewest challenger answers a window is judged on
    min_challenger_requests: int = 50
    gates: Gates = field(default_factory=Gates)
    #: salt of the routing hash: a new seed picks other users for the canary
    seed: int = 0


class _Counts:
    """One arm's counters (cumulative, or one window's)."""

    __slots__ = ("requests", "errors", "slow", "latencies", "labelled", "correct")

    def __init__(self) -> None:
        self.requests = self.errors = self.slow = self.labelled = self.correct = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": (self.errors / self.requests) if self.requests else 0.0,
            "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
            "labelled": self.labelled,
            "accuracy": (self.correct / self.labelled) if self.labelled else None,
        }


class CanaryStrategy(TrafficStrategy):
    name = "canary"
    Config = CanaryConfig
    summary = "steps the challenger's traffic share up; statistical gates roll back or promote per window"
    sticky = True

    @classmethod
    def check_task(cls, config, task, key):
        _refuse_accuracy(cls.name, task, f"{key}.gates.accuracy_delta_min", config.gates.accuracy_delta_min is not None,
                         "leave it unset: the error-rate and latency gates judge a regression's rollout")

    def __init__(self, config: CanaryConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        self.champion, self.challenger = self.routable  # incumbent() and candidate() by default
        self.steps = [float(s) for s in self.config.steps]
        self._key = str(self.config.seed).encode()[:64]
        self._total = {self.champion: _Counts(), self.challenger: _Counts()}
        self._rollout = {self.champion: _Counts(), self.challenger: _Counts()}  # since the rollout began
        self.history: deque[dict] = deque(maxlen=HISTORY_KEPT)
        self.finished: str | None = None
        self.window = 0
        self._set_percent(self.steps[0])
        self._open_window()

    # -- plan-time validation --------------------------------------------------------------
    @classmethod
    def check_config(cls, config: CanaryConfig, key: str, refs: Mapping[str, type] | None = None) -> None:
        steps = list(config.steps)
        if not steps:
            raise RecipeError(f"{key}.steps: give at least one percentage, e.g. [5, 25, 50, 100]")
        if any(not 0 < s <= 100 for s in steps):
            raise RecipeError(f"{key}.steps: every step is a percent of traffic in (0, 100], got {steps}")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise RecipeError(f"{key}.steps: steps must strictly increase, got {steps}")
        if config.window_requests < 1:
            raise RecipeError(f"{key}.window_requests: must be >= 1, got {config.window_requests}")
        if config.min_challenger_requests < 1:
            raise RecipeError(f"{key}.min_challenger_requests: must be >= 1, got {config.min_challenger_requests}")
        if config.champion == config.challenger:
            raise RecipeError(f"{key}.challenger: must differ from {key}.champion ('{config.champion}')")
        g = config.gates
        if not 0.0 <= g.error_rate_max <= 1.0:
            raise RecipeError(f"{key}.gates.error_rate_max: a rate in [0, 1], got {g.error_rate_max}")
        if g.p99_latency_ms_max is not None and not g.p99_latency_ms_max > 0:
            raise RecipeError(f"{key}.gates.p99_latency_ms_max: milliseconds > 0, got {g.p99_latency_ms_max}")
        if g.accuracy_delta_min is not None and not -1.0 <= g.accuracy_delta_min <= 1.0:
            raise RecipeError(f"{key}.gates.accuracy_delta_min: an accuracy difference in [-1, 1], got {g.accuracy_delta_min}")
        if g.min_feedback < 1:
            raise RecipeError(f"{key}.gates.min_feedback: must be >= 1, got {g.min_feedback}")
        if not 0.0 < g.alpha < 0.5:
            raise RecipeError(f"{key}.gates.alpha: one-sided significance level in (0, 0.5), got {g.alpha}")

    @classmethod
    def arm_names(cls, config: CanaryConfig | None, arms: Mapping[str, str]) -> Sequence[str]:
        champion = getattr(config, "champion", "champion")
        challenger = getattr(config, "challenger", "challenger")
        declared = list(arms)
        missing = [a for a in (champion, challenger) if a not in arms]
        extra = [a for a in declared if a not in (champion, challenger)]
        if missing or extra:
            problems = "; ".join(
                p for p in (missing and f"missing {', '.join(missing)}", extra and f"unexpected {', '.join(extra)}") if p
            )
            raise RecipeError(
                f"serve.models: strategy 'canary' needs exactly two arms, strategy.champion='{champion}' and "
                f"strategy.challenger='{challenger}'; serve.models declares {', '.join(declared) or 'none'} "
                f"({problems}). Rename the arms, or set strategy.champion / strategy.challenger."
            )
        return [champion, challenger]

    # -- routing ---------------------------------------------------------------------------
    def _set_percent(self, percent: float) -> None:
        self.percent = percent
        self._threshold = int(percent / 100 * _HASH_SPACE)
        self._to_champion = Route(self.champion)
        self._to_challenger = Route(self.challenger)
        # 0 % and 100 % need no hash
        self._fixed = self._to_champion if percent <= 0 else self._to_challenger if percent >= 100 else None
        self._weights = {self.champion: 1.0 - percent / 100, self.challenger: percent / 100}

    def choose(self, request: RouteRequest) -> Route:
        if self._fixed is not None:
            return self._fixed
        key = request.key if request.key is not None else request.request_id
        h = int.from_bytes(blake2b(key.encode(), digest_size=8, key=self._key).digest(), "big")
        return self._to_challenger if h < self._threshold else self._to_champion

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Operator override of the challenger's share; a running rollout restarts its window there
        and advances to the next configured step above it."""
        unknown = sorted(set(weights) - {self.champion, self.challenger})
        values = [float(w) for w in weights.values()]
        if unknown or any(not (w >= 0 and math.isfinite(w)) for w in values) or sum(values) <= 0:
            raise ValueError(
                f"canary weights are over {self.champion} and {self.challenger}, >= 0 with a positive sum; got {dict(weights)}"
            )
        percent = 100.0 * float(weights.get(self.challenger, 0.0)) / sum(values)
        if self.finished is None:
            self._record("reweighted", f"operator set the challenger's share to {_pct(percent)}; window restarted")
        self._set_percent(percent)
        self.reopen()  # an operator's reweighting is followed, after a verdict too
        if self.finished is None:
            self._open_window()

    # -- observations ----------------------------------------------------------------------
    def observe(self, outcome: Outcome) -> None:
        arm = outcome.arm
        total = self._total.get(arm)
        if total is None:
            return
        counts = (total, self._rollout[arm], self._win[arm]) if self.finished is None else (total,)
        slow = self._slow_ms is not None and not outcome.error and outcome.latency_ms > self._slow_ms
        for c in counts:
            c.requests += 1
            if outcome.error:
                c.errors += 1
            else:
                c.latencies.append(outcome.latency_ms)
                c.slow += slow

    def feedback(self, feedback: Feedback) -> None:
        total = self._total.get(feedback.arm)
        if total is None or feedback.label is None or feedback.prediction is None:
            return
        correct = _same(feedback.label, feedback.prediction)
        counts = (total, self._rollout[feedback.arm], self._win[feedback.arm]) if self.finished is None else (total,)
        for c in counts:
            c.labelled += 1
            c.correct += correct

    # -- windows ---------------------------------------------------------------------------
    def _open_window(self) -> None:
        self.window += 1
        self._win = {self.champion: _Counts(), self.challenger: _Counts()}
        g = self.config.gates
        self._target = max(math.ceil(self.config.window_requests * self.percent / 100), self.config.min_challenger_requests)
        # critical error counts, computed once: decide() then only compares integers
        self._crit_window = _critical(self._target, g.error_rate_max, g.alpha)
        self._crit_rollout = _critical(self._rollout[self.challenger].requests + self._target, g.error_rate_max, g.alpha)
        self._slow_ms = g.p99_latency_ms_max

    def decide(self) -> Decision:
        if self.finished is not None:
            return self._finished_hold
        win = self._win[self.challenger]
        if win.requests < self._target:
            if win.errors >= self._crit_window or self._rollout[self.challenger].errors >= self._crit_rollout:
                return self._finish(Verdict.ROLLBACK, self._immediate_error_reason())
            return Decision(
                Verdict.HOLD,
                f"window {self.window} (step {_pct(self.percent)}): {win.requests}/{self._target} challenger requests",
                self._weights,
            )
        g = self.config.gates
        if g.accuracy_delta_min is not None:
            champ = self._champion_reference()
            if win.labelled < g.min_feedback or champ.labelled < g.min_feedback:
                return Decision(
                    Verdict.HOLD,
                    f"window {self.window} (step {_pct(self.percent)}): waiting for feedback, "
                    f"{self.challenger} {win.labelled}/{g.min_feedback}, {self.champion} {champ.labelled}/{g.min_feedback} labelled",
                    self._weights,
                )
        return self._close_window()

    def _close_window(self) -> Decision:
        failure = self._error_gate() or self._latency_gate() or self._accuracy_gate()
        if failure:
            return self._finish(Verdict.ROLLBACK, failure)
        record = self._record("pass", "all gates passed")
        nxt = next((s for s in self.steps if s > self.percent), None)
        if nxt is None:
            return self._finish(
                Verdict.PROMOTE, f"challenger passed all steps ({', '.join(_pct(s) for s in self.steps)}) in {self.window} windows"
            )
        reason = f"step {_pct(self.percent)} -> {_pct(nxt)}: window {self.window} passed ({record['summary']})"
        self._set_percent(nxt)
        self._open_window()
        return Decision(Verdict.HOLD, reason, self._weights)

    def _where(self, since_start: bool = False) -> str:
        windows = f"windows 1-{self.window}" if since_start and self.window > 1 else f"window {self.window}"
        return f"{windows}, step {_pct(self.percent)}"

    def _error_gate(self) -> str | None:
        """At the window's close: the window's answers, then every answer since the rollout began."""
        g, win, rollout = self.config.gates, self._win[self.challenger], self._rollout[self.challenger]
        if win.errors >= _critical(win.requests, g.error_rate_max, g.alpha):
            return self._error_reason(win.requests, win.errors, self._where())
        if rollout.errors >= _critical(rollout.requests, g.error_rate_max, g.alpha):
            return self._error_reason(rollout.requests, rollout.errors, self._where(since_start=True))
        return None

    def _immediate_error_reason(self) -> str:
        """Errors alone already fail the test the window will run at its close, whatever follows."""
        win, rollout = self._win[self.challenger], self._rollout[self.challenger]
        if win.errors >= self._crit_window:
            n, k, where = win.requests, win.errors, self._where()
            tolerated, scope = self._crit_window - 1, f"the whole {self._target}-request window"
        else:
            n, k, where = rollout.requests, rollout.errors, self._where(since_start=True)
            ahead = rollout.requests - win.requests + self._target
            tolerated, scope = self._crit_rollout - 1, f"the rollout's {ahead} requests up to this window's end"
        return self._error_reason(n, k, where) + f"; immediate: {k} errors already exceed the {tolerated} tolerated over {scope}"

    def _error_reason(self, n: int, k: int, where: str) -> str:
        g = self.config.gates
        p = _upper_tail(k, n, g.error_rate_max)
        return (
            f"error_rate {k / n:.3f} > {g.error_rate_max:g} over {n} challenger requests ({where}): "
            f"{k} errors, one-sided binomial p={p:.2g} < alpha {g.alpha:g}"
        )

    def _latency_gate(self) -> str | None:
        g, win = self.config.gates, self._win[self.challenger]
        if g.p99_latency_ms_max is None:
            return None
        answered = win.requests - win.errors
        if answered == 0 or win.slow < _critical(answered, P99_EXCEEDANCE, g.alpha):
            return None
        p99 = _percentile(sorted(win.latencies), 99)
        p = _upper_tail(win.slow, answered, P99_EXCEEDANCE)
        return (
            f"p99_latency_ms {p99:.1f} > {g.p99_latency_ms_max:g} over {answered} challenger requests ({self._where()}): "
            f"{win.slow} answers slower than {g.p99_latency_ms_max:g} ms, one-sided binomial p={p:.2g} < alpha {g.alpha:g}"
        )

    def _champion_reference(self) -> _Counts:
        win = self._win[self.champion]
        return win if win.labelled >= self.config.gates.min_feedback else self._rollout[self.champion]

    def _accuracy_gate(self) -> str | None:
        g = self.config.gates
        if g.accuracy_delta_min is None:
            return None
        ch, ref = self._win[self.challenger], self._champion_reference()
        delta = ch.correct / ch.labelled - ref.correct / ref.labelled
        # Agresti-Caffo: add one success and one failure per arm, so 30/30 vs 29/30 has a spread
        pc, pr = (ch.correct + 1) / (ch.labelled + 2), (ref.correct + 1) / (ref.labelled + 2)
        se = math.sqrt(pc * (1 - pc) / (ch.labelled + 2) + pr * (1 - pr) / (ref.labelled + 2))
        p = _NORMAL.cdf(((pc - pr) - g.accuracy_delta_min) / se)
        if p >= g.alpha:
            return None
        scope = "" if ref is self._win[self.champion] else " since the rollout began"
        return (
            f"accuracy_delta {delta:+.3f} < {g.accuracy_delta_min:+g} (challenger {ch.correct / ch.labelled:.3f} on "
            f"{ch.labelled} vs champion {ref.correct / ref.labelled:.3f} on {ref.labelled} labelled{scope}; "
            f"{self._where()}): one-sided p={p:.2g} < alpha {g.alpha:g}"
        )

    def _record(self, verdict: str, reason: str) -> dict:
        ch, champ = self._win[self.challenger].summary(), self._win[self.champion].summary()
        delta = None
        if ch["accuracy"] is not None and champ["accuracy"] is not None:
            delta = ch["accuracy"] - champ["accuracy"]
        p99 = ch["latency_ms"]["p99"]
        summary = (
            f"error_rate {ch['error_rate']:.3f} over {ch['requests']} challenger requests"
            + (f", p99 {p99:.1f} ms" if p99 is not None else "")
            + (f", accuracy delta {delta:+.3f}" if delta is not None else "")
        )
        record = {
            "window": self.window,
            "percent": self.percent,
            "target": self._target,
            "challenger": ch,
            "champion": champ,
            "accuracy_delta": delta,
            "verdict": verdict,
            "reason": reason,
            "summary": summary,
        }
        self.history.append(record)
        return record

    def _finish(self, verdict: Verdict, reason: str) -> Decision:
        if verdict is Verdict.ROLLBACK:
            self._record("rollback", reason)
        else:
            self.history[-1]["verdict"] = "promote"
        self.finished = f"{verdict.value}: {reason}"
        self._finished_hold = Decision(Verdict.HOLD, f"rollout finished: {self.finished}", self._weights)
        target = self.champion if verdict is Verdict.ROLLBACK else self.challenger
        # arm: the challenger either way (promoted, or the one traffic is taken away from)
        return Decision(verdict, reason, {self.champion: 0.0, self.challenger: 0.0, target: 1.0}, arm=self.challenger)

    def apply(self, decision: Decision) -> None:
        super().apply(decision)  # PROMOTE: decision.arm or the challenger; ROLLBACK: the champion
        if decision.verdict is Verdict.HOLD:
            return
        self._set_percent(100.0 if self.final == self.challenger else 0.0)  # the share reported from now on
        if self.finished is None:  # an operator's verdict ends the rollout too
            self.finished = f"{decision.verdict.value} by operator: {decision.reason or 'no reason given'}"
            self._record(decision.verdict.value, self.finished)
        self._finished_hold = Decision(Verdict.HOLD, f"rollout finished: {self.finished}", self._weights)

    def state(self) -> dict:
        return {
            "strategy": self.name,
            "champion": self.champion,
            "challenger": self.challenger,
            "models": dict(self.arms),
            "steps": list(self.steps),
            "step": next((i + 1 for i, s in enumerate(self.steps) if s >= self.percent), len(self.steps)),
            "percent": self.percent,
            "window": self.window,
            "window_progress": {"challenger_requests": self._win[self.challenger].requests, "target": self._target},
            "window_arms": {arm: c.summary() for arm, c in self._win.items()},
            "arms": {arm: c.summary() for arm, c in self._total.items()},
            "gates": {
                "error_rate_max": self.config.gates.error_rate_max,
                "p99_latency_ms_max": self.config.gates.p99_latency_ms_max,
                "accuracy_delta_min": self.config.gates.accuracy_delta_min,
                "alpha": self.config.gates.alpha,
                "errors_tolerated_this_window": self._crit_window - 1,
            },
            "history": list(self.history),
            "finished": self.finished,
        }


# ---------------------------------------------------------------------------------------------
# Exact binomial tail, pure Python (no scipy on the serving path)
# ---------------------------------------------------------------------------------------------
def _log_pmf(j: int, n: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(p) + (n - j) * math.log1p(-p)


def _upper_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), summed upward so tiny tails keep their precision."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if p >= 1.0:
        return 1.0
    total, mode = 0.0, n * p
    for j in range(k, n + 1):
        term = math.exp(_log_pmf(j, n, p))
        total += term
        if j > mode and term < total * 1e-16:
            break
    return min(total, 1.0)


def _critical(n: int, p: float, alpha: float) -> int:
    """Smallest k with P(X >= k) <= alpha for X ~ Binomial(n, p): k or more failures reject
    "rate <= p" at one-sided level alpha. n + 1 when no count can."""
    if p <= 0.0:
        return 1
    if p >= 1.0 or n <= 0:
        return n + 1
    cdf = 0.0
    for k in range(n + 1):
        cdf += math.exp(_log_pmf(k, n, p))
        if 1.0 - cdf <= alpha:  # P(X >= k + 1)
            return k + 1
    return n + 1


def _pct(percent: float) -> str:
    return f"{percent:g}%"


@hookimpl
def register_traffic_strategies():
    return [CanaryStrategy]
