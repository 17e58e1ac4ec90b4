"""The `shadow` traffic strategy: pure Python, so tested without Ray."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from framework.components import Decision, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.testing import SimulatedArm, simulate_traffic
from plugins import strategy_shadow
from plugins.strategy_shadow import PENDING_MAX, ShadowConfig, ShadowStrategy

ARMS = {"primary": "m@champion", "shadow": "m:v2"}


def make(**kwargs) -> ShadowStrategy:
    return ShadowStrategy(ShadowConfig(**kwargs), arms=ARMS)


def test_registered_through_the_hook():
    assert strategy_shadow.register_traffic_strategies() == [ShadowStrategy]
    assert issubclass(ShadowStrategy, TrafficStrategy) and ShadowStrategy.name == "shadow"


def test_registered_through_the_entry_point():
    from framework.plugins import Components, get_plugin_manager

    pm = get_plugin_manager(load_entry_points=False, extra=[strategy_shadow])
    assert Components.collect(pm).get("traffic_strategy", "shadow", "strategy.type").cls is ShadowStrategy


@pytest.mark.parametrize(
    "arms, primary",
    [
        ({"a": "x", "champion": "y"}, "champion"),
        ({"a": "x", "primary": "y", "champion": "z"}, "primary"),
        ({"b": "x", "a": "y"}, "b"),
    ],
)
def test_default_primary(arms, primary):
    s = ShadowStrategy(ShadowConfig(), arms)
    assert s.primary == primary
    assert s.route(RouteRequest("r")) == Route(primary, tuple(a for a in arms if a != primary))


def test_arm_validation_names_the_recipe_keys():
    with pytest.raises(RecipeError, match="serve.models"):
        ShadowStrategy.arm_names(ShadowConfig(), {"only": "x"})
    with pytest.raises(RecipeError, match="strategy.primary") as info:
        ShadowStrategy.arm_names(ShadowConfig(primary="nope"), ARMS)
    assert "'nope'" in str(info.value) and "shadow" in str(info.value)
    with pytest.raises(RecipeError, match=r"strategy\.fraction"):
        ShadowStrategy.check_config(ShadowConfig(fraction=1.5), "strategy")
    with pytest.raises(RecipeError, match=r"strategy\.window_requests"):
        ShadowStrategy.check_config(ShadowConfig(window_requests=0), "strategy")


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.3, 1.0])
def test_fraction_is_respected_and_stable_per_request_id(fraction):
    s = make(fraction=fraction)
    n = 20_000
    mirrored = sum(bool(s.route(RouteRequest(f"req-{i}")).shadows) for i in range(n))
    assert abs(mirrored / n - fraction) < 0.015
    again = make(fraction=fraction)  # a fresh instance (another replica) mirrors the same ids
    assert all(s.route(RouteRequest(f"req-{i}")) == again.route(RouteRequest(f"req-{i}")) for i in range(500))
    assert {s.route(RouteRequest(f"req-{i}")).primary for i in range(500)} == {"primary"}


def test_agreement_pairs_answers_in_any_order_and_skips_errors():
    s = make(window_requests=1000)
    for i in range(100):
        rid = f"r{i}"
        primary = Outcome(rid, "primary", 10.0, prediction=i % 2)
        shadow = Outcome(rid, "shadow", 20.0, prediction=i % 2 if i < 70 else 1 - i % 2)  # agrees on 70
        first, second = (shadow, primary) if i % 3 == 0 else (primary, shadow)  # a third arrive shadow-first
        s.observe(first)
        s.observe(second)
    s.observe(Outcome("e1", "primary", 10.0, error=True))
    s.observe(Outcome("e1", "shadow", 20.0, prediction=1))
    s.observe(Outcome("e2", "primary", 10.0, prediction=1))
    s.observe(Outcome("e2", "shadow", 20.0, error=True))
    s.observe(Outcome("r5", "shadow", 20.0, prediction=9))  # a duplicate after the pair completed
    agreement = s.state()["agreement"]["shadow"]
    assert agreement == {"compared": 100, "agreed": 70, "rate": 0.7}
    assert s.state()["pending_pairs"] <= 1  # only the orphan duplicate waits


def test_agreement_on_arrays_and_unorderable_predictions():
    s = make()
    s.observe(Outcome("a", "primary", 1.0, prediction=np.array([0.2, 0.8])))
    s.observe(Outcome("a", "shadow", 1.0, prediction=np.array([0.2, 0.8])))
    s.observe(Outcome("b", "primary", 1.0, prediction=np.array([1, 2])))
    s.observe(Outcome("b", "shadow", 1.0, prediction=np.array([1, 2, 3])))  # shapes differ
    assert s.state()["agreement"]["shadow"] == {"compared": 2, "agreed": 1, "rate": 0.5}


def test_windows_are_recorded_and_decide_always_holds():
    s = make(window_requests=50)
    reasons = []
    for i in range(130):
        s.observe(Outcome(f"r{i}", "primary", float(i % 10 + 1), prediction=1))
        s.observe(Outcome(f"r{i}", "shadow", float(i % 10 + 11), error=(i % 25 == 0), prediction=1))
        d = s.decide()
        assert d.verdict is Verdict.HOLD
        reasons.append(d.reason)
    windows = s.state()["windows"]
    assert [w["window"] for w in windows] == [1, 2]
    w = windows[0]
    assert w["requests"] == 50
    rec = w["shadows"]["shadow"]
    assert rec["compared"] == 48 and rec["agreement"] == 1.0  # 2 shadow errors in the first 50
    assert rec["error_rate"] == {"primary": 0.0, "shadow": 2 / 50}
    assert rec["latency_ms"]["primary"] == {"p50": 5.0, "p99": 10.0}
    assert rec["latency_ms"]["shadow"]["p50"] == 15.0 and rec["latency_ms"]["shadow"]["p99"] == 20.0
    closing = [r for r in reasons if r.startswith("window 1 (50 requests)")]
    assert len(closing) == 1 and "shadow agrees 100.0% (48 compared)" in closing[0]
    assert "p99 20.0 vs 10.0 ms" in closing[0] and "errors 4.0% vs 0.0%" in closing[0]
    assert reasons[-1].startswith("window 3: 30/50 requests")
    json.dumps(s.state())


def test_simulated_agreement_matches_the_arms_accuracy():
    # two independent 90 %-accurate binary classifiers agree 0.9*0.9 + 0.1*0.1 = 82 % of the time
    s = make(window_requests=500)
    behaviours = {"primary": SimulatedArm(accuracy=0.9), "shadow": SimulatedArm(accuracy=0.9, error_rate=0.02)}
    result = simulate_traffic(s, behaviours, requests=4000, seed=7, stop_on_decision=False)
    assert result.decisions == []  # shadow never moves traffic
    state = s.state()
    assert abs(state["agreement"]["shadow"]["rate"] - 0.82) < 0.02
    assert len(state["windows"]) == 8
    assert abs(state["arms"]["shadow"]["error_rate"] - 0.02) < 0.01


def test_pending_pairs_are_bounded():
    s = make()
    for i in range(PENDING_MAX * 2):
        s.observe(Outcome(f"orphan{i}", "shadow", 1.0, prediction=1))
    assert s.state()["pending_pairs"] == PENDING_MAX


def test_three_arms_compare_each_shadow_with_the_primary():
    s = ShadowStrategy(ShadowConfig(primary="live", window_requests=10), {"live": "a", "s1": "b", "s2": "c"})
    for i in range(10):
        s.observe(Outcome(str(i), "s2", 1.0, prediction=0))
        s.observe(Outcome(str(i), "live", 1.0, prediction=1))
        s.observe(Outcome(str(i), "s1", 1.0, prediction=1))
    s.decide()
    rec = s.state()["windows"][0]["shadows"]
    assert rec["s1"]["agreement"] == 1.0 and rec["s2"]["agreement"] == 0.0
    assert s.state()["pending_pairs"] == 0


@pytest.mark.parametrize("verdict, arm", [(Verdict.PROMOTE, "shadow"), (Verdict.ROLLBACK, "primary")])
def test_operator_verdicts(verdict, arm):
    s = make()
    assert (s.incumbent(), s.candidate()) == ("primary", "shadow")
    s.apply(Decision(verdict, "looked at the windows"))
    assert {s.route(RouteRequest(f"r{i}")) for i in range(100)} == {Route(arm)}
    d = s.decide()
    assert d.verdict is Verdict.HOLD and d.reason.startswith("shadowing finished")
    assert s.state()["primary"] == arm and s.state()["shadows"] == []


def test_no_reweighting():
    with pytest.raises(NotImplementedError):
        make().set_weights({"primary": 0.5, "shadow": 0.5})


def test_no_ray_import():
    code = "import sys, plugins.strategy_shadow; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
