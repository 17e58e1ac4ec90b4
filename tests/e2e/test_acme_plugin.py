"""The example third-party package (examples/plugin-acme, installed by `make setup`) end to end:
its recipe, shipped through `recipe_search_paths`, runs data from `acme_jsonl` -> a 2-trial Ray
Tune MLP search -> ONNX -> two registered versions -> Ray Serve behind `acme_round_robin` ->
held-out rows over HTTP -> `acme_class_share`; `acme_audit` logs every lifecycle event. Each acme
component is checked for doing its job, not only for the run being green."""
from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest

from framework import hookimpl
from framework.plugins import Components, get_plugin_manager
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ACME = ROOT / "examples" / "plugin-acme"
ACME_PLUGINS = {"acme_jsonl", "acme_class_share", "acme_round_robin", "acme_audit", "acme_recipes"}


def _onnx_exporter_takes_refs() -> bool:
    from plugins.export_onnx import OnnxExporter

    return "refs" in inspect.signature(OnnxExporter.__init__).parameters


# the planner builds the exporter as OnnxExporter(config, refs=...): until the built-in takes refs the
# export stage fails, whatever the plugin does (the conformance kit reports the same)
needs_exporter_refs = pytest.mark.xfail(not _onnx_exporter_takes_refs(), run=False, strict=True,
                                        reason="plugins/export_onnx.py: OnnxExporter.__init__ takes no refs")


class StrategyProbe:
    """A lifecycle plugin of the test: reads the live strategy's state once online_eval is done."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.strategy: dict | None = None

    @hookimpl
    def on_stage_finished(self, stage, component, status, seconds, metrics):
        if stage == "online_eval":
            self.strategy = httpx.get(self.base_url + "-/strategy", timeout=10,
                                      headers={"X-Admin-Token": ACME_ADMIN_TOKEN}).json()


#: the run reads its admin token from the environment (never from the command line)
ACME_ADMIN_TOKEN = "acme-admin-token-for-the-e2e-test"


@pytest.fixture(scope="module")
def acme_run(ray_session, serve_port, tmp_path_factory):
    base = tmp_path_factory.mktemp("acme")
    env = pytest.MonkeyPatch()
    env.setenv("FRAMEWORK_ADMIN_TOKEN", ACME_ADMIN_TOKEN)
    try:
        probe = StrategyProbe(f"http://127.0.0.1:{serve_port}/")
        components = Components.collect(get_plugin_manager(extra=[probe]))
        plan = plan_recipe(["+recipe=acme_widgets", f"store.uri={base / 'store'}", f"runs_dir={base / 'runs'}",
                            f"serve.port={serve_port}"], components)
        result = execute(plan, components, Reporter(quiet=True))
    finally:
        env.undo()
    stages = {p.name.split("-", 1)[1]: p for p in (result.run_dir / "stages").iterdir()}
    return plan, result, stages, probe, Registry(str(base / "store"))


def test_the_acme_package_is_installed_through_the_entry_point_group():
    pm = get_plugin_manager()
    assert ACME_PLUGINS <= {name for name, _ in pm.list_name_plugin()}
    components = Components.collect(pm)
    assert components.get("data_source", "acme_jsonl", "data.type").plugin == "acme_jsonl"
    assert components.get("monitor", "acme_class_share", "monitor.type").plugin == "acme_class_share"
    assert components.get("traffic_strategy", "acme_round_robin", "strategy.type").plugin == "acme_round_robin"


def test_plan_verb_lists_the_acme_components():
    proc = subprocess.run([sys.executable, "-m", "framework", "plan", "+recipe=acme_widgets", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    assert plan["recipe_path"].endswith("acme_plugins/recipes/acme_widgets.yaml")
    by_stage = {s["stage"]: s["components"] for s in plan["stages"]}
    assert by_stage["data"][0]["type"] == by_stage["data"][0]["plugin"] == "acme_jsonl"
    assert by_stage["serve"][0]["type"] == "acme_round_robin"
    assert [c["type"] for c in by_stage["monitor"]] == ["acme_class_share"]


def test_the_plugin_own_test_suite_passes():
    # as ACME's CI runs it: from the package folder, against the installed framework
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], capture_output=True,
                          text=True, cwd=ACME, timeout=300, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout


@needs_exporter_refs
@pytest.mark.ray
def test_every_stage_runs_on_the_acme_components(acme_run):
    plan, result, _, _, _ = acme_run
    assert result.status == "ok", result.summary
    status = {s.stage: s.status for s in result.stages}
    for stage in ("data", "checks", "version", "train", "export", "register", "serve", "online_eval", "monitor"):
        assert status[stage] == "ok", (stage, result.summary)
    plugins = {s.name: [c.plugin for c in s.components] for s in plan.stages if s.enabled}
    assert plugins["data"] == ["acme_jsonl"] and plugins["serve"] == ["acme_round_robin"]
    assert plugins["monitor"] == ["acme_class_share"]


@needs_exporter_refs
@pytest.mark.ray
def test_acme_jsonl_fed_the_sample_table_to_training(acme_run):
    _, result, _, _, registry = acme_run
    metrics = {s.stage: s.metrics for s in result.stages}
    assert (metrics["data"]["rows"], metrics["data"]["features"], metrics["data"]["classes"]) == (600, 6, 3)
    data_version = registry.get(metrics["version"]["data_version"], kind="data")
    assert data_version.schema["classes"] == ["ok", "rework", "scrap"]
    assert "widget_id" not in data_version.schema["features"]  # text column: not a feature
    assert metrics["train"]["trials"] == 2
    assert metrics["train"]["test_accuracy"] >= 0.8


@needs_exporter_refs
@pytest.mark.ray
def test_acme_round_robin_split_the_served_requests_exactly(acme_run):
    _, result, stages, probe, _ = acme_run
    comparison = json.loads((stages["online_eval"] / "comparison.json").read_text())
    arms = comparison["arms"]  # one entry per row; 80 rows in requests of 8
    assert len(arms) == 80 and comparison["served_predictions"] == comparison["offline_predictions"]
    per_request = [arms[i] for i in range(0, len(arms), 8)]
    assert Counter(per_request) == {"incumbent": 5, "candidate": 5}
    assert all(a != b for a, b in zip(per_request, per_request[1:])), f"weights 1:1 alternate: {per_request}"
    state = probe.strategy["state"]
    assert state["strategy"] == "acme_round_robin"
    assert state["answered"] == {"incumbent": 5, "candidate": 5} and state["final"] is None
    served = result.summary["stages"]
    assert any(s["stage"] == "serve" and set(s["metrics"]["arms"]) == {"incumbent", "candidate"} for s in served)


@needs_exporter_refs
@pytest.mark.ray
def test_acme_class_share_compared_served_and_training_class_mix(acme_run):
    _, _, stages, _, _ = acme_run
    report, = json.loads((stages["monitor"] / "reports.json").read_text())
    metrics = report["metrics"]
    assert report["monitor"] == "acme_class_share"
    assert metrics["served_rows"] == 80 and metrics["judged"] is True
    assert set(metrics["training_shares"]) == {"ok", "rework", "scrap"}
    assert sum(metrics["served_shares"].values()) == pytest.approx(1.0)
    assert sum(metrics["training_shares"].values()) == pytest.approx(1.0)
    shifts = [abs(metrics["served_shares"][c] - metrics["training_shares"][c]) for c in metrics["training_shares"]]
    assert metrics["largest_shift"] == pytest.approx(max(shifts), abs=1e-6)
    assert bool(report["alerts"]) == (metrics["largest_shift"] > 0.15), report["alerts"]


@needs_exporter_refs
@pytest.mark.ray
def test_acme_audit_logged_every_lifecycle_event_of_the_run(acme_run):
    plan, result, stages, _, _ = acme_run
    events = [json.loads(line) for line in (result.run_dir / "acme_audit.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "plan_created" and events[0]["recipe"] == "acme_widgets"
    assert kinds[-1] == "run_finished" and events[-1]["status"] == "ok"
    assert kinds.count("data_versioned") == 1
    assert kinds.count("model_registered") == 2  # the best trial and the runner-up
    finished = [e["stage"] for e in events if e["event"] == "stage_finished"]
    assert finished == [s.name for s in plan.stages if s.enabled]
    report, = json.loads((stages["monitor"] / "reports.json").read_text())
    assert [e["alert"] for e in events if e["event"] == "alert_raised"] == report["alerts"]
