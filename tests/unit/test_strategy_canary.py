"""The `canary` traffic strategy: steps, windows and statistical gates, with simulated traffic."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.testing import SimulatedArm, simulate_traffic
from plugins import strategy_canary
from plugins.strategy_canary import CanaryConfig, CanaryStrategy, Gates

ARMS = {"champion": "m@champion", "challenger": "m:v2"}
HEALTHY = {"champion": SimulatedArm(error_rate=0.001), "challenger": SimulatedArm(error_rate=0.001)}


def make(**kwargs) -> CanaryStrategy:
    return CanaryStrategy(CanaryConfig(**kwargs), arms=ARMS)


def rollout(seed: int, behaviours=HEALTHY, requests: int = 6000, **kwargs):
    s = make(**kwargs)
    result = simulate_traffic(s, behaviours, requests=requests, seed=seed, apply_decisions=True)
    return s, result


def test_registered_through_the_hook():
    assert strategy_canary.register_traffic_strategies() == [CanaryStrategy]
    assert issubclass(CanaryStrategy, TrafficStrategy) and CanaryStrategy.name == "canary"


@pytest.mark.parametrize(
    "arms, words",
    [
        ({"champion": "x"}, ["missing challenger"]),
        ({"champion": "x", "challenger": "y", "other": "z"}, ["unexpected other"]),
        ({"a": "x", "b": "y"}, ["missing champion, challenger", "unexpected a, b"]),
    ],
)
def test_arms_must_be_champion_and_challenger(arms, words):
    with pytest.raises(RecipeError) as info:
        CanaryStrategy.arm_names(CanaryConfig(), arms)
    msg = str(info.value)
    assert "serve.models" in msg and "strategy.champion" in msg and "strategy.challenger" in msg
    assert all(w in msg for w in words), msg
    assert list(CanaryStrategy.arm_names(CanaryConfig(champion="a", challenger="b"), {"a": "x", "b": "y"})) == ["a", "b"]


@pytest.mark.parametrize(
    "config, key",
    [
        (CanaryConfig(steps=[]), "strategy.steps"),
        (CanaryConfig(steps=[25, 5, 100]), "strategy.steps"),
        (CanaryConfig(steps=[0, 50]), "strategy.steps"),
        (CanaryConfig(steps=[50, 150]), "strategy.steps"),
        (CanaryConfig(window_requests=0), "strategy.window_requests"),
        (CanaryConfig(challenger="champion"), "strategy.challenger"),
        (CanaryConfig(gates=Gates(error_rate_max=2.0)), "strategy.gates.error_rate_max"),
        (CanaryConfig(gates=Gates(p99_latency_ms_max=0.0)), "strategy.gates.p99_latency_ms_max"),
        (CanaryConfig(gates=Gates(alpha=0.7)), "strategy.gates.alpha"),
        (CanaryConfig(gates=Gates(min_feedback=0)), "strategy.gates.min_feedback"),
    ],
)
def test_config_errors_name_the_key(config, key):
    with pytest.raises(RecipeError, match=re.escape(key)):
        CanaryStrategy.check_config(config, "strategy")


def test_routes_the_step_share_to_the_challenger_stickily_and_monotonically():
    s = make()
    n = 20_000
    share = sum(s.route(RouteRequest(f"r{i}")).primary == "challenger" for i in range(n)) / n
    assert abs(share - 0.05) < 0.01
    users = [f"user{u}" for u in range(2000)]
    at5 = {u for u in users if s.route(RouteRequest("a", key=u)).primary == "challenger"}
    assert all(s.route(RouteRequest(f"b{j}", key=u)).primary == "challenger" for u in at5 for j in range(3))
    s.set_weights({"champion": 0.75, "challenger": 0.25})
    at25 = {u for u in users if s.route(RouteRequest("c", key=u)).primary == "challenger"}
    assert at5 <= at25  # a user moved to the canary stays there as the share grows
    assert abs(len(at25) / len(users) - 0.25) < 0.03


def test_window_sizes_and_step_progression_of_a_healthy_canary():
    s, result = rollout(seed=11)
    assert result.final is not None and result.final.verdict is Verdict.PROMOTE
    assert result.final.reason.startswith("challenger passed all steps (5%, 25%, 50%, 100%)")
    assert result.final.arm == "challenger" and dict(result.final.weights) == {"champion": 0.0, "challenger": 1.0}
    history = s.state()["history"]
    assert [h["percent"] for h in history] == [5, 25, 50, 100]
    # the challenger's share of window_requests=500, but never fewer than 50 requests
    assert [h["target"] for h in history] == [50, 125, 250, 500]
    assert [h["verdict"] for h in history] == ["pass", "pass", "pass", "promote"]
    assert all(h["challenger"]["requests"] == h["target"] for h in history)


def test_step_reasons():
    s = make()
    reasons = []
    simulate_traffic(s, HEALTHY, requests=6000, seed=12, on_decision=lambda i, d: reasons.append(d.reason))
    steps = [r.split(":")[0] for r in reasons if "->" in r]
    assert steps == ["step 5% -> 25%", "step 25% -> 50%", "step 50% -> 100%"]
    assert re.fullmatch(r"window 1 \(step 5%\): [01]/50 challenger requests", reasons[0]), reasons[0]


def test_injected_errors_roll_back_within_three_windows():
    bad = {"champion": SimulatedArm(error_rate=0.001), "challenger": SimulatedArm(error_rate=0.05)}
    windows = []
    for seed in range(30):
        s, result = rollout(seed, bad)
        d = result.final
        assert d is not None and d.verdict is Verdict.ROLLBACK, f"seed {seed}: {d}"
        assert re.match(r"error_rate 0\.\d{3} > 0\.01 over \d+ challenger requests \(windows? [\d-]+, step \d+%\)", d.reason), d.reason
        assert d.arm == "challenger" and dict(d.weights) == {"champion": 1.0, "challenger": 0.0}
        windows.append(s.state()["history"][-1]["window"])
        assert {s.route(RouteRequest(f"x{i}")) for i in range(100)} == {Route("champion")}  # applied
    assert max(windows) <= 3, windows


def test_healthy_canary_is_never_rolled_back_in_100_rollouts():
    # (their cost is measured in benchmarks/strategy_decisions.py, not timed here)
    for seed in range(100):
        s, result = rollout(seed)
        d = result.final
        assert d is not None and d.verdict is Verdict.PROMOTE, f"seed {seed}: false {d}"


def test_immediate_rollback_before_the_window_ends():
    s = make()
    s.set_weights({"champion": 1, "challenger": 1})  # 50 %: a 250-request window
    from plugins.strategy_canary import _rate_mixture

    for i in range(60):
        s.observe(Outcome(f"ok{i}", "challenger", 5.0))
    errors = 0
    while True:
        errors += 1
        s.observe(Outcome(f"e{errors}", "challenger", 5.0, error=True))
        d = s.decide()
        lower = _rate_mixture(0.01).bounds(errors, 60 + errors, 0.05).lower
        if d.verdict is Verdict.ROLLBACK:
            break
        assert lower <= 0.01  # held exactly as long as the bound allowed
    assert lower > 0.01 and 60 + errors < 250  # long before the window's end
    assert d.reason.startswith(f"error_rate {errors / (60 + errors):.3f} > 0.01 over {60 + errors} challenger requests (windows 1-2, step 50%)")
    assert "valid at any time" in d.reason
    assert d.evidence["gate"] == "error_rate" and d.evidence["bound"]["error_rate"][0] > 0.01
    assert d.evidence["samples"]["challenger"]["errors"] == errors


def test_false_rollbacks_do_not_grow_with_the_number_of_windows():
    # a challenger exactly at the tolerated error rate: the worst case for a false rollback.
    # One binomial test per window at alpha would roll it back in far more than alpha of the
    # rollouts once there are many windows; the confidence sequence keeps it below alpha
    at_limit = {"champion": SimulatedArm(error_rate=0.02), "challenger": SimulatedArm(error_rate=0.02)}
    rolled_back = 0
    for seed in range(60):
        s, result = rollout(seed, at_limit, requests=5000, steps=[10, 20, 30, 40, 50, 60, 70, 80, 90, 100],
                            window_requests=300, gates=Gates(error_rate_max=0.02))
        rolled_back += result.final is not None and result.final.verdict is Verdict.ROLLBACK
    assert rolled_back <= 7, rolled_back  # alpha 0.05 of 60 rollouts is 3; 8 or more has chance ~0.01


def test_latency_gate_trips_with_its_reason_and_a_fast_challenger_passes():
    gates = Gates(p99_latency_ms_max=50.0)
    slow = {"champion": SimulatedArm(latency_ms=10), "challenger": SimulatedArm(latency_ms=40, latency_sigma=0.3)}
    s, result = rollout(1, slow, gates=gates)
    d = result.final
    assert d.verdict is Verdict.ROLLBACK
    assert re.match(r"p99_latency_ms \d+\.\d > 50 over \d+ challenger requests \(windows? [\d-]+, step \d+%\): \d+ answers slower than 50 ms", d.reason), d.reason
    fast = {"champion": SimulatedArm(latency_ms=10), "challenger": SimulatedArm(latency_ms=20, latency_sigma=0.25)}
    _, result = rollout(1, fast, gates=gates)  # p99 ~ 36 ms
    assert result.final.verdict is Verdict.PROMOTE


def test_accuracy_gate_trips_with_its_reason():
    gates = Gates(accuracy_delta_min=-0.02, min_feedback=30)
    worse = {"champion": SimulatedArm(accuracy=0.95), "challenger": SimulatedArm(accuracy=0.70)}
    s, result = rollout(2, worse, gates=gates)
    d = result.final
    assert d.verdict is Verdict.ROLLBACK
    assert re.match(r"accuracy_delta -0\.\d{3} < -0\.02 \(challenger 0\.\d{3} on \d+ vs champion 0\.\d{3} on \d+ labelled", d.reason), d.reason
    equal = {"champion": SimulatedArm(accuracy=0.9), "challenger": SimulatedArm(accuracy=0.9)}
    _, result = rollout(2, equal, gates=gates)
    assert result.final.verdict is Verdict.PROMOTE


def test_accuracy_gate_waits_for_feedback():
    s = make(gates=Gates(accuracy_delta_min=0.0, min_feedback=30))
    simulate_traffic(s, HEALTHY, requests=3000, seed=3, feedback_rate=0.0)
    d = s.decide()
    assert d.verdict is Verdict.HOLD
    assert d.reason == "window 1 (step 5%): waiting for feedback, challenger 0/30, champion 0/30 labelled"
    for i in range(30):
        s.feedback(Feedback(f"f{i}", "challenger", label=1, prediction=1))
        s.feedback(Feedback(f"g{i}", "champion", label=1, prediction=1))
    assert s.decide().reason.startswith("step 5% -> 25%")


def test_finished_rollout_holds_and_routing_waits_for_apply():
    s = make()
    for i in range(60):
        s.observe(Outcome(f"e{i}", "challenger", 5.0, error=i % 2 == 0))
    d = s.decide()
    assert d.verdict is Verdict.ROLLBACK
    again = s.decide()
    assert again.verdict is Verdict.HOLD and again.reason == f"rollout finished: rollback: {d.reason}"
    share = sum(s.route(RouteRequest(f"r{i}")).primary == "challenger" for i in range(4000)) / 4000
    assert 0.03 < share < 0.07  # the host has not applied it yet: still the 5 % step
    s.apply(d)
    assert {s.route(RouteRequest(f"r{i}")) for i in range(500)} == {Route("champion")}
    assert s.decide().reason == again.reason
    assert s.state()["percent"] == 0.0


def test_operator_promote_and_bad_weights():
    s = make()
    with pytest.raises(ValueError):
        s.set_weights({"ghost": 1.0})
    with pytest.raises(ValueError):
        s.apply(Decision(Verdict.PROMOTE, "no such arm", arm="ghost"))
    s.apply(Decision(Verdict.PROMOTE, "looks good"))
    assert {s.route(RouteRequest(f"r{i}")) for i in range(200)} == {Route("challenger")}
    d = s.decide()
    assert d.verdict is Verdict.HOLD and d.reason == "rollout finished: promote by operator: looks good"


def test_operator_promote_naming_the_champion_keeps_it():
    # Decision.arm is honoured (the TrafficStrategy contract): the champion answers everything
    s = make()
    s.apply(Decision(Verdict.PROMOTE, "keep the champion", arm="champion"))
    assert {s.route(RouteRequest(f"r{i}")) for i in range(200)} == {Route("champion")}
    assert s.answering_arm() == "champion" and s.state()["percent"] == 0.0
    assert s.decide().reason == "rollout finished: promote by operator: keep the champion"


def test_state_is_json_and_complete():
    s, _ = rollout(5, requests=1500)
    state = json.loads(json.dumps(s.state()))
    assert state["champion"] == "champion" and state["challenger"] == "challenger"
    assert {"step", "percent", "window", "window_progress", "arms", "window_arms", "history", "gates"} <= set(state)
    assert state["arms"]["challenger"]["requests"] > 0
    assert set(state["arms"]["champion"]) >= {"requests", "errors", "error_rate", "latency_ms", "accuracy"}


def test_no_ray_or_scipy_import():
    code = "import sys, plugins.strategy_canary; print('ray' in sys.modules, 'scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


def test_reward_gate_rolls_back_a_challenger_that_earns_less():
    # a business metric beside the model metrics: the challenger is as accurate and as healthy,
    # but its answers earn 20% less revenue per request
    gates = Gates(reward_delta_min=-0.05, min_feedback=30)
    poorer = {"champion": SimulatedArm(reward_mean=1.0, reward_sd=0.3), "challenger": SimulatedArm(reward_mean=0.8, reward_sd=0.3)}
    s, result = rollout(4, poorer, gates=gates)
    d = result.final
    assert d.verdict is Verdict.ROLLBACK and d.reason.startswith("reward_delta -0.")
    assert d.evidence["gate"] == "reward" and set(d.evidence["bound"]["reward"]) == {"champion", "challenger"}
    same = {arm: SimulatedArm(reward_mean=1.0, reward_sd=0.3) for arm in ARMS}
    _, result = rollout(4, same, gates=gates)
    assert result.final.verdict is Verdict.PROMOTE
    with pytest.raises(RecipeError, match=r"strategy\.gates\.reward_delta_min"):
        CanaryStrategy.check_config(CanaryConfig(gates=Gates(reward_delta_min=float("nan"))), "strategy")
