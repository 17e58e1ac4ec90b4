"""Monitoring on a real rollout: the canary recipe's simulated users send requests and, later
and out of order, the true labels through POST /feedback; the performance monitor joins them to
the answers by request id from the record log, per model version, and its estimate made before
labels is checked against the true accuracy."""
from __future__ import annotations

import json

import pytest

from framework.plugins import Components, get_plugin_manager
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def test_true_accuracy_from_late_labels_and_the_estimate_before_them(ray_session, serve_port, tmp_path):
    components = Components.collect(get_plugin_manager())
    plan = plan_recipe(["+recipe=canary", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        f"serve.port={serve_port}", "monitor=performance", "train.max_epochs=6", "online_eval.rows=16",
                        "strategy.steps=[20,50,100]", "strategy.window_requests=60",
                        "strategy.min_challenger_requests=30", "traffic.requests=1200"], components)
    result = execute(plan, components, Reporter(quiet=True))
    assert result.status == "ok", result.summary
    traffic = json.loads(next((result.run_dir / "stages").glob("*-traffic")).joinpath("traffic.json").read_text())
    monitor_dir = next((result.run_dir / "stages").glob("*-monitor"))
    report = json.loads((monitor_dir / "performance.json").read_text())

    versions = report["versions"]
    assert set(versions) == set(result.state.app.models.values())  # champion and challenger
    labels = sum(w["labels"] for v in versions.values() for w in v["windows"])
    assert labels >= 0.8 * traffic["requests"]  # the users' late labels, joined by request id
    for version, v in versions.items():
        window, = v["windows"]
        assert v["calibrated_on"] == len(result.state.splits.val)
        assert window["accuracy"] > 0.85 and window["estimated_accuracy"] > 0.85
        assert window["estimate_error"] < 0.08, (version, window)
        low, high = window["accuracy_interval"]
        assert low <= window["accuracy"] <= high
    assert (monitor_dir / "report.html").read_text().count('data-panel="accuracy"') == 1
