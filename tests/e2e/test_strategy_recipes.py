"""Every traffic-strategy recipe end to end over real HTTP: train, register the candidates, serve
them on Ray Serve, drive simulated users with feedback, and check the decision taken."""
from __future__ import annotations

import json

import pytest

from framework.plugins import Components, get_plugin_manager
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

FAST_TRAIN = ["train.max_epochs=6", "online_eval.rows=16"]


def run_recipe(name, tmp_path, serve_port, *overrides):
    components = Components.collect(get_plugin_manager())
    plan = plan_recipe([f"+recipe={name}", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        f"serve.port={serve_port}", "monitor=none", *overrides], components)
    result = execute(plan, components, Reporter(quiet=True))
    assert result.status == "ok", result.summary
    traffic_dir = next((result.run_dir / "stages").glob("*-traffic"))
    return result, json.loads((traffic_dir / "traffic.json").read_text()), Registry(str(tmp_path / "store"))


def test_canary_promotes_a_healthy_challenger_and_moves_prod(ray_session, serve_port, tmp_path):
    result, traffic, registry = run_recipe(
        "canary", tmp_path, serve_port, *FAST_TRAIN, "strategy.steps=[20,50,100]",
        "strategy.window_requests=60", "strategy.min_challenger_requests=30", "traffic.requests=1500",
    )
    verdicts = [d["verdict"] for d in traffic["decisions"]]
    assert verdicts == ["promote"], traffic["decisions"]
    assert "passed all steps" in traffic["decisions"][0]["reason"]
    challenger = result.state.model_versions[1]
    assert registry.get("breast_cancer_mlp@prod").id == challenger.id
    history = traffic["strategy"]["state"]["history"]
    assert [w["percent"] for w in history] == [20.0, 50.0, 100.0]
    assert traffic["statuses"] == {"200": traffic["requests"]}


def test_canary_rolls_back_a_failing_challenger_with_its_reason(ray_session, serve_port, tmp_path):
    result, traffic, registry = run_recipe(
        "canary_degraded", tmp_path, serve_port, *FAST_TRAIN, "serve.faults.challenger.error_rate=0.3",
        "strategy.window_requests=200", "strategy.min_challenger_requests=40", "traffic.requests=1500",
    )
    decisions = traffic["decisions"]
    assert [d["verdict"] for d in decisions] == ["rollback"]
    assert "error_rate" in decisions[0]["reason"]
    assert decisions[0]["source"] == "strategy"
    # prod was never moved to the challenger (this recipe sets only `latest`)
    with pytest.raises(Exception):
        registry.get("breast_cancer_mlp@prod")
    # after the rollback the champion answers everything: no more injected failures
    assert traffic["per_arm"]["champion"] > traffic["per_arm"].get("challenger", 0)


def test_ab_test_splits_sticky_and_reports_a_verdict(ray_session, serve_port, tmp_path):
    _, traffic, _ = run_recipe("ab_test", tmp_path, serve_port, "online_eval.rows=16", "traffic.requests=800",
                               "strategy.min_samples_per_arm=150")
    state = traffic["strategy"]["state"]
    share_a = traffic["per_arm"]["a"] / traffic["requests"]
    assert 0.3 < share_a < 0.7, traffic["per_arm"]
    decision = traffic["strategy"]["decision"]
    assert decision["verdict"] == "hold"
    assert "winner" in state or "need" in decision["reason"] or "p=" in decision["reason"], decision


def test_shadow_never_answers_and_records_agreement(ray_session, serve_port, tmp_path):
    _, traffic, _ = run_recipe("shadow", tmp_path, serve_port, *FAST_TRAIN, "traffic.requests=450",
                               "strategy.window_requests=100")
    assert set(traffic["per_arm"]) == {"primary"}
    windows = traffic["strategy"]["state"]["windows"]
    assert len(windows) >= 3
    for window in windows:
        shadow = window["shadows"]["shadow"]
        # fraction 1.0: every request mirrored. Shadows run after the answer left, and on the
        # direct path the next requests (4 clients) come back within a millisecond, ahead of
        # them: some shadow answers land in the next window, none is lost (the sum below)
        assert abs(shadow["mirrored"] - window["requests"]) <= 16, window
        assert shadow["compared"] > 0 and 0.8 <= shadow["agreement"] <= 1.0  # two good models mostly agree
        assert shadow["latency_ms"]["shadow"]["p50"] is not None
    mirrored = sum(w["shadows"]["shadow"]["mirrored"] for w in windows)
    assert abs(mirrored - sum(w["requests"] for w in windows)) <= 16, windows


def test_bandit_allocates_most_traffic_to_the_best_arm(ray_session, serve_port, tmp_path):
    result, traffic, _ = run_recipe("bandit", tmp_path, serve_port, "online_eval.rows=16", "traffic.requests=1500",
                                    "traffic.stop_on_decision=false")
    accuracy = {arm: result.state.model_versions[rank].metrics["test_accuracy"]
                for arm, rank in (("best", 1), ("middle", 3), ("worst", 6))}
    assert accuracy["best"] > accuracy["worst"]
    share = traffic["per_arm"]
    assert share["best"] > share["worst"], (share, accuracy)


def test_interleaving_credits_clicks_and_names_a_winner(ray_session, serve_port, tmp_path):
    _, traffic, _ = run_recipe("ranking", tmp_path, serve_port, "traffic.requests=600",
                               "traffic.stop_on_decision=false")
    state = traffic["strategy"]["state"]
    assert traffic["statuses"] == {"200": traffic["requests"]}
    if state["mode"] == "interleaving":  # no verdict acted on: every query was interleaved
        assert state["queries"]["merged"] == traffic["requests"]
    else:  # a winner was promoted mid-run: interleaving stopped there, the winner alone serves
        assert state["mode"] == "promoted" and 0 < state["queries"]["merged"] < traffic["requests"]
    assert state["queries"]["degraded"] == 0
    wins = state["wins"]
    clicks = state["clicks"]
    assert sum(clicks.values()) > 0 and sum(wins.values()) > 0  # clicks were credited to teams
    assert set(wins) == {"incumbent", "challenger"}
    assert state["verdict"] in ("hold", "promote") and "p" in state["reason"]
