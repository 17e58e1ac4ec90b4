"""The `single` traffic strategy: pure Python, so tested without Ray."""
from __future__ import annotations

import json
import time

import pytest

from framework.components import Decision, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from plugins import strategy_single
from plugins.strategy_single import LATENCY_WINDOW, SingleConfig, SingleStrategy


def test_registered_through_the_hook():
    assert strategy_single.register_traffic_strategies() == [SingleStrategy]
    assert issubclass(SingleStrategy, TrafficStrategy)
    assert SingleStrategy.name == "single"
    assert SingleStrategy.Config is SingleConfig


def test_declared_as_entry_point_and_collected_by_the_core():
    from importlib.metadata import entry_points

    from framework.plugins import ENTRY_POINT_GROUP, Components, get_plugin_manager

    names = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert names.get("strategy_single") == "plugins.strategy_single"
    # Only this plugin: the others are not under test here (and may not import in isolation).
    pm = get_plugin_manager(load_entry_points=False, extra=[strategy_single])
    entry = Components.collect(pm).get("traffic_strategy", "single", "strategy.type")
    assert entry.cls is SingleStrategy


def test_routes_every_request_to_the_only_arm():
    s = SingleStrategy(SingleConfig(), arms={"primary": "v1"})
    routes = {s.route(RouteRequest(f"r{i}", key=str(i % 3))) for i in range(100)}
    assert routes == {Route(primary="primary")}
    assert s.route(RouteRequest("x")).shadows == ()


def test_none_config_means_defaults():
    s = SingleStrategy(None, arms={"only": "v7"})
    assert s.arm == "only"
    assert isinstance(s.config, SingleConfig)


def test_named_arm_among_several():
    arms = {"champion": "v1", "challenger": "v2"}
    assert list(SingleStrategy.arm_names(SingleConfig(arm="challenger"), arms)) == ["challenger"]
    s = SingleStrategy(SingleConfig(arm="challenger"), arms=arms)
    assert s.route(RouteRequest("r")).primary == "challenger"


@pytest.mark.parametrize("arms", [{}, {"a": "v1", "b": "v2"}])
def test_ambiguous_arms_are_a_recipe_error(arms):
    with pytest.raises(RecipeError) as info:
        SingleStrategy.arm_names(SingleConfig(), arms)
    assert "serve.models" in str(info.value) and "strategy.arm" in str(info.value)
    with pytest.raises(RecipeError):
        SingleStrategy(SingleConfig(), arms=arms)


def test_unknown_named_arm_is_a_recipe_error():
    with pytest.raises(RecipeError) as info:
        SingleStrategy.arm_names(SingleConfig(arm="nope"), {"primary": "v1"})
    msg = str(info.value)
    assert "strategy.arm" in msg and "serve.models" in msg and "'nope'" in msg and "primary" in msg


def test_observe_counts_and_latency_percentiles():
    s = SingleStrategy(SingleConfig(), arms={"primary": "v1"})
    for i in range(1, 101):
        s.observe(Outcome(f"r{i}", "primary", latency_ms=float(i)))
    s.observe(Outcome("bad1", "primary", latency_ms=500.0, error=True))
    s.observe(Outcome("bad2", "primary", latency_ms=500.0, error=True))
    state = s.state()
    assert state["requests"] == 102
    assert state["errors"] == 2
    assert state["error_rate"] == pytest.approx(2 / 102)
    assert state["latency_ms"]["p50"] == 50.0  # errors do not count toward latency
    assert state["latency_ms"]["p99"] == 99.0
    assert state["arm"] == "primary" and state["model_version"] == "v1"
    json.dumps(state)  # JSON-able, for the admin endpoint and reports


def test_empty_state():
    state = SingleStrategy(SingleConfig(), arms={"primary": "v1"}).state()
    assert state["requests"] == 0 and state["error_rate"] == 0.0
    assert state["latency_ms"]["p50"] is None and state["latency_ms"]["p99"] is None


def test_latency_window_is_bounded():
    s = SingleStrategy(SingleConfig(), arms={"primary": "v1"})
    for i in range(LATENCY_WINDOW * 3):
        s.observe(Outcome(str(i), "primary", latency_ms=1.0))
    assert s.state()["latency_ms"]["window"] == LATENCY_WINDOW
    assert s.state()["requests"] == LATENCY_WINDOW * 3


def test_decide_always_holds():
    s = SingleStrategy(SingleConfig(), arms={"primary": "v1"})
    for i in range(50):
        s.observe(Outcome(str(i), "primary", latency_ms=1.0, error=True))  # even 100 % errors
    d = s.decide()
    assert isinstance(d, Decision)
    assert d.verdict is Verdict.HOLD
    assert d.reason == "single strategy never changes traffic"


def test_hot_path_is_microseconds():
    s = SingleStrategy(SingleConfig(), arms={"primary": "v1"})
    req = RouteRequest("r", key="u")
    out = Outcome("r", "primary", latency_ms=3.0)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        s.route(req)
        s.observe(out)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    assert per_call_us < 20, f"route+observe took {per_call_us:.1f} µs"


def test_no_ray_import():
    import subprocess
    import sys

    code = "import sys, plugins.strategy_single; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
