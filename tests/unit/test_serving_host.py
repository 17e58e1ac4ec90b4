"""StrategyHost without Ray: routing, signals, verdicts acted on once, admin commands, events."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass

import pytest

from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.serving.host import StrategyHost
from plugins.strategy_canary import CanaryConfig, CanaryStrategy
from plugins.strategy_single import SingleConfig, SingleStrategy

ARMS = {"champion": "v-champion", "challenger": "v-challenger"}


@dataclass
class ScriptedConfig:
    pass


class Scripted(TrafficStrategy):
    """Routes every request to ``champion``; ``decide`` returns whatever the test set in ``next``;
    ``apply`` is the base class's (honours ``Decision.arm``, sets ``answering_arm()``)."""

    name = "scripted"
    Config = ScriptedConfig

    def __init__(self, config=None, arms=ARMS):
        super().__init__(config, arms)
        self.next = Decision(Verdict.HOLD, "waiting")
        self.outcomes: list[Outcome] = []
        self.feedbacks: list[Feedback] = []
        self.decided = 0

    def choose(self, request: RouteRequest) -> Route:
        return Route("champion")

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def feedback(self, feedback: Feedback) -> None:
        self.feedbacks.append(feedback)

    def decide(self) -> Decision:
        self.decided += 1
        return self.next

    def state(self) -> dict:
        return {"outcomes": len(self.outcomes), "final": self.final}


def host_of(strategy=None, **kwargs) -> tuple[StrategyHost, TrafficStrategy]:
    strategy = strategy or Scripted()
    return StrategyHost(strategy, ARMS, **kwargs), strategy


# -- construction ------------------------------------------------------------------------------
def test_construction_validates_arms_and_strategy():
    with pytest.raises(ValueError, match="at least one arm"):
        StrategyHost(Scripted(), {})
    with pytest.raises(TypeError, match="lacks .*route.*TrafficStrategy"):
        StrategyHost(object(), ARMS)


def test_the_host_module_imports_neither_ray_nor_starlette():
    code = ("import sys, framework.serving.host; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'starlette')))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# -- the request path --------------------------------------------------------------------------
def test_route_returns_the_request_and_the_strategys_route():
    host, _ = host_of()
    request, route = host.route("rid-1", "user-7")
    assert request == RouteRequest("rid-1", "user-7") and route == Route("champion")


def test_route_to_an_undeclared_arm_is_an_internal_error():
    class Stray(Scripted):
        def choose(self, request):
            return Route("nowhere")

    host, _ = host_of(Stray())
    with pytest.raises(RuntimeError, match="'scripted' routed to unknown arm 'nowhere'"):
        host.route("rid", None)


def test_outcome_and_feedback_reach_the_strategy_then_decide():
    host, strategy = host_of()
    outcome = Outcome("rid", "champion", 1.5, prediction="a")
    host.observe(outcome)
    assert strategy.outcomes == [outcome] and strategy.decided == 1
    feedback = Feedback("rid", "champion", label="a", prediction="a")
    host.feedback(feedback)
    assert strategy.feedbacks == [feedback] and strategy.decided == 2
    assert host.decision == Decision(Verdict.HOLD, "waiting") and host.event_count == 0


def test_merge_failure_is_logged_and_none(caplog):
    host, _ = host_of()  # Scripted does not merge: the base class raises NotImplementedError
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        assert host.merge(RouteRequest("rid"), {"champion": [1]}) is None
    assert "merge() failed" in caplog.text


# -- verdicts ----------------------------------------------------------------------------------
def test_promote_naming_an_arm_without_weights_names_that_arm_in_the_event():
    host, strategy = host_of()
    strategy.next = Decision(Verdict.PROMOTE, "challenger wins", arm="challenger")
    host.observe(Outcome("rid", "champion", 1.0))
    [event] = host.events_since(0)
    assert event["verdict"] == "promote" and event["arm"] == "challenger" and event["weights"] is None
    assert event["source"] == "strategy" and event["reason"] == "challenger wins" and event["index"] == 1
    assert event["arms"] == ARMS and isinstance(event["time"], float)
    assert host.route("rid-2", None)[1] == Route("challenger")  # the verdict was applied


def test_a_verdict_is_acted_on_once_per_distinct_reason():
    host, strategy = host_of()
    strategy.next = Decision(Verdict.ROLLBACK, "too many errors")
    for _ in range(5):
        host.observe(Outcome("rid", "champion", 1.0, error=True))
    assert host.event_count == 1
    strategy.next = Decision(Verdict.ROLLBACK, "too many errors, again")
    host.decide()
    assert host.event_count == 2 and [e["reason"] for e in host.events_since(1)] == ["too many errors, again"]


def test_event_arm_falls_back_to_the_decision_contract():
    """Canary's apply() does not record answering_arm(): the event still names who answers."""
    host, canary = host_of(CanaryStrategy(CanaryConfig(), ARMS))
    assert canary.answering_arm() is None
    for i in range(60):  # challenger errors: a rollback once min_challenger_requests (50) answered
        host.observe(Outcome(f"r{i}", "challenger", 1.0, error=True))
    [event] = host.events_since(0)
    assert event["verdict"] == "rollback" and event["arm"] == "champion"  # not Decision.arm (the loser)
    assert event["evidence"]["gate"] == "error_rate"  # the verdict's evidence, copied into the event
    assert host.route("next", "user-1")[1] == Route("champion")


def test_admin_rollback_is_applied_recorded_and_resets_the_acted_verdict():
    host, strategy = host_of()
    strategy.next = Decision(Verdict.PROMOTE, "challenger wins", arm="challenger")
    host.decide()
    event = host.apply(Decision(Verdict.ROLLBACK, "operator says no"), "admin")
    assert event == host.events_since(1)[0]
    assert (event["index"], event["verdict"], event["arm"], event["source"]) == (2, "rollback", "champion", "admin")
    # after the command the same promote, worded the same, is a new verdict: acted on again
    assert host.event_count == 3 and host.events_since(2)[0]["source"] == "strategy"


def test_admin_verdict_the_strategy_refuses_records_nothing():
    host, strategy = host_of()
    with pytest.raises(ValueError, match="cannot promote 'ghost'"):
        host.apply(Decision(Verdict.PROMOTE, "typo", arm="ghost"), "admin")
    assert host.event_count == 0 and host.events_since(0) == []
    with pytest.raises(ValueError, match="source"):
        host.apply(Decision(Verdict.ROLLBACK), "cron")


def test_set_weights_reaches_the_strategy_or_refuses():
    host, _ = host_of()
    with pytest.raises(NotImplementedError, match="no traffic weights"):
        host.set_weights({"champion": 1.0})


def test_a_strategy_that_raises_is_logged_not_fatal(caplog):
    class Broken(Scripted):
        def observe(self, outcome):
            raise KeyError("observe")

        def feedback(self, feedback):
            raise KeyError("feedback")

        def decide(self):
            raise ZeroDivisionError("decide")

    host, _ = host_of(Broken())
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        host.observe(Outcome("rid", "champion", 1.0))
        host.feedback(Feedback("rid", "champion", label=1))
        assert host.decide() is None
        snapshot = host.snapshot()
    assert "observe() failed" in caplog.text and "feedback() failed" in caplog.text
    assert "decide() failed" in caplog.text and "ZeroDivisionError" in caplog.text
    assert snapshot["decision"] is None and host.event_count == 0


def test_a_failing_apply_of_the_strategys_own_verdict_is_logged(caplog):
    class Refuses(Scripted):
        def apply(self, decision):
            raise ValueError("not now")

    host, strategy = host_of(Refuses())
    strategy.next = Decision(Verdict.PROMOTE, "go")
    with caplog.at_level(logging.ERROR, logger="ray.serve"):
        host.decide()
    assert "apply(promote) failed" in caplog.text and host.event_count == 0


# -- events and snapshot -----------------------------------------------------------------------
def test_events_since_and_the_bounded_log():
    host, strategy = host_of(events_kept=2)
    for i in range(4):
        strategy.next = Decision(Verdict.PROMOTE, f"verdict {i}", weights={"challenger": 1.0})
        host.decide()
    assert host.event_count == 4
    assert [e["index"] for e in host.events_since(0)] == [3, 4]  # the oldest were dropped
    assert [e["index"] for e in host.events_since(3)] == [4] and host.events_since(4) == []
    assert host.events_since(0)[0]["arm"] == "challenger"


def test_snapshot_is_json_and_asks_for_the_current_decision():
    host, strategy = host_of()
    strategy.next = Decision(Verdict.PROMOTE, "ready", weights={"champion": 0.0, "challenger": 1.0})
    snapshot = host.snapshot()
    assert json.loads(json.dumps(snapshot)) == snapshot
    assert snapshot["strategy"] == "scripted" and snapshot["arms"] == ARMS
    assert snapshot["decision"] == {"verdict": "promote", "reason": "ready", "weights": {"champion": 0.0, "challenger": 1.0}}
    assert snapshot["events"]["count"] == 1 and snapshot["events"]["last"]["arm"] == "challenger"
    assert snapshot["state"] == {"outcomes": 0, "final": "challenger"}


def test_with_the_single_plugin():
    host = StrategyHost(SingleStrategy(SingleConfig(), {"primary": "v1"}), {"primary": "v1"})
    for i in range(3):
        _, route = host.route(f"r{i}", None)
        host.observe(Outcome(f"r{i}", route.primary, 2.0))
    snapshot = host.snapshot()
    assert snapshot["state"]["requests"] == 3 and snapshot["decision"]["verdict"] == "hold"
    assert host.event_count == 0
