"""Traffic strategy ``single``: one model answers every request; it never changes traffic.

Pure Python (no Ray import): the ingress calls ``route`` (which asks ``choose``) and ``observe``
in-process on every request, so both are O(1) — counters plus a bounded deque of recent latencies.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from framework.components import Decision, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.strategy_tools import nearest_rank_percentile as _percentile
from framework.hookspecs import hookimpl

#: latencies kept for the percentiles: enough for a stable p99, small enough to sort on demand
LATENCY_WINDOW = 2048


@dataclass
class SingleConfig:
    #: the arm (a key of ``serve.models``) that answers; None: the only arm declared
    arm: Optional[str] = None


class SingleStrategy(TrafficStrategy):
    name = "single"
    Config = SingleConfig
    summary = "one model answers every request; never promotes or rolls back"
    sticky = True  # trivially: the answering arm never depends on the request

    def __init__(self, config: SingleConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        self.arm = self.routable[0]
        self._route = Route(primary=self.arm)  # immutable: built once, returned every time
        self.requests = 0
        self.errors = 0
        self._latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    @classmethod
    def arm_names(cls, config: SingleConfig | None, arms: Mapping[str, str]) -> Sequence[str]:
        arm = getattr(config, "arm", None)
        declared = list(arms)
        if arm is None:
            if len(declared) != 1:
                raise RecipeError(
                    f"strategy.arm: strategy 'single' serves one model, but serve.models declares "
                    f"{len(declared)} arm(s) ({', '.join(declared) or 'none'}). Declare exactly one "
                    f"arm under serve.models, or name the answering arm with strategy.arm=NAME."
                )
            return declared
        if arm not in arms:
            raise RecipeError(
                f"strategy.arm: '{arm}' is not an arm of serve.models "
                f"(declared: {', '.join(declared) or 'none'}). Set strategy.arm to one of them."
            )
        return [arm]

    def choose(self, request: RouteRequest) -> Route:
        return self._route

    def observe(self, outcome: Outcome) -> None:
        if outcome.arm != self.arm:  # a shadow someone else scheduled: not ours to count
            return
        self.requests += 1
        if outcome.error:
            self.errors += 1
        else:
            self._latencies.append(outcome.latency_ms)

    def decide(self) -> Decision:
        return Decision(Verdict.HOLD, "single strategy never changes traffic", weights={self.arm: 1.0})

    def state(self) -> dict:
        lat = sorted(self._latencies)
        return {
            "strategy": self.name,
            "arm": self.arm,
            "model_version": self.arms.get(self.arm),
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": (self.errors / self.requests) if self.requests else 0.0,
            "latency_ms": {
                "window": len(lat),
                "p50": _percentile(lat, 50),
                "p99": _percentile(lat, 99),
            },
        }


@hookimpl
def register_traffic_strategies():
    return [SingleStrategy]
