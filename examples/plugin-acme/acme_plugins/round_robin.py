"""Traffic strategy ``acme_round_robin``: a deterministic weighted split, with a rollback gate.

Smooth weighted round-robin (nginx's): with weights 3:1 the arms answer A A B A, A A B A ...
exactly, whatever the request ids, so a small experiment gets exactly the traffic it asked for.
``choose`` computes the next arm from the current counters without moving them; ``routed`` (the
base class's ``route`` calls it for a served request) moves them.

The candidate (the last arm) is rolled back once it answered ``min_requests`` requests and its
error rate is above ``max_error_rate``; otherwise the strategy holds. Pure Python, O(arms) per
request.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict

from framework import Decision, Outcome, Route, RouteRequest, TrafficStrategy, Verdict, hookimpl
from framework.errors import RecipeError


class RoundRobinStrategy(TrafficStrategy):
    name = "acme_round_robin"
    summary = "deterministic weighted round-robin; rolls the candidate back on a high error rate"

    @dataclass
    class Config:
        #: arm -> weight; empty: equal weights
        weights: Dict[str, float] = field(default_factory=dict)
        #: the candidate's error rate above which it is rolled back
        max_error_rate: float = 0.05
        #: requests the candidate must have answered before it is judged
        min_requests: int = 50

    @classmethod
    def check_config(cls, config, key, refs=None):
        if any(w < 0 for w in config.weights.values()) or (config.weights and sum(config.weights.values()) <= 0):
            raise RecipeError(f"{key}.weights: weights must be >= 0 and not all 0, got {dict(config.weights)}")
        if not 0.0 <= config.max_error_rate < 1.0:
            raise RecipeError(f"{key}.max_error_rate: must be in [0, 1), got {config.max_error_rate}")
        if config.min_requests < 1:
            raise RecipeError(f"{key}.min_requests: must be >= 1, got {config.min_requests}")

    @classmethod
    def arm_names(cls, config, arms):
        routable = list(super().arm_names(config, arms))
        unknown = sorted(set(config.weights) - set(routable))
        if unknown:
            raise RecipeError(f"strategy.weights: {unknown} are not arms of serve.models ({', '.join(routable)})")
        return routable

    def __init__(self, config, arms, refs=None):
        super().__init__(config, arms, refs)
        self._set(self.config.weights or {arm: 1.0 for arm in self.routable})
        self.answered = dict.fromkeys(self.routable, 0)
        self.errors = dict.fromkeys(self.routable, 0)

    def _set(self, weights: Dict[str, float]) -> None:
        self.weights = {arm: float(weights.get(arm, 0.0)) for arm in self.routable}
        self.total = sum(self.weights.values())
        self.current = dict.fromkeys(self.routable, 0.0)  # smooth WRR counters, restarted

    def _next(self) -> str:
        # the arm whose counter would be largest after this round's increments (first on ties)
        return max(self.routable, key=lambda arm: self.current[arm] + self.weights[arm])

    def choose(self, request: RouteRequest) -> Route:
        return Route(self._next())

    def routed(self, request: RouteRequest, route: Route) -> None:
        for arm, weight in self.weights.items():
            self.current[arm] += weight
        self.current[route.primary] -= self.total

    def observe(self, outcome: Outcome) -> None:
        if outcome.arm in self.answered:
            self.answered[outcome.arm] += 1
            self.errors[outcome.arm] += bool(outcome.error)

    def decide(self) -> Decision:
        if self.final is not None:
            return Decision(Verdict.HOLD, f"rollout over: '{self.final}' answers everything")
        candidate = self.candidate()
        n, errors = self.answered[candidate], self.errors[candidate]
        if len(self.routable) > 1 and n >= self.config.min_requests and errors / n > self.config.max_error_rate:
            return Decision(Verdict.ROLLBACK, f"candidate '{candidate}' failed {errors} of {n} requests "
                            f"({errors / n:.1%} > {self.config.max_error_rate:.1%})", arm=candidate)
        return Decision(Verdict.HOLD, f"weighted round-robin; candidate '{candidate}' {errors} errors in {n}",
                        weights={arm: w / self.total for arm, w in self.weights.items()})

    def set_weights(self, weights) -> None:
        unknown = sorted(set(weights) - set(self.routable))
        if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
            raise ValueError(f"weights over {sorted(weights)}: need arms of {self.routable}, >= 0, not all 0")
        self._set(dict(weights))

    def state(self) -> dict:
        return {"strategy": self.name, "weights": self.weights, "answered": self.answered, "errors": self.errors,
                "final": self.final}


@hookimpl
def register_traffic_strategies():
    return [RoundRobinStrategy]
