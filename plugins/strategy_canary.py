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

**Gates are anytime-valid tests, not point comparisons**, so a healthy challenger is not rolled
back by noise in a 50-request window, and the number of windows does not inflate the chance of a
false rollback: every gate is a confidence sequence (``framework.sequential.BetaMixture``) over
the challenger's answers *since the rollout began*, looked at after every bad answer and at every
window's close, valid at all those looks at once. ``gates.alpha`` (what the user declares: the
chance of rolling back a challenger that meets every gate) is split evenly over the active gates:

* ``error_rate_max``: ROLLBACK once the lower confidence bound of the challenger's error rate
  exceeds the max (after ``min_challenger_requests`` answers: not on a warm-up hiccup alone). It
  is looked at on every challenger error, so a failing challenger is rolled back the moment the
  evidence suffices, without waiting for the window's end. With the
  defaults, a 5% error challenger is caught within 3 windows while 0.1% background errors
  practically never cause a rollback;
* ``p99_latency_ms_max``: the same on the share of answers slower than the max (H0: at most 1%
  are, i.e. p99 <= max): counters only, no sorting per request;
* ``accuracy_delta_min``: ROLLBACK once the challenger's upper accuracy bound minus the champion's
  lower one falls below ``accuracy_delta_min`` (each bound at half the gate's alpha; the champion's
  labelled answers since the rollout began);
* ``reward_delta_min`` (a business metric from ``Feedback.reward``: revenue, clicks): the same on
  the mean reward, with Gaussian-mixture confidence sequences (Johari et al.; plug-in variance).

A window that passes every gate moves to the next step; passing the last one PROMOTES: a canary
promotes on *no evidence of harm* at the declared tolerances (its power grows with the window
sizes), and its ROLLBACK is the error-controlled verdict. Verdicts carry ``Decision.evidence``:
each gate's bound, the samples, alpha.

Once ROLLBACK or PROMOTE has been returned, ``decide()`` holds ("rollout finished: ...");
routing changes only when the host calls ``apply()`` with the verdict. An operator's PROMOTE
that names the champion (``Decision.arm``) ends the rollout with the champion answering everything.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import List, Mapping, Optional, Sequence

from framework import sequential as sq
from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.strategy_tools import finite_or_none as _finite
from framework.strategy_tools import refuse_accuracy_for_regression as _refuse_accuracy
from framework.strategy_tools import nearest_rank_percentile as _percentile
from framework.strategy_tools import same_prediction as _same
from framework.hookspecs import hookimpl

LATENCY_WINDOW = 2048
HISTORY_KEPT = 100
#: share of answers allowed above p99_latency_ms_max: that is what "p99 <= max" means
P99_EXCEEDANCE = 0.01
_HASH_SPACE = 2**64
_BOUNDS = sq.BetaMixture.jeffreys()
#: labelled answers between two looks of the accuracy gate (besides every window's close)
ACCURACY_LOOK_EVERY = 32


@dataclass
class Gates:
    #: challenger error rate allowed per window
    error_rate_max: float = 0.01
    #: challenger p99 latency allowed per window (None: no latency gate)
    p99_latency_ms_max: Optional[float] = None
    #: smallest accepted challenger accuracy minus champion accuracy (None: no accuracy gate)
    accuracy_delta_min: Optional[float] = None
    #: smallest accepted challenger mean Feedback.reward minus the champion's (a business metric
    #: from feedback: revenue, clicks...); None: no reward gate
    reward_delta_min: Optional[float] = None
    #: labelled answers per arm a window needs before the accuracy gate can judge it (rewards per
    #: arm before the reward gate can)
    min_feedback: int = 30
    #: chance of rolling back a challenger that meets every gate, over the whole rollout (split
    #: evenly over the active gates)
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

    __slots__ = ("requests", "errors", "slow", "latencies", "labelled", "correct", "rewards", "r_mean", "r_m2")

    def __init__(self) -> None:
        self.requests = self.errors = self.slow = self.labelled = self.correct = self.rewards = 0
        self.r_mean = self.r_m2 = 0.0  # Welford mean / squared deviations of Feedback.reward
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def add_reward(self, reward: float) -> None:
        self.rewards += 1
        delta = reward - self.r_mean
        self.r_mean += delta / self.rewards
        self.r_m2 += delta * (reward - self.r_mean)

    def summary(self) -> dict:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": (self.errors / self.requests) if self.requests else 0.0,
            "latency_ms": {"p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
            "labelled": self.labelled,
            "accuracy": (self.correct / self.labelled) if self.labelled else None,
            "rewards": self.rewards,
            "reward_mean": self.r_mean if self.rewards else None,
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
        self._look_due = False
        self._labels_since_look = 0
        g = self.config.gates
        gates = [name for name, on in (("error_rate", True), ("latency", g.p99_latency_ms_max is not None),
                                       ("accuracy", g.accuracy_delta_min is not None),
                                       ("reward", g.reward_delta_min is not None)) if on]
        self._alpha_gate = sq.bonferroni(self.config.gates.alpha, len(gates))
        # mixtures placed where harm lies, a few times the tolerated rate: more power than a flat one
        self._error_mixture = _rate_mixture(self.config.gates.error_rate_max)
        self._slow_mixture = _rate_mixture(P99_EXCEEDANCE)
        self._gates = gates
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
        if g.reward_delta_min is not None and not math.isfinite(g.reward_delta_min):
            raise RecipeError(f"{key}.gates.reward_delta_min: a finite reward difference, got {g.reward_delta_min}")
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
        if arm == self.challenger and (outcome.error or slow):
            self._look_due = True  # a challenger's bound only rises with a bad answer

    def feedback(self, feedback: Feedback) -> None:
        total = self._total.get(feedback.arm)
        if total is None:
            return
        counts = (total, self._rollout[feedback.arm], self._win[feedback.arm]) if self.finished is None else (total,)
        reward = _finite(feedback.reward) if self.config.gates.reward_delta_min is not None else None
        if reward is not None:
            for c in counts:
                c.add_reward(reward)
        if feedback.label is not None and feedback.prediction is not None:
            correct = _same(feedback.label, feedback.prediction)
            for c in counts:
                c.labelled += 1
                c.correct += correct
        elif reward is None:
            return
        self._labels_since_look += 1
        if self._labels_since_look >= ACCURACY_LOOK_EVERY:
            self._look_due = True

    # -- windows ---------------------------------------------------------------------------
    def _open_window(self) -> None:
        self.window += 1
        self._win = {self.champion: _Counts(), self.challenger: _Counts()}
        g = self.config.gates
        self._target = max(math.ceil(self.config.window_requests * self.percent / 100), self.config.min_challenger_requests)
        self._slow_ms = g.p99_latency_ms_max

    def decide(self) -> Decision:
        if self.finished is not None:
            return self._finished_hold
        if self._look_due:  # a bad answer or a batch of labels since the last look
            failure = self._gates_failure(accuracy=self._labels_since_look >= ACCURACY_LOOK_EVERY)
            if failure:
                return self._finish(Verdict.ROLLBACK, *failure)
        win = self._win[self.challenger]
        if win.requests < self._target:
            return Decision(
                Verdict.HOLD,
                f"window {self.window} (step {_pct(self.percent)}): {win.requests}/{self._target} challenger requests",
                self._weights,
            )
        g = self.config.gates
        if g.accuracy_delta_min is not None:
            champ = self._win[self.champion] if self._win[self.champion].labelled >= g.min_feedback else self._rollout[self.champion]
            if win.labelled < g.min_feedback or champ.labelled < g.min_feedback:
                return Decision(
                    Verdict.HOLD,
                    f"window {self.window} (step {_pct(self.percent)}): waiting for feedback, "
                    f"{self.challenger} {win.labelled}/{g.min_feedback}, {self.champion} {champ.labelled}/{g.min_feedback} labelled",
                    self._weights,
                )
        return self._close_window()

    def _close_window(self) -> Decision:
        failure = self._gates_failure(accuracy=True)
        if failure:
            return self._finish(Verdict.ROLLBACK, *failure)
        record = self._record("pass", "all gates passed")
        nxt = next((s for s in self.steps if s > self.percent), None)
        if nxt is None:
            return self._finish(
                Verdict.PROMOTE,
                f"challenger passed all steps ({', '.join(_pct(s) for s in self.steps)}) in {self.window} windows: "
                f"no gate found harm at alpha {self.config.gates.alpha:g}",
                self._gate_evidence(None),
            )
        reason = f"step {_pct(self.percent)} -> {_pct(nxt)}: window {self.window} passed ({record['summary']})"
        self._set_percent(nxt)
        self._open_window()
        return Decision(Verdict.HOLD, reason, self._weights)

    def _where(self) -> str:
        windows = f"windows 1-{self.window}" if self.window > 1 else f"window {self.window}"
        return f"{windows}, step {_pct(self.percent)}"

    # -- the gates: confidence sequences over the whole rollout ----------------------------
    def _gates_failure(self, accuracy: bool) -> tuple[str, dict] | None:
        """(reason, evidence) of the first gate the rollout's data fails, else None."""
        self._look_due = False
        if accuracy:
            self._labels_since_look = 0
        for gate in self._gates:
            if gate in ("accuracy", "reward") and not accuracy:  # looked at per batch of feedback
                continue
            failure = getattr(self, f"_{gate}_gate")()
            if failure:
                return failure
        return None

    def _bounds(self) -> dict:
        """Every active gate's confidence sequences on the rollout's data so far."""
        a, ch, champ = self._alpha_gate, self._rollout[self.challenger], self._rollout[self.champion]
        out = {"error_rate": self._error_mixture.bounds(ch.errors, ch.requests, a).as_list()}
        if "latency" in self._gates:
            out["slow_share"] = self._slow_mixture.bounds(ch.slow, ch.requests - ch.errors, a).as_list()
        if "reward" in self._gates:
            out["reward"] = {arm: list(self._reward_bounds(self._rollout[arm], a / 2)) for arm in (self.challenger, self.champion)}
        if "accuracy" in self._gates:
            out["accuracy"] = {
                self.challenger: _BOUNDS.bounds(ch.correct, ch.labelled, a / 2).as_list(),
                self.champion: _BOUNDS.bounds(champ.correct, champ.labelled, a / 2).as_list(),
            }
        return out

    def _gate_evidence(self, gate: str | None) -> dict:
        ch, champ = self._rollout[self.challenger], self._rollout[self.champion]
        return {
            "method": "confidence sequences over the rollout (Beta mixture), alpha split over the gates",
            "gate": gate,
            "statistic": None,
            "p_value": None,
            "bound": self._bounds(),
            "samples": {
                self.challenger: {"requests": ch.requests, "errors": ch.errors, "slow": ch.slow, "labelled": ch.labelled},
                self.champion: {"requests": champ.requests, "errors": champ.errors, "labelled": champ.labelled},
            },
            "alpha": self._alpha_gate,
            "alpha_total": self.config.gates.alpha,
            "minimum_effect": {"error_rate_max": self.config.gates.error_rate_max,
                               "p99_latency_ms_max": self.config.gates.p99_latency_ms_max,
                               "accuracy_delta_min": self.config.gates.accuracy_delta_min,
                               "reward_delta_min": self.config.gates.reward_delta_min},
            "windows": self.window,
        }

    def _error_rate_gate(self) -> tuple[str, dict] | None:
        g, ch = self.config.gates, self._rollout[self.challenger]
        if ch.requests < self.config.min_challenger_requests:  # not on a warm-up hiccup alone
            return None
        cs = self._error_mixture.bounds(ch.errors, ch.requests, self._alpha_gate)
        if cs.lower <= g.error_rate_max:
            return None
        return (
            f"error_rate {ch.errors / ch.requests:.3f} > {g.error_rate_max:g} over {ch.requests} challenger requests "
            f"({self._where()}): {ch.errors} errors, error rate at least {cs.lower:.4f} (confidence sequence at "
            f"alpha {self._alpha_gate:g}, valid at any time)",
            self._gate_evidence("error_rate"),
        )

    def _latency_gate(self) -> tuple[str, dict] | None:
        g, ch = self.config.gates, self._rollout[self.challenger]
        answered = ch.requests - ch.errors
        if answered < self.config.min_challenger_requests:
            return None
        cs = self._slow_mixture.bounds(ch.slow, answered, self._alpha_gate)
        if cs.lower <= P99_EXCEEDANCE:
            return None
        p99 = _percentile(sorted(ch.latencies), 99)
        return (
            f"p99_latency_ms {p99:.1f} > {g.p99_latency_ms_max:g} over {answered} challenger requests ({self._where()}): "
            f"{ch.slow} answers slower than {g.p99_latency_ms_max:g} ms, at least {cs.lower:.3f} of them > "
            f"{P99_EXCEEDANCE:g} (confidence sequence at alpha {self._alpha_gate:g})",
            self._gate_evidence("latency"),
        )

    def _reward_bounds(self, c: _Counts, alpha: float) -> tuple[float, float]:
        """Gaussian-mixture confidence sequence on an arm's mean reward (Johari et al.; plug-in
        variance, mixing sd = the gate's tolerance, or the spread when it is 0)."""
        if c.rewards < 2:
            return (-math.inf, math.inf)
        var = c.r_m2 / (c.rewards - 1)
        scale = abs(self.config.gates.reward_delta_min or 0.0) or math.sqrt(var) or 1.0
        radius = sq.normal_mixture_radius(var / c.rewards, sq.normal_mixture_tau2(scale), alpha)
        return c.r_mean - radius, c.r_mean + radius

    def _reward_gate(self) -> tuple[str, dict] | None:
        g = self.config.gates
        ch, ref = self._rollout[self.challenger], self._rollout[self.champion]
        if ch.rewards < g.min_feedback or ref.rewards < g.min_feedback:
            return None
        _, ch_hi = self._reward_bounds(ch, self._alpha_gate / 2)
        ref_lo, _ = self._reward_bounds(ref, self._alpha_gate / 2)
        if ch_hi - ref_lo >= g.reward_delta_min:
            return None
        return (
            f"reward_delta {ch.r_mean - ref.r_mean:+.4g} < {g.reward_delta_min:+g} (challenger mean reward {ch.r_mean:.4g} "
            f"on {ch.rewards} vs champion {ref.r_mean:.4g} on {ref.rewards} since the rollout began; {self._where()}): at most "
            f"{ch_hi - ref_lo:+.4g} (confidence sequences at alpha {self._alpha_gate / 2:g} each)",
            self._gate_evidence("reward"),
        )

    def _accuracy_gate(self) -> tuple[str, dict] | None:
        g = self.config.gates
        ch, ref = self._rollout[self.challenger], self._rollout[self.champion]
        if ch.labelled < g.min_feedback or ref.labelled < g.min_feedback:
            return None
        mine = _BOUNDS.bounds(ch.correct, ch.labelled, self._alpha_gate / 2)
        theirs = _BOUNDS.bounds(ref.correct, ref.labelled, self._alpha_gate / 2)
        if mine.upper - theirs.lower >= g.accuracy_delta_min:
            return None
        delta = mine.mean - theirs.mean
        return (
            f"accuracy_delta {delta:+.3f} < {g.accuracy_delta_min:+g} (challenger {mine.mean:.3f} on {ch.labelled} vs "
            f"champion {theirs.mean:.3f} on {ref.labelled} labelled since the rollout began; {self._where()}): at most "
            f"{mine.upper - theirs.lower:+.3f} (confidence sequences at alpha {self._alpha_gate / 2:g} each)",
            self._gate_evidence("accuracy"),
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

    def _finish(self, verdict: Verdict, reason: str, evidence: dict | None = None) -> Decision:
        if verdict is Verdict.ROLLBACK:
            self._record("rollback", reason)
        else:
            self.history[-1]["verdict"] = "promote"
        self.finished = f"{verdict.value}: {reason}"
        self._finished_hold = Decision(Verdict.HOLD, f"rollout finished: {self.finished}", self._weights)
        target = self.champion if verdict is Verdict.ROLLBACK else self.challenger
        # arm: the challenger either way (promoted, or the one traffic is taken away from)
        return Decision(verdict, reason, {self.champion: 0.0, self.challenger: 0.0, target: 1.0}, arm=self.challenger,
                        evidence=evidence)

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
                "reward_delta_min": self.config.gates.reward_delta_min,
                "alpha": self.config.gates.alpha,
                "alpha_per_gate": self._alpha_gate,
                "bounds": self._bounds(),
            },
            "history": list(self.history),
            "finished": self.finished,
        }


def _rate_mixture(limit: float) -> sq.BetaMixture:
    """The Beta mixture of a gate on a rate that must stay <= limit: centred at three times the
    limit, as wide (Jeffreys' when the limit is 0 or large)."""
    if not 0.0 < limit < 0.15:
        return _BOUNDS
    return sq.BetaMixture.centred(3.0 * limit, 3.0 * limit, scales=(1.0,))


def _pct(percent: float) -> str:
    return f"{percent:g}%"


@hookimpl
def register_traffic_strategies():
    return [CanaryStrategy]
