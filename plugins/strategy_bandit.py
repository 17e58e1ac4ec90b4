"""Traffic strategy ``bandit``: a multi-armed bandit over every declared arm.

Each request goes to one arm chosen by ``algorithm``:

* ``thompson``: sample each arm's Beta posterior, play the best sample;
* ``kl_ucb``: the largest mean q with ``n_i kl(mean_i, q) <= log t`` (Garivier & Cappé 2011): its
  bonus scales with the rate, so at click-through rates of 0.5% it explores where UCB1 cannot;
* ``ucb1``: mean + sqrt(2 log t / n_i) (Auer et al. 2002); at rare rewards its bonus (~0.07 after
  a few thousand rewards) dwarfs the gaps (~0.003) and it allocates almost uniformly;
* ``epsilon_greedy``: a uniform arm with probability ``epsilon``, else the best mean.

Rewards come later through ``feedback`` (late, out of order, duplicated, in batches: a second
feedback for the same request id and one for an id this strategy never routed are ignored).
``reward`` says what a reward is: ``reward`` (``Feedback.reward``; a feedback with clicks and no
reward counts 1), ``accuracy`` (1 when label == prediction) or ``clicks`` (1 if the feedback has
a click, else 0). Rewards are taken as lying in [0, 1] (clipped for the posterior and the bounds).
Every count that gates anything is a count of **rewards received**, never of routed requests.

**Priors.** ``prior: empirical`` (the default) gives every arm the same Beta prior, fitted to the
rewards of all arms so far (pooled mean; strength from the spread between arms, by the method of
moments, between 2 and ``min_rewards_per_arm`` pseudo-rewards): at a 0.5% click rate the prior
is about Beta(0.25, 50), not Beta(1, 1) whose mean 0.5 makes an unexplored arm look best.
``prior: recipe`` uses ``prior_alpha`` / ``prior_beta`` as declared.

**Burn-in.** Until every arm has ``min_rewards_per_arm`` rewards, ``choose`` plays the
least-pulled arm among those still short of rewards (an arm still short after
``BURN_IN_PULLS`` times that many pulls, e.g. one whose feedback never comes, is left to the
algorithm).

**Promotion** (what the user declares: ``alpha``, ``minimum_effect``): each arm's mean has a
confidence sequence (Beta mixture, ``framework.sequential``; valid under the bandit's adaptive
sampling and at any time) at ``alpha / arms``; an arm is PROMOTED once every arm has
``min_rewards_per_arm`` rewards and its lower bound is above every other arm's upper bound. The
chance that a promoted arm is not the best one is at most ``alpha``, however long the bandit runs
and however often ``decide`` is called. When every arm's bounds lie within ``minimum_effect``
(relative) of one another, HOLD says no arm is better by that much. The verdict is sticky until
``apply`` (the admin snapshot calls ``decide`` too and must not swallow it); its
``Decision.evidence`` has every arm's bounds and rewards.

Routing is a pure function of the strategy's state and the request (``choose``): the randomness
of a request (Thompson's Beta draws, epsilon-greedy's coin, random tie-breaks, a pinned split)
comes from a blake2b hash of ``(seed, request id)``, so asking twice gives the same arm and the
same seed replays the same routes. The counts move only when a request is served (``routed``).

Pinning: ``apply(PROMOTE)`` routes everything to ``Decision.arm`` (else the heaviest of its
``weights``, else ``candidate()``), ``apply(ROLLBACK)`` to the first arm (the incumbent),
``set_weights`` to a fixed allocation. While pinned, adaptive routing is off and ``decide`` holds
with the pinned weights; feedback for requests routed before the pin still updates the counts
(and, under ``set_weights``, for every request), so ``apply(HOLD)`` resumes the bandit from
everything learned meanwhile.
"""
from __future__ import annotations

import math
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, replace
from hashlib import blake2b
from typing import Any, Mapping, Optional, Sequence

from framework import sequential as sq
from framework.components import (
    Decision,
    Feedback,
    Outcome,
    Route,
    RouteRequest,
    TrafficStrategy,
    Verdict,
)
from framework.strategy_tools import finite_or_none as _finite
from framework.strategy_tools import refuse_accuracy_for_regression as _refuse_accuracy
from framework.errors import RecipeError, RequestError
from framework.hookspecs import hookimpl

ALGORITHMS = ("thompson", "kl_ucb", "ucb1", "epsilon_greedy")
REWARDS = ("reward", "accuracy", "clicks")
PRIORS = ("empirical", "recipe")
#: routes over which the reported allocation (``state``/HOLD weights) is measured
ALLOCATION_WINDOW = 1000
#: routed request ids remembered for feedback (older ones count as unknown)
MEMORY = 100_000
#: an arm still short of rewards after this many times min_rewards_per_arm pulls leaves burn-in
BURN_IN_PULLS = 10
#: the promotion rule and the empirical prior are revisited every 1/LOOK_SPACING more rewards
LOOK_SPACING = 64
#: joint posterior draws for the P(best) shown in state() (reporting only, never a decision)
MONTE_CARLO_DRAWS = 2000
_DONE = -1  # marks a request id whose reward was already counted
_UNIT = 2.0**-53  # 53 random bits -> a float in [0, 1)
_BOUNDS = sq.BetaMixture.jeffreys()


@dataclass
class BanditConfig:
    #: thompson | kl_ucb | ucb1 | epsilon_greedy
    algorithm: str = "thompson"
    #: exploration rate of epsilon_greedy
    epsilon: float = 0.1
    #: "reward": Feedback.reward (clicks count 1); "accuracy": label == prediction; "clicks": clicked or not
    reward: str = "reward"
    #: "empirical": one Beta prior fitted to every arm's rewards; "recipe": prior_alpha / prior_beta
    prior: str = "empirical"
    #: Beta prior of every arm's mean (prior: recipe; and the empirical prior before any reward)
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    seed: int = 0
    #: chance that a promoted arm is not the best, under continuous monitoring
    alpha: float = 0.05
    #: relative difference below which arms count as equally good (reported, never promoted on)
    minimum_effect: float = 0.05
    #: rewards received from every arm before a promotion, and the burn-in
    min_rewards_per_arm: int = 50


class BanditStrategy(TrafficStrategy):
    name = "bandit"
    Config = BanditConfig
    summary = "multi-armed bandit (thompson | kl_ucb | ucb1 | epsilon_greedy); promotes an arm whose confidence sequence clears all others"

    @classmethod
    def check_task(cls, config, task, key):
        _refuse_accuracy(cls.name, task, f"{key}.reward", config.reward == "accuracy",
                         "use reward: reward, with feedback rewards (e.g. minus the absolute error)")

    def __init__(self, config: BanditConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        cfg: BanditConfig = self.config
        self.names: list[str] = self.routable  # incumbent() by default: the first declared arm
        k = len(self.names)
        self._index = {n: i for i, n in enumerate(self.names)}
        self._routes = [Route(primary=n) for n in self.names]  # immutable: built once
        self._hash_key = str(cfg.seed).encode()[:64]
        self.pulls = [0] * k
        self.rewarded = [0] * k  # pulls whose reward arrived
        self.reward_sum = [0.0] * k  # raw rewards (reported mean)
        self.clipped_sum = [0.0] * k  # rewards clipped to [0, 1] (posterior, bounds, indices)
        self.alpha = [float(cfg.prior_alpha)] * k  # Beta posterior of each arm
        self.beta = [float(cfg.prior_beta)] * k
        self.prior = (float(cfg.prior_alpha), float(cfg.prior_beta))
        self.errors = [0] * k
        self.outcomes = [0] * k
        self.total_pulls = 0
        self.total_rewarded = 0
        self.duplicates = 0
        self.unknown = 0
        self.missing_reward = 0
        self._burn_in = cfg.min_rewards_per_arm > 0
        self._burn_in_cap = cfg.min_rewards_per_arm * BURN_IN_PULLS
        self._recent: deque[int] = deque(maxlen=ALLOCATION_WINDOW)
        self._recent_counts = [0] * k
        self._requests: OrderedDict[str, int] = OrderedDict()  # request id -> arm index | _DONE
        self._pinned: Optional[list[float]] = None  # cumulative weights while pinned
        self._pinned_weights: Optional[dict[str, float]] = None
        self._pin_reason = ""
        self._bounds: list[Optional[tuple[tuple[int, float], sq.ConfidenceSequence]]] = [None] * k
        self._next_check = 0  # total_rewarded at which the promotion rule is looked at next
        self._prior_at = 0  # total_rewarded at which the empirical prior is refitted next
        self._promotion: Optional[Decision] = None  # sticky PROMOTE until applied
        self._held: Optional[tuple[str, int, Decision]] = None  # the last HOLD (reason, pulls, decision)
        # (total_rewarded, t of the last full refresh, indices, rewards per arm then, log t) for UCBs
        self._index_cache: tuple | None = None
        self._hold_reason = f"burn-in: {cfg.min_rewards_per_arm} rewards from every arm first"

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
        if config.prior not in PRIORS:
            raise bad("prior", f"'{config.prior}' is not a prior. Choose one of: {', '.join(PRIORS)}")
        if not 0.0 <= config.epsilon <= 1.0:
            raise bad("epsilon", f"{config.epsilon} is not a probability; set a value in [0, 1]")
        for field in ("prior_alpha", "prior_beta"):
            value = getattr(config, field)
            if not value > 0:  # also catches NaN
                raise bad(field, f"{value} is not a valid Beta prior parameter; set a value > 0")
        if not 0.0 < config.alpha < 1.0:
            raise bad("alpha", f"{config.alpha} is not in (0, 1); e.g. 0.05")
        if not config.minimum_effect >= 0:
            raise bad("minimum_effect", f"{config.minimum_effect} is negative; a relative difference, e.g. 0.05")
        if config.min_rewards_per_arm < 0:
            raise bad("min_rewards_per_arm", f"{config.min_rewards_per_arm} is negative; set 0 or more")

    # -- request path ----------------------------------------------------------------------------
    def choose(self, request: RouteRequest) -> Route:
        return self._routes[self._choose(request.request_id)]

    def routed(self, request: RouteRequest, route: Route) -> None:
        i = self._index[route.primary]
        self.pulls[i] += 1
        self.total_pulls += 1
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

    def _burn_in_arm(self) -> Optional[int]:
        """The arm burn-in plays: the least pulled of those short of rewards (None: burn-in over)."""
        m, cap = self.config.min_rewards_per_arm, self._burn_in_cap
        best = None
        for i, (r, p) in enumerate(zip(self.rewarded, self.pulls)):
            if r < m and p < cap and (best is None or p < self.pulls[best]):
                best = i
        return best

    def _choose(self, request_id: str) -> int:
        if self._pinned is not None:
            return self._weighted(self._pinned, (self._draw(request_id) >> 11) * _UNIT)
        if self._burn_in:
            i = self._burn_in_arm()
            if i is not None:
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
        if algorithm in ("ucb1", "kl_ucb"):
            for i, n in enumerate(self.rewarded):
                if n == 0:  # an arm without a reward first (the least pulled of them)
                    return min((j for j, r in enumerate(self.rewarded) if r == 0), key=self.pulls.__getitem__)
            return self._argmax(self._indices(), bits)
        # epsilon_greedy: the top 53 bits are the coin, the low ones pick an arm (explore or tie)
        if (bits >> 11) * _UNIT < self.config.epsilon:
            return bits % len(self.names)
        return self._argmax(self._posterior_means(), bits)

    def _indices(self) -> list[float]:
        """UCB1 or KL-UCB index of every arm, from rewards received; cached until the next reward
        (a cache of a pure function: choose() stays free of observable side effects)."""
        cache = self._index_cache
        total = self.total_rewarded
        if cache is not None and cache[0] == total:
            return cache[2]
        kl = self.config.algorithm == "kl_ucb"
        if cache is None or total >= cache[1] * 1.01 or not kl:
            log_t = math.log(max(total, 2))
            if kl:
                indices = [kl_ucb_index(s / n, n, log_t) for s, n in zip(self.clipped_sum, self.rewarded)]
            else:
                indices = [s / n + math.sqrt(2.0 * log_t / n) for s, n in zip(self.clipped_sum, self.rewarded)]
            keys = list(self.rewarded)
            self._index_cache = (total, total, indices, keys, log_t)
            return indices
        # KL-UCB between two full refreshes (t grew < 1%, log t by less): re-solve only the arms
        # whose rewards changed
        _, full_at, indices, keys, log_t = cache
        indices, keys = list(indices), list(keys)
        for i, (s, n) in enumerate(zip(self.clipped_sum, self.rewarded)):
            if keys[i] != n:
                indices[i], keys[i] = kl_ucb_index(s / n, n, log_t), n
        self._index_cache = (total, full_at, indices, keys, log_t)
        return indices

    def _posterior_means(self) -> list[float]:
        return [a / (a + b) for a, b in zip(self.alpha, self.beta)]

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
        self.clipped_sum[i] += 0.0 if reward < 0.0 else 1.0 if reward > 1.0 else reward
        self.total_rewarded += 1
        if self._burn_in and min(self.rewarded) >= self.config.min_rewards_per_arm:
            self._burn_in = False
        if self.total_rewarded >= self._prior_at:
            self._prior_at = self.total_rewarded + max(1, self.total_rewarded // LOOK_SPACING)
            self._update_posteriors()
        else:
            a0, b0 = self.prior
            self.alpha[i] = a0 + self.clipped_sum[i]
            self.beta[i] = b0 + self.rewarded[i] - self.clipped_sum[i]

    def _reward(self, feedback: Feedback) -> Optional[float]:
        mode = self.config.reward
        if mode == "accuracy":
            if feedback.label is None:
                return None
            try:
                return 1.0 if bool(feedback.label == feedback.prediction) else 0.0
            except (TypeError, ValueError):  # e.g. arrays: elementwise == has no single truth value
                import numpy as np

                return 1.0 if np.array_equal(feedback.label, feedback.prediction) else 0.0
        reward = _finite(feedback.reward)
        if reward is not None:
            return reward
        if feedback.clicks:
            return 1.0  # a click is a reward of 1
        if mode == "clicks" and feedback.label is None:
            return 0.0  # answered, not clicked (a label-only feedback says nothing about clicks)
        return None

    def _update_posteriors(self) -> None:
        a0, b0 = self.prior = self._prior()
        self.alpha = [a0 + s for s in self.clipped_sum]
        self.beta = [b0 + n - s for s, n in zip(self.clipped_sum, self.rewarded)]

    def _prior(self) -> tuple[float, float]:
        """The Beta prior every arm shares: the recipe's, or fitted to the rewards so far."""
        cfg: BanditConfig = self.config
        if cfg.prior == "recipe":
            return cfg.prior_alpha, cfg.prior_beta
        n_total = self.total_rewarded
        mean = (sum(self.clipped_sum) + cfg.prior_alpha) / (n_total + cfg.prior_alpha + cfg.prior_beta)
        mean = min(max(mean, 1e-6), 1 - 1e-6)
        cap = max(2.0, float(cfg.min_rewards_per_arm))
        observed = [(s / n, n) for s, n in zip(self.clipped_sum, self.rewarded) if n > 0]
        strength = cfg.prior_alpha + cfg.prior_beta  # until two arms have rewards: the recipe's strength
        if len(observed) >= 2:
            strength = cap
        if len(observed) >= 2:
            # method of moments: the spread of the arms' means beyond their sampling noise
            means = [m for m, _ in observed]
            between = sum((m - mean) ** 2 for m in means) / (len(means) - 1)
            noise = sum(mean * (1 - mean) / n for _, n in observed) / len(observed)
            excess = between - noise
            if excess > 0:
                strength = min(cap, max(2.0, mean * (1 - mean) / excess - 1.0))
        return mean * strength, (1 - mean) * strength

    # -- decisions -------------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self._pinned_weights is not None:
            return Decision(Verdict.HOLD, self._pin_reason, weights=dict(self._pinned_weights))
        if self._promotion is not None:
            return self._promotion
        if self.total_rewarded >= self._next_check:
            self._check()
        if self._promotion is not None:
            return self._promotion
        held = self._held
        # the allocation reported with a HOLD is refreshed every 64 routes, not rebuilt per call
        if held is None or held[0] != self._hold_reason or self.total_pulls - held[1] >= 64:
            held = self._held = (self._hold_reason, self.total_pulls,
                                 Decision(Verdict.HOLD, self._hold_reason, weights=self._allocation()))
        return held[2]

    def bounds(self) -> list[sq.ConfidenceSequence]:
        """Every arm's confidence sequence on its mean reward, at alpha / arms (cached per arm)."""
        alpha_each = sq.bonferroni(self.config.alpha, len(self.names))
        out = []
        for i in range(len(self.names)):
            key = (self.rewarded[i], self.clipped_sum[i])
            cached = self._bounds[i]
            if cached is None or cached[0] != key:
                cached = (key, _BOUNDS.bounds(key[1], key[0], alpha_each))
                self._bounds[i] = cached
            out.append(cached[1])
        return out

    def _check(self) -> None:
        """The promotion rule on the rewards so far; sets the sticky PROMOTE or the HOLD reason."""
        cfg: BanditConfig = self.config
        # looks at every reward early on, then every ~1.5% more rewards: any schedule of looks is
        # valid for confidence sequences, and the bounds barely move in between
        self._next_check = self.total_rewarded + max(1, self.total_rewarded // LOOK_SPACING)
        m = cfg.min_rewards_per_arm
        short = [f"{n} {r}/{m}" for n, r in zip(self.names, self.rewarded) if r < m]
        if short:
            self._hold_reason = f"burn-in: waiting for {m} rewards from every arm ({', '.join(short)})"
            return
        cs = self.bounds()
        best = max(range(len(cs)), key=lambda i: cs[i].lower)
        rival = max((i for i in range(len(cs)) if i != best), key=lambda i: cs[i].upper)
        summary = ", ".join(f"{n} [{c.lower:.4g}, {c.upper:.4g}]" for n, c in zip(self.names, cs))
        alpha_each = sq.bonferroni(cfg.alpha, len(self.names))
        if cs[best].lower > cs[rival].upper:
            winner = self.names[best]
            evidence = self._evidence(cs, alpha_each, cs[best].lower - cs[rival].upper)
            self._promotion = Decision(
                Verdict.PROMOTE,
                f"arm '{winner}' is the best arm: its mean reward is at least {cs[best].lower:.4g}, above every other "
                f"arm's upper bound (at most {cs[rival].upper:.4g}, '{self.names[rival]}'); confidence sequences at "
                f"{alpha_each:.3g} each, valid at any time ({summary}; rewards "
                f"{', '.join(str(r) for r in self.rewarded)})",
                weights={n: 1.0 if n == winner else 0.0 for n in self.names},
                arm=winner,
                evidence=evidence,
            )
            return
        top = max(c.upper for c in cs)
        low = min(c.lower for c in cs)
        if low > 0 and top <= low * (1 + cfg.minimum_effect):
            self._hold_reason = (f"no arm is better than another by {cfg.minimum_effect:.0%} or more (every bound within "
                                 f"[{low:.4g}, {top:.4g}]): keep the incumbent ({summary})")
        else:
            self._hold_reason = (f"no arm clears the others yet: '{self.names[best]}' lower bound {cs[best].lower:.4g} "
                                 f"<= '{self.names[rival]}' upper bound {cs[rival].upper:.4g} ({summary})")

    def _evidence(self, cs: list[sq.ConfidenceSequence], alpha_each: float, gap: float) -> dict:
        return {
            "method": "confidence sequence per arm (Beta mixture), Bonferroni over arms; best lower bound > others' upper",
            "statistic": gap,
            "p_value": None,
            "bound": {n: c.as_list() for n, c in zip(self.names, cs)},
            "samples": dict(zip(self.names, self.rewarded)),
            "pulls": dict(zip(self.names, self.pulls)),
            "alpha": alpha_each,
            "alpha_total": self.config.alpha,
            "minimum_effect": self.config.minimum_effect,
        }

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
        else:  # HOLD: resume learning from everything counted meanwhile
            self.reopen()
            self._pinned = self._pinned_weights = None
            self._promotion = None
            self._next_check = 0
            self._hold_reason = "learning resumed"

    def candidate(self) -> str:
        """The arm a bare apply(PROMOTE) pins: the pending PROMOTE's arm, else the arm with the
        best posterior mean (the default, the last arm, would ignore what was learned)."""
        if self._promotion is not None and self._promotion.arm is not None:
            return self._promotion.arm
        means = self._posterior_means()
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

    def p_best(self) -> list[float]:
        """Posterior probability that each arm is the best (Monte Carlo, seeded by the counts so a
        snapshot is reproducible). Shown in ``state()``; the promotion rule does not use it."""
        import numpy as np

        rng = np.random.default_rng([self.config.seed, self.total_rewarded, self.total_pulls])
        draws = rng.beta(self.alpha, self.beta, size=(MONTE_CARLO_DRAWS, len(self.names)))
        wins = np.bincount(draws.argmax(axis=1), minlength=len(self.names))
        return (wins / MONTE_CARLO_DRAWS).tolist()

    def state(self) -> dict:
        allocation = self._allocation()
        p_best = self.p_best()
        cs = self.bounds()
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
                "bound": cs[i].as_list(),
                "p_best": p_best[i],
                "share": allocation[name],
                "outcomes": self.outcomes[i],
                "errors": self.errors[i],
            }
        return {
            "strategy": self.name,
            "algorithm": self.config.algorithm,
            "prior": {"kind": self.config.prior, "alpha": self.prior[0], "beta": self.prior[1]},
            "alpha": self.config.alpha,
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


def kl_bernoulli(p: float, q: float) -> float:
    """KL divergence between Bernoulli(p) and Bernoulli(q)."""
    eps = 1e-15
    p = min(max(p, eps), 1 - eps)
    q = min(max(q, eps), 1 - eps)
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def kl_ucb_index(mean: float, n: int, log_t: float) -> float:
    """The largest q >= mean with n kl(mean, q) <= log t (Garivier & Cappé 2011, c = 0): Newton's
    method from above the root (Pinsker's bound), where the convex, increasing function converges
    monotonically."""
    if n <= 0:
        return 1.0
    level = log_t / n
    if mean >= 1.0:
        return 1.0
    q = min(1.0 - 1e-12, mean + math.sqrt(level / 2.0))  # kl >= 2 (q - p)^2: the root is below this
    if kl_bernoulli(mean, q) <= level:
        return q
    p = max(mean, 1e-15)
    for _ in range(50):
        f = kl_bernoulli(mean, q) - level
        df = (q - p) / (q * (1.0 - q))  # d kl / dq
        if df <= 0:
            break
        step = f / df
        q -= step
        if step < 1e-12:
            break
    return max(q, mean)


def simulate(
    config: BanditConfig,
    means: Sequence[float],
    requests: int = 10_000,
    env_seed: int = 0,
    weights: Optional[Mapping[str, float]] = None,
    batch: int = 1,
) -> dict[str, Any]:
    """Run the strategy against Bernoulli arms (benchmarks and tests): ``batch`` requests are
    routed, then their rewards arrive together (delayed, batched feedback; 1: immediate).

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
    pending: list[tuple[str, str]] = []
    for t in range(requests):
        rid = str(t)
        arm = strategy.route(RouteRequest(rid)).primary
        regret += gap[arm]
        pending.append((rid, arm))
        if len(pending) < batch and t + 1 < requests:
            continue
        for rid, arm in pending:
            strategy.feedback(Feedback(rid, arm, reward=1.0 if draw[arm]() < p[arm] else 0.0))
        pending.clear()
        decision = strategy.decide()
        if promoted is None and decision.verdict is Verdict.PROMOTE:
            promoted = (t + 1, decision.arm)
    return {
        "regret": regret,
        "best_share": strategy._allocation()[best_arm],
        "promoted": promoted,
        "state": strategy.state(),
    }


@hookimpl
def register_traffic_strategies():
    return [BanditStrategy]
