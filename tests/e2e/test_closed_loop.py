"""The closed loop in one run on real data (recipes/weather_loop.yaml): a model trained on 2012's
weather is served, 2014's days are sent, the monitors see drift, the retrain action trains on a
new data version (2014's file appended as a batch) and the canary promotes the new model to prod."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from framework.plugins import default_components
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[2]
WEATHER = ROOT / "recipes" / "data" / "weather"


def test_drift_retrains_on_the_new_data_version_and_the_canary_promotes_it(ray_session, serve_port, tmp_path):
    plan = plan_recipe(["+recipe=weather_loop", f"data.path={WEATHER / '2012.csv'}",
                        f"traffic.path={WEATHER / '2014.csv'}", f"actions.1.data.path={WEATHER / '2014.csv'}",
                        f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        f"serve.port={serve_port}", "train.max_epochs=8"])
    result = execute(plan, default_components(), Reporter(quiet=True), keep_serving=False)
    stages = {s.stage: s for s in result.stages}
    assert result.status == "ok", result.summary["error"]

    # the served traffic (2014) drifted from the training rows (2012), and no request failed
    assert stages["traffic"].metrics["errors"] == 0
    assert stages["monitor"].metrics["alerts"] >= 1
    actions = json.loads(next(result.run_dir.glob("stages/*-act/actions.json")).read_text())
    assert any(e["alert_kind"] == "drift" for e in actions), [e["alert_kind"] for e in actions]

    # one incident, one retrain: the first matching alert retrains, the rest are in cooldown
    retrains = [e for e in actions if e["action"] == "retrain"]
    done = [e for e in retrains if e["status"] == "done"]
    assert len(done) == 1, [(e["status"], e.get("error")) for e in retrains]
    assert all(e["status"] == "cooldown" for e in retrains if e is not done[0])
    event = done[0]
    assert event["evidence"] and event["alert"]  # the monitor's figures travel with the event
    assert any(e["action"] == "log" and e["status"] == "done" for e in actions)

    # a new model version from a newer data version (2014's rows appended as a batch)
    retrain = event["result"]
    registry = Registry(str(tmp_path / "store"))
    first_model = registry.get(result.summary["model_version"], "model")
    new_model = registry.get(retrain["model_version"], "model")
    assert new_model.id != first_model.id
    assert retrain["data_version"] != retrain["served_data_version"]
    new_data = registry.get(retrain["data_version"], "data")
    assert new_model.lineage["data_version"] == new_data.id
    assert new_data.parent == registry.get(retrain["served_data_version"], "data").id

    # canaried against prod on the running app and promoted, with no failed request
    rollout = retrain["rollout"]
    assert rollout["strategy"] == "canary" and rollout["verdict"] == "promote", rollout
    assert rollout["errors"] == 0, rollout["statuses"]
    # a simulated user kept sending requests while the app retrained and was redeployed in place
    meanwhile = retrain["during_retrain_and_deploy"]
    assert meanwhile["requests"] > 0 and meanwhile["errors"] == 0, meanwhile
    assert retrain["promoted"] and registry.get("seattle_loop@prod", "model").id == new_model.id
    assert stages["act"].metrics["actions_failed"] == 0
    assert stages["act"].metrics["retrain_status"] == "promoted" and stages["act"].metrics["prod"] == new_model.ref
    # the monitoring report shows the actions taken on its alerts
    page = next(result.run_dir.glob("stages/*-monitor/report.html")).read_text()
    assert 'data-panel="actions"' in page and "promoted" in page and retrain["model_version"] in page
