"""The strategy host: the one place a TrafficStrategy is called from while serving.

Pure Python (no Ray, no HTTP), so it is unit-tested without a server. The ingress calls it from
one event loop, one call at a time: route, observe, feedback, decide, apply, set_weights. A
verdict or an operator's command therefore swaps traffic between two requests, never during one.
A strategy that raises in its bookkeeping is logged, never allowed to fail an answer.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any, Mapping

from ..components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict

# Serve's replica logger: in a replica these lines land in the replica's log
log = logging.getLogger("ray.serve")

#: promote / rollback events kept for ``GET -/events`` (their index keeps counting)
EVENTS_KEPT = 1_000
ACTING = (Verdict.PROMOTE.value, Verdict.ROLLBACK.value)
SOURCES = ("strategy", "admin")
_STRATEGY_METHODS = ("route", "observe", "feedback", "decide", "apply", "set_weights", "merge", "state")


class StrategyHost:
    """Hosts one strategy over ``arms`` (arm -> model version) and keeps the events it caused.

    Every event is ``{index, time, verdict, arm, reason, weights, evidence, arms, source}``: ``arm`` is the
    arm answering everything after the verdict, ``arms`` the declared arm -> version map.
    """

    def __init__(self, strategy: TrafficStrategy, arms: Mapping[str, str], events_kept: int = EVENTS_KEPT):
        self.name = str(getattr(strategy, "name", "") or type(strategy).__name__)
        if not arms:
            raise ValueError(f"strategy {self.name!r}: the host needs at least one arm (arm -> model version)")
        missing = [m for m in _STRATEGY_METHODS if not callable(getattr(strategy, m, None))]
        if missing:
            raise TypeError(f"strategy {self.name!r} ({type(strategy).__name__}) lacks {', '.join(missing)}: "
                            "subclass framework.components.TrafficStrategy")
        self.strategy = strategy
        self.arms = dict(arms)
        self.events: deque[dict] = deque(maxlen=max(1, int(events_kept)))
        self.event_count = 0
        #: the strategy's latest verdict (None until decide() first answered)
        self.decision: Decision | None = None
        # the last verdict acted on: a strategy that keeps returning the verdict it was just
        # given through apply() must not flood the events with copies
        self._acted: tuple[str, str] | None = None

    # -- the request path ----------------------------------------------------------------------
    def route(self, request_id: str, key: str | None) -> tuple[RouteRequest, Route]:
        """The strategy's route for a served request. RuntimeError if it names an undeclared arm."""
        route_request = RouteRequest(request_id, key)
        route = self.strategy.route(route_request)
        if route.primary not in self.arms:
            raise RuntimeError(f"strategy {self.name!r} routed to unknown arm {route.primary!r}")
        return route_request, route

    def observe(self, outcome: Outcome) -> None:
        """One arm's answer (or failure) to one request, then a verdict if one is due."""
        try:
            self.strategy.observe(outcome)
        except Exception:  # bookkeeping must not fail an answer that is already computed
            log.exception("strategy %s observe() failed", self.name)
        self.decide()

    def feedback(self, feedback: Feedback) -> None:
        """Feedback the ledger accepted (one answer, new kinds only), then a verdict if one is due."""
        try:
            self.strategy.feedback(feedback)
        except Exception:
            log.exception("strategy %s feedback() failed", self.name)
        self.decide()

    def merge(self, request: RouteRequest, answers: Mapping[str, Any]) -> Any:
        """The strategy's merged answer from the arms that answered; None when merge() fails
        (the primary's own answer is still a good answer)."""
        try:
            return self.strategy.merge(request, answers)
        except Exception:
            log.exception("strategy %s merge() failed; answering the primary's own", self.name)
            return None

    # -- verdicts ------------------------------------------------------------------------------
    def decide(self) -> Decision | None:
        """Ask for a verdict (cheap: HOLD until a window closes) and act on PROMOTE / ROLLBACK,
        once per distinct (verdict, reason). None when decide() raised (logged)."""
        try:
            decision = self.strategy.decide()
        except Exception:
            log.exception("strategy %s decide() failed", self.name)
            return None
        self.decision = decision
        verdict = verdict_name(decision)
        if verdict in ACTING and self._acted != (verdict, decision.reason):
            self._acted = (verdict, decision.reason)
            try:
                self._take(decision, "strategy")
            except Exception:
                log.exception("strategy %s apply(%s) failed", self.name, verdict)
        return decision

    def apply(self, decision: Decision, source: str = "admin") -> dict:
        """An operator's verdict: the strategy applies it (ValueError / NotImplementedError when it
        refuses, nothing recorded), an event is recorded and returned, then a verdict is asked for."""
        if source not in SOURCES:
            raise ValueError(f"event source must be one of {SOURCES}, got {source!r}")
        event = self._take(decision, source)
        self._acted = None  # a later verdict of the strategy is a new one, even if worded the same
        self.decide()
        return event

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Reweight traffic (arms and values already checked by the caller); the strategy's
        NotImplementedError (no weights) or ValueError (refused) propagates."""
        self.strategy.set_weights(weights)
        log.warning("traffic reweighted by admin: %s", dict(weights))
        self.decide()

    def _take(self, decision: Decision, source: str) -> dict:
        self.strategy.apply(decision)
        self.event_count += 1
        event = {
            "index": self.event_count,
            "time": time.time(),
            "verdict": verdict_name(decision),
            "arm": self._answering_arm(decision),
            # the decision's own arm: for a rollback the one traffic was taken from
            "decision_arm": decision.arm,
            "reason": decision.reason,
            "weights": dict(decision.weights) if decision.weights is not None else None,
            "evidence": dict(getattr(decision, "evidence", None) or {}) or None,
            "arms": dict(self.arms),
            "source": source,
        }
        self.events.append(event)
        log.warning("traffic %s by %s: %s (now answering: %s; arms %s)",
                    event["verdict"], source, decision.reason, event["arm"], self.arms)
        return event

    def _answering_arm(self, decision: Decision) -> str | None:
        """The arm answering everything after ``decision`` was applied: the strategy's own word,
        else what the Decision contract implies (PROMOTE: its arm, its heaviest weight or the
        candidate; ROLLBACK: the incumbent; ``Decision.arm`` of a ROLLBACK is the arm losing traffic)."""
        try:
            arm = self.strategy.answering_arm()
            if arm is None:
                if verdict_name(decision) == Verdict.PROMOTE.value:
                    arm = decision.arm or (max(decision.weights, key=decision.weights.get) if decision.weights else None)
                    arm = arm or self.strategy.candidate()
                else:
                    arm = self.strategy.incumbent()
        except Exception:  # an event without its arm beats no event
            log.exception("strategy %s: cannot tell which arm answers after %s", self.name, verdict_name(decision))
            return decision.arm
        return arm

    # -- what the HTTP handlers await (a shared decision state answers these over the network) --
    async def apply_async(self, decision: Decision, source: str = "admin") -> dict:
        return self.apply(decision, source)

    async def set_weights_async(self, weights: Mapping[str, float]) -> None:
        self.set_weights(weights)

    async def snapshot_async(self) -> dict:
        return self.snapshot()

    async def state_async(self) -> dict:
        return self.state()

    async def events_async(self, since: int) -> tuple[list[dict], int]:
        return self.events_since(since), self.event_count

    # -- read-only -----------------------------------------------------------------------------
    def events_since(self, since: int) -> list[dict]:
        """Events with an index above ``since`` (events are numbered from 1), oldest first."""
        return [e for e in self.events if e["index"] > since]

    def state(self) -> dict:
        return self.strategy.state()

    def snapshot(self) -> dict:
        """JSON-able: strategy, arms, its state, the current decision (asked for now), events."""
        decision = self.decide() or self.decision
        return {
            "strategy": self.name,
            "arms": self.arms,
            "state": self.strategy.state(),
            "decision": None if decision is None else {
                "verdict": verdict_name(decision),
                "reason": decision.reason,
                "weights": dict(decision.weights) if decision.weights is not None else None,
            },
            "events": {"count": self.event_count, "last": self.events[-1] if self.events else None},
        }


def verdict_name(decision: Decision) -> str:
    """"promote" / "rollback" / "hold", whether the strategy gave a Verdict or a plain string."""
    return getattr(decision.verdict, "value", decision.verdict)
