"""Traffic strategy ``bandit``: a multi-armed bandit over every declared arm.

Each request goes to one arm chosen by ``algorithm`` (``thompson``: sample each arm's Beta
posterior, play the best sample; ``ucb1``: play each arm once, then the highest mean + exploration
bonus; ``epsilon_greedy``: a uniform arm with probability ``epsilon``, else the best mean).
Rewards come later through ``feedback`` (late, out of order, duplicated: a second feedback for the
same request id and one for an id this strategy never routed are ignored).

Rewards are taken as lying in [0, 1]: the Beta posterior uses the fractional update
``alpha += r, beta += 1 - r`` (values outside [0, 1] are clipped for the posterior only; the
reported mean uses the raw value).

Routing is a pure function of the strategy's state and the request (``choose``): the randomness
of a request (Thompson's Beta draws, epsilon-greedy's coin, random tie-breaks, a pinned split)
comes from a blake2b hash of ``(seed, request id)``, so asking twice gives the same arm and the
same seed replays the same routes. The counts move only when a request is served (``routed``).

Burn-in: until every arm has ``min_pulls_per_arm`` pulls, ``choose`` plays the least-pulled arm.
The promotion rule needs that many pulls of every arm, and an adaptive algorithm may otherwise
starve a clearly bad arm below it forever (so a clear winner would never be promoted).

Promotion: every ``decide_every`` rewards, ``decide`` estimates each arm's posterior probability
of being the best arm by Monte Carlo (``MONTE_CARLO_DRAWS`` joint draws of the Beta posteriors).
When one arm exceeds ``promote_probability`` the verdict is PROMOTE naming it (``weights`` one-hot
on the winner). Between two estimates ``decide`` costs O(arms) and repeats the last verdict with the
current allocation; the verdict is sticky until the next estimate or ``apply`` rather than one-shot,
because the admin snapshot calls ``decide`` too and must not swallow a PROMOTE the host has to see.
The rule is checked again and again (every estimate is a new look at the data), so between
equal arms it promotes one now and then: over 10k requests, 23/40 seeded runs with two equal
arms and 10/40 with three at 0.95, 0/40 at 0.999. Raise ``promote_probability`` when a
needless promotion costs more than a late one.

Pinning: ``apply(PROMOTE)`` routes everything to ``Decision.arm`` (else the heaviest of its
``weights``, else ``candidate()``), ``apply(ROLLBACK)`` to the first arm (the incumbent),
``set_weights`` to a fixed allocation. While pinned, adaptive routing is off and ``decide`` holds
with the pinned weights; feedback for requests routed before the pin still updates the posteriors
(and, under ``set_weights``, for every request), so ``apply(HOLD)`` resumes the bandit from
everything learned meanwhile.

Pure Python (numpy only for the Monte Carlo in ``decide``): ``choose`` is a hash, a seeded
``random.Random`` and one Beta draw per arm (~13 µs with ``routed``'s O(1) bookkeeping for three
arms, most of it seeding the generator: the price of a route that does not depend on call order).
"""
from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from framework.components import (
    Decision,
    Feedback,
    Outcome,
    Route,
    RouteRequest,
    TrafficStrategy,
    Verdict,
)
from framework.strategy_tools import refuse_accuracy_for_regression as _refuse_accuracy
from framework.errors import RecipeError, RequestError
from framework.hookspecs import hookimpl

ALGORITHMS = ("thompson", "ucb1", "epsilon_greedy")
REWARDS = ("reward", "accuracy")
#: joint posterior draws per P(best) estimate: +-1% standard error at p=0.95, ~0.3 ms for 3 arms
MONTE_CARLO_DRAWS = 2000
#: routes over which the reported allocation (``state``/HOLD weights) is measured
ALLOCATION_WINDOW = 1000
#: routed request ids remembered for feedback (older ones count as unknown)
MEMORY = 100_000
_DONE = -1  # marks a request id whose reward was already counted
_UNIT = 2.0**-53  # 53 random bits -> a float in [0, 1)


@dataclass
class BanditConfig:
    #: thompson | ucb1 | epsilon_greedy
    algorithm: str = "thompson"
    #: exploration rate of epsilon_greedy
    epsilon: float = 0.1
    #: "reward": Feedback.reward; "accuracy": 1.0 when Feedback.label == Feedback.prediction
    reward: str = "reward"
    #: Beta prior of every arm's mean reward (Thompson sampling and the promotion rule)
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    seed: int = 0
    #: PROMOTE an arm once its posterior probability of being best exceeds this
    promote_probability: float = 0.95
    #: pulls of every arm before a promotion (also the round-robin burn-in)
    min_pulls_per_arm: int = 50
    #: rewards between two Monte Carlo estimates in decide()
    decide_every: int = 100


class BanditStrategy(TrafficStrategy):
    name = "bandit"
    Config = BanditConfig

    @classmethod
    def check_task(cls, config, task, key):
        _refuse_accuracy(cls.name, task, f"{key}.reward", config.reward == "accuracy",
                         "use reward: reward, with feedback rewards (e.g. minus the absolute error)")
    summary = "multi-armed bandit (thompson | ucb1 | epsilon_greedy); promotes the arm that is best with high probability"

    def __init__(self, config: BanditConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        cfg: BanditConfig = self.config
        self.names: list[str] = self.routable  # incumbent() by default: the first declared arm
        k = len(self.names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._routes = [Route(primary=n) for n in self.names]  # immutable: built once
        self._hash_key = str(cfg.seed).encode()[:64]
        self._mc_rng = np.random.default_rng(cfg.seed)
        self._prior_mean = cfg.prior_alpha / (cfg.prior_alpha + cfg.prior_beta)
        self.pulls = [0] * k
        self.rewarded = [0] * k  # pulls whose reward arrived
        self.reward_sum = [0.0] * k
        self.alpha = [float(cfg.prior_alpha)] * k
        self.beta = [float(cfg.prior_beta)] * k
        self.errors = [0] * k
        self.outcomes = [0] * k
        self.total_pulls = 0
        self.total_rewarded = 0
        self.duplicates = 0
        self.unknown = 0
        self.missing_reward = 0
        self._burn_in = cfg.min_pulls_per_arm > 0
        self._recent: deque[int] = deque(maxlen=ALLOCATION_WINDOW)
        self._recent_counts = [0] * k
        self._requests: OrderedDict[str, int] = OrderedDict()  # request id -> arm index | _DONE
        self._pinned: Optional[list[float]] = None  # cumulative weights while pinned
        self._pinned_weights: Optional[dict[str, float]] = None
        self._pin_reason = ""
        self._mc_at = 0  # total_rewarded at the last Monte Carlo estimate
        self._p_best: Optional[list[float]] = None
        self._promotion: Optional[Decision] = None  # sticky PROMOTE of the last estimate
        self._hold_reason = f"collecting rewards: first estimate after {cfg.decide_every}"

    # -- plan-time validation --------------------------------------------------------------------
    @classmethod
    def arm_names(cls, config: BanditConfig | None, arms: Mapping[str, str]) -> Sequence[str]:
        declared = list(arms)
        if len(declared) < 2:
            raise RecipeError(
                f"serve.models: strategy 'bandit' chooses between arms, but serve.models declares "
                f"{len(declared)} arm(s) ({', '.join(declared) or 'none'}). Declare at least two arms "
                f"(the first one is the incumbent), or use strategy 'single'."
            )
        return declared

    @classmethod
    def check_config(cls, config: BanditConfig, key: str, refs: Mapping[str, type] | None = None) -> None:
        def bad(field: str, message: str) -> RecipeError:
            return RecipeError(f"{key}.{field}: {message}")

        if config.algorithm not in ALGORITHMS:
            raise bad("algorithm", f"'{config.algorithm}' is not a bandit algorithm. Choose one of: {', '.join(ALGORITHMS)}")
        if config.reward not in REWARDS:
            raise bad("reward", f"'{config.reward}' is not a reward source. Choose one of: {', '.join(REWARDS)}")
        if not 0.0 <= config.epsilon <= 1.0:
            raise bad("epsilon", f"{config.epsilon} is not a probability; set a value in [0, 1]")
        for field in ("prior_alpha", "prior_beta"):
            value = getattr(config, field)
            if not value > 0:  # also catches NaN
                raise bad(field, f"{value} is not a valid Beta prior parameter; set a value > 0")
        if not 0.0 < config.promote_probability <= 1.0:
            raise bad("promote_probability", f"{config.promote_probability} is not in (0, 1]; e.g. 0.95")
        if config.min_pulls_per_arm < 0:
            raise bad("min_pulls_per_arm", f"{config.min_pulls_per_arm} is negative; set 0 or more")
        if config.decide_every < 1:
            raise bad("decide_every", f"{config.decide_every} must be at least 1")

    # -- request path ----------------------------------------------------------------------------
    def choose(self, request: RouteRequest) -> Route:
        return self._routes[self._choose(request.request_id)]

    def routed(self, request: RouteRequest, route: Route) -> None:
        i = self._index[route.primary]
        pulls = self.pulls
        pulls[i] += 1
        self.total_pulls += 1
        if self._burn_in and min(pulls) >= self.config.min_pulls_per_arm:
            self._burn_in = False
        recent = self._recent
        if len(recent) == ALLOCATION_WINDOW:
            self._recent_counts[recent[0]] -= 1
        recent.append(i)
        self._recent_counts[i] += 1
        requests = self._requests
        rid = request.request_id
        previous = requests.get(rid)
        if previous is None:
            if len(requests) >= MEMORY:
                requests.popitem(last=False)
            requests[rid] = i
        elif previous != _DONE:  # a retried request: the feedback is about the arm that answered last
            requests[rid] = i

    def _draw(self, request_id: str) -> int:
        """64 random bits of this request: blake2b of its id, keyed by the seed (stable across
        processes, unlike the salted builtin ``hash``)."""
        return int.from_bytes(blake2b(request_id.encode(), digest_size=8, key=self._hash_key).digest(), "big")

    def _choose(self, request_id: str) -> int:
        if self._pinned is not None:
            return self._weighted(self._pinned, (self._draw(request_id) >> 11) * _UNIT)
        pulls = self.pulls
        if self._burn_in:
            i = min(range(len(pulls)), key=pulls.__getitem__)
            if pulls[i] < self.config.min_pulls_per_arm:
                return i
        algorithm = self.config.algorithm
        if algorithm == "thompson":
            draw = random.Random(self._draw(request_id)).betavariate
            best, best_value = 0, -1.0
            for i, (a, b) in enumerate(zip(self.alpha, self.beta)):
                value = draw(a, b)
                if value > best_value:
                    best, best_value = i, value
            return best
        bits = self._draw(request_id)
        if algorithm == "ucb1":
            for i, n in enumerate(pulls):
                if n == 0:  # play each arm once first
                    return i
            # Counts of *rewarded* pulls: the bonus shrinks with information, not with traffic.
            # An arm still waiting for its first reward scores as one pull of the prior mean.
            log_total = math.log(max(self.total_rewarded, 1))
            scores = [
                (s / n if n else self._prior_mean) + math.sqrt(2.0 * log_total / (n or 1))
                for s, n in zip(self.reward_sum, self.rewarded)
            ]
            return self._argmax(scores, bits)
        # epsilon_greedy: the top 53 bits are the coin, the low ones pick an arm (explore or tie)
        if (bits >> 11) * _UNIT < self.config.epsilon:
            return bits % len(pulls)
        return self._argmax([s / n if n else self._prior_mean for s, n in zip(self.reward_sum, self.rewarded)], bits)

    @staticmethod
    def _argmax(values: list[float], bits: int) -> int:
        top = max(values)
        ties = [i for i, v in enumerate(values) if v == top]
        return ties[0] if len(ties) == 1 else ties[bits % len(ties)]  # random ties: no bias to arm 0

    @staticmethod
    def _weighted(cumulative: list[float], u: float) -> int:
        for i, c in enumerate(cumulative):
            if u < c:
                return i
        return len(cumulative) - 1

    def observe(self, outcome: Outcome) -> None:
        i = self._index.get(outcome.arm)
        if i is None:
            return
        self.outcomes[i] += 1
        if outcome.error:
            self.errors[i] += 1

    def feedback(self, feedback: Feedback) -> None:
        requests = self._requests
        i = requests.get(feedback.request_id)
        if i is None:  # never routed here, or forgotten (older than MEMORY requests)
            self.unknown += 1
            return
        if i == _DONE:
            self.duplicates += 1
            return
        reward = self._reward(feedback)
        if reward is None:  # e.g. a label-only feedback in reward mode: the reward may still come
            self.missing_reward += 1
            return
        requests[feedback.request_id] = _DONE
        self.rewarded[i] += 1
        self.reward_sum[i] += reward
        self.total_rewarded += 1
        x = 0.0 if reward < 0.0 else 1.0 if reward > 1.0 else reward
        self.alpha[i] += x
        self.beta[i] += 1.0 - x

    def _reward(self, feedback: Feedback) -> Optional[float]:
        if self.config.reward == "accuracy":
            if feedback.label is None:
                return None
            try:
                return 1.0 if bool(feedback.label == feedback.prediction) else 0.0
            except (TypeError, ValueError):  # e.g. arrays: elementwise == has no single truth value
                return 1.0 if np.array_equal(feedback.label, feedback.prediction) else 0.0
        if feedback.reward is None:
            return None
        reward = float(feedback.reward)
        return None if math.isnan(reward) else reward

    # -- decisions -------------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self._pinned_weights is not None:
            return Decision(Verdict.HOLD, self._pin_reason, weights=dict(self._pinned_weights))
        if self.total_rewarded - self._mc_at >= self.config.decide_every:
            self._estimate()
        if self._promotion is not None:
            return self._promotion
        return Decision(Verdict.HOLD, self._hold_reason, weights=self._allocation())

    def _estimate(self) -> None:
        """Monte Carlo P(best) from the Beta posteriors; sets the sticky verdict."""
        cfg: BanditConfig = self.config
        self._mc_at = self.total_rewarded
        self._promotion = None
        draws = self._mc_rng.beta(self.alpha, self.beta, size=(MONTE_CARLO_DRAWS, len(self.names)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(self.names))
        p_best = (wins / MONTE_CARLO_DRAWS).tolist()
        self._p_best = p_best
        best = int(np.argmax(wins))
        summary = ", ".join(f"{n}={p:.3f}" for n, p in zip(self.names, p_best))
        short = [n for n, p in zip(self.names, self.pulls) if p < cfg.min_pulls_per_arm]
        if short:
            self._hold_reason = (f"P(best): {summary}; waiting for {cfg.min_pulls_per_arm} pulls of "
                                 f"every arm ({', '.join(short)} below)")
        elif p_best[best] > cfg.promote_probability:
            winner = self.names[best]
            self._promotion = Decision(
                Verdict.PROMOTE,
                f"arm '{winner}' is the best arm with probability {p_best[best]:.3f} > "
                f"{cfg.promote_probability} (P(best): {summary}; mean reward "
                f"{self._mean(best):.4f} over {self.rewarded[best]} rewards)",
                weights={n: 1.0 if n == winner else 0.0 for n in self.names},
                arm=winner,
            )
        else:
            self._hold_reason = (f"no arm is best with probability > {cfg.promote_probability} yet "
                                 f"(P(best): {summary})")

    def _mean(self, i: int) -> float:
        return self.reward_sum[i] / self.rewarded[i] if self.rewarded[i] else float("nan")

    def _allocation(self) -> dict[str, float]:
        n = len(self._recent)
        if not n:
            return {name: 1.0 / len(self.names) for name in self.names}
        return {name: c / n for name, c in zip(self.names, self._recent_counts)}

    def apply(self, decision: Decision) -> None:
        if decision.verdict is Verdict.PROMOTE and decision.arm is None:
            decision = replace(decision, arm=self._winner_of(decision))
        super().apply(decision)  # ValueError for an undeclared arm, before anything changed
        if decision.verdict is Verdict.PROMOTE:
            self._pin({self.final: 1.0}, f"promoted: '{self.final}' answers every request")
        elif decision.verdict is Verdict.ROLLBACK:
            self._pin({self.final: 1.0}, f"rolled back: incumbent '{self.final}' answers every request")
        else:  # HOLD: resume learning; a new verdict needs decide_every fresh rewards
            self.reopen()
            self._pinned = self._pinned_weights = None
            self._promotion = None
            self._mc_at = self.total_rewarded
            self._hold_reason = "learning resumed"

    def candidate(self) -> str:
        """The arm a bare apply(PROMOTE) pins: the pending PROMOTE's arm, else the arm with the
        best posterior mean (the default, the last arm, would ignore what was learned)."""
        if self._promotion is not None and self._promotion.arm is not None:
            return self._promotion.arm
        means = [a / (a + b) for a, b in zip(self.alpha, self.beta)]
        return self.names[max(range(len(means)), key=means.__getitem__)]

    def _winner_of(self, decision: Decision) -> str:
        """The arm a PROMOTE without ``arm`` names through its weights (the heaviest declared
        arm), else ``candidate()``."""
        weights = {a: float(w) for a, w in (decision.weights or {}).items() if a in self._index and w > 0}
        return max(weights, key=weights.__getitem__) if weights else self.candidate()

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Pin a fixed allocation (arms left out get 0). Adaptive routing stays off until
        ``apply`` (HOLD resumes learning; PROMOTE / ROLLBACK pin differently)."""
        unknown = [a for a in weights if a not in self._index]
        if unknown:
            raise RequestError("weights", f"unknown arm(s) {', '.join(map(str, unknown))}; arms: {', '.join(self.names)}")
        values = {a: float(w) for a, w in weights.items()}
        if any(not (w >= 0 and math.isfinite(w)) for w in values.values()) or sum(values.values()) <= 0:
            raise RequestError("weights", "weights must be finite, non-negative and not all zero")
        self._pin(values, "weights pinned by set_weights: adaptive routing off until apply()")
        self.reopen()  # an operator's reweighting is followed, after a verdict too

    def _pin(self, weights: Mapping[str, float], reason: str) -> None:
        total = sum(weights.values())
        normalized = {n: weights.get(n, 0.0) / total for n in self.names}
        cumulative, acc = [], 0.0
        for n in self.names:
            acc += normalized[n]
            cumulative.append(acc)
        self._pinned = cumulative
        self._pinned_weights = normalized
        self._pin_reason = reason
        self._promotion = None

    def state(self) -> dict:
        allocation = self._allocation()
        arms = {}
        for i, name in enumerate(self.names):
            mean = self._mean(i)
            arms[name] = {
                "model_version": self.arms.get(name),
                "pulls": self.pulls[i],
                "rewards": self.rewarded[i],
                "reward_sum": self.reward_sum[i],
                "reward_mean": None if math.isnan(mean) else mean,
                "posterior": {"alpha": self.alpha[i], "beta": self.beta[i]},
                "p_best": None if self._p_best is None else self._p_best[i],
                "share": allocation[name],
                "outcomes": self.outcomes[i],
                "errors": self.errors[i],
            }
        return {
            "strategy": self.name,
            "algorithm": self.config.algorithm,
            "arms": arms,
            "share_window": len(self._recent),
            "pulls": self.total_pulls,
            "rewards": self.total_rewarded,
            "feedback_ignored": {"duplicate": self.duplicates, "unknown": self.unknown,
                                 "missing_reward": self.missing_reward},
            "burn_in": self._burn_in,
            "pinned": self._pinned_weights,
            "pin_reason": self._pin_reason or None,
        }


def simulate(
    config: BanditConfig,
    means: Sequence[float],
    requests: int = 10_000,
    env_seed: int = 0,
    weights: Optional[Mapping[str, float]] = None,
) -> dict[str, Any]:
    """Run the strategy against Bernoulli arms with immediate feedback (benchmarks and tests).

    ``weights`` pins a fixed split instead (``{"arm0": 1, "arm1": 1, ...}``: uniform). Returns the
    cumulative pseudo-regret (sum of best mean - served arm's mean), the best arm's share over the
    last ALLOCATION_WINDOW routes, and the first PROMOTE as (request number, arm) or None.
    """
    arms = {f"arm{i}": f"v{i}" for i in range(len(means))}
    strategy = BanditStrategy(config, arms)
    if weights is not None:
        strategy.set_weights(weights)
    # One reward stream per arm (the n-th pull of an arm gets the n-th draw of its stream): every
    # algorithm run with the same env_seed faces the same arms, so paired comparisons are fair.
    draw = {a: random.Random(env_seed * 1_000_003 + i).random for i, a in enumerate(arms)}
    best = max(means)
    best_arm = f"arm{list(means).index(best)}"
    gap = {a: best - m for a, m in zip(arms, means)}
    p = dict(zip(arms, means))
    regret = 0.0
    promoted = None
    for t in range(requests):
        rid = str(t)
        arm = strategy.route(RouteRequest(rid)).primary
        regret += gap[arm]
        strategy.feedback(Feedback(rid, arm, reward=1.0 if draw[arm]() < p[arm] else 0.0))
        decision = strategy.decide()
        if promoted is None and decision.verdict is Verdict.PROMOTE:
            promoted = (t + 1, max(decision.weights, key=decision.weights.__getitem__))
    return {
        "regret": regret,
        "best_share": strategy._allocation()[best_arm],
        "promoted": promoted,
        "state": strategy.state(),
    }


@hookimpl
def register_traffic_strategies():
    return [BanditStrategy]
