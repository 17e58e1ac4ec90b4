"""Actions (recipe list ``actions``): planned and validated like every component, found through
the entry-point group, acting on alerts with a cooldown; webhook tested against a real loopback
HTTP receiver."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from framework import Alert, RecipeError
from framework.context import RunStageContext
from framework.plugins import default_components
from framework.run import plan_recipe
from framework.stages.act import ACTIONS_FILE, act_on_alerts

DRIFT = Alert("whylogs_drift", "drift", "drift in feature 'x'", {"columns_drifted": 1, "drifted": ["x"]}, 1.0)
ACCURACY = Alert("performance", "accuracy_drop", "accuracy 0.41 below 0.80", {"accuracy": 0.41}, 2.0)


def plan_with(tmp_path, actions: str, *extra: str):
    return plan_recipe(["+recipe=quickstart", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        f"+actions={actions}", *extra])


class Receiver:
    """A loopback HTTP server that keeps every JSON body POSTed to it."""

    def __init__(self, status: int = 200):
        bodies = self.bodies = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_actions_are_a_component_kind_found_through_the_entry_points():
    names = default_components().names("action")
    assert {"log", "webhook", "rollback", "retrain"} <= set(names)
    plugins = {n: default_components().get("action", n, "t").plugin for n in ("log", "webhook", "rollback", "retrain")}
    assert plugins == {"log": "action_log", "webhook": "action_webhook", "rollback": "action_rollback",
                       "retrain": "action_retrain"}


@pytest.mark.parametrize("actions, where", [
    ("[{type: lgo}]", "actions[0].type: unknown action type 'lgo'. Did you mean 'log'?"),
    ("[{type: log, on: [drfit]}]", "actions[0].on[0]: unknown alert kind 'drfit'. Did you mean 'drift'?"),
    ("[{type: log, cooldown_s: -5}]", "actions[0].cooldown_s: expected a number of seconds >= 0"),
    ("[{type: log, level: loud}]", "actions[0].level: expected one of info, warning, error"),
    ("[{type: log}, {type: webhook, url: 'http://example.com/hook'}]", "actions[1].url: host 'example.com' is not loopback"),
    ("[{type: webhook, url: 'ftp://127.0.0.1/x'}]", "actions[0].url: expected an http(s) URL"),
    ("[{type: retrain, strategy: canery}]", "actions[0].strategy: unknown traffic_strategy type 'canery'. Did you mean 'canary'?"),
    ("[{type: retrain, strategy_options: {stepz: [1]}}]", "actions[0].strategy_options: Key 'stepz' not in 'CanaryConfig'"),
    ("[{type: retrain, data: {window: {versions: 1}}}]", "actions[0].data.window"),
    ("[{type: retrain, bogus: 1}]", "actions[0].bogus"),
])
def test_an_action_is_validated_at_plan_time_naming_the_key(tmp_path, actions, where):
    with pytest.raises(RecipeError) as err:
        plan_with(tmp_path, actions)
    assert where in str(err.value)


def test_actions_need_a_monitor(tmp_path):
    with pytest.raises(RecipeError, match=r"actions\[0\]: actions act on the monitors' alerts"):
        plan_with(tmp_path, "[{type: log}]", "monitor=[]")


def test_on_and_cooldown_are_core_keys_and_an_unquoted_on_reads_as_a_key(tmp_path):
    plan = plan_with(tmp_path, "[{type: log, on: [drift, accuracy_drop], cooldown_s: 30}, {type: retrain}]")
    log, retrain = plan.stage("act").components
    assert log.trigger.on == ["drift", "accuracy_drop"] and log.trigger.cooldown_s == 30
    assert retrain.trigger.on == ["any"] and retrain.trigger.cooldown_s == 0
    assert plan.describe()["stages"][-1]["components"][0]["trigger"] == {"on": ["drift", "accuracy_drop"],
                                                                         "cooldown_s": 30.0}


def test_webhook_posts_each_alert_with_its_evidence_to_a_loopback_receiver(tmp_path, caplog):
    receiver = Receiver()
    try:
        plan = plan_with(tmp_path, f"[{{type: log}}, {{type: webhook, url: '{receiver.url}', on: [drift]}}]")
        ctx = RunStageContext("act", tmp_path / "act")
        with caplog.at_level("WARNING", logger="framework.alerts"):
            events = act_on_alerts(plan, plan.stage("act").components, [DRIFT, ACCURACY], None, ctx)
    finally:
        receiver.close()
    # log acts on both alerts; webhook only on drift
    assert [(e["action"], e["alert_kind"], e["status"]) for e in events] == [
        ("log", "drift", "done"), ("log", "accuracy_drop", "done"), ("webhook", "drift", "done")]
    assert receiver.bodies == [{"event": "alert", "monitor": "whylogs_drift", "kind": "drift",
                                "message": "drift in feature 'x'", "evidence": {"columns_drifted": 1, "drifted": ["x"]},
                                "time": 1.0}]
    assert events[2]["result"]["status_code"] == 200 and events[2]["evidence"] == DRIFT.evidence
    assert "drift alert from whylogs_drift: drift in feature 'x'" in caplog.text
    assert json.loads((tmp_path / "act" / ACTIONS_FILE).read_text()) == events


def test_a_failing_webhook_is_a_failed_event_and_the_other_actions_still_run(tmp_path):
    receiver = Receiver(status=500)
    try:
        plan = plan_with(tmp_path, f"[{{type: webhook, url: '{receiver.url}'}}, {{type: log}}]")
        events = act_on_alerts(plan, plan.stage("act").components, [DRIFT], None,
                               RunStageContext("act", tmp_path / "act"))
    finally:
        receiver.close()
    assert [(e["action"], e["status"]) for e in events] == [("webhook", "failed"), ("log", "done")]
    assert "answered 500" in events[0]["error"]


def test_a_cooldown_makes_one_incident_one_action_across_alerts_and_runs(tmp_path):
    receiver = Receiver()
    try:
        plan = plan_with(tmp_path, f"[{{type: webhook, url: '{receiver.url}', cooldown_s: 600}}]")
        first = act_on_alerts(plan, plan.stage("act").components, [DRIFT, ACCURACY, DRIFT], None,
                              RunStageContext("act", tmp_path / "a1"))
        # a later run (or monitor call) on the same store: still the same incident
        again = plan_with(tmp_path, f"[{{type: webhook, url: '{receiver.url}', cooldown_s: 600}}]")
        second = act_on_alerts(again, again.stage("act").components, [DRIFT], None,
                               RunStageContext("act", tmp_path / "a2"))
    finally:
        receiver.close()
    assert [e["status"] for e in first] == ["done", "cooldown", "cooldown"]
    assert [e["status"] for e in second] == ["cooldown"] and "cooldown 600 s" in second[0]["note"]
    assert len(receiver.bodies) == 1


def test_retrain_on_data_no_newer_than_the_served_model_stops_before_training(tmp_path):
    """The source re-read gives the rows the served model learnt from: no new data version, so no
    training, no registration, no rollout (and no Ray)."""
    from pathlib import Path

    from framework.registry import Registry
    from framework.stages.act import retrain_and_roll_out
    from framework.stages.state import RunState

    year = Path(__file__).resolve().parents[2] / "recipes" / "data" / "weather" / "2012.csv"
    plan = plan_recipe(["+recipe=weather_loop", f"data.path={year}", f"store.uri={tmp_path / 'store'}",
                        f"runs_dir={tmp_path / 'runs'}"])
    components = default_components()
    state = RunState(registry=Registry(str(tmp_path / "store")))
    for stage in plan.stages:
        if stage.name in ("data", "checks", "version") and stage.enabled:
            stage.spec.load_runner()(plan, stage, state, RunStageContext(stage.name, tmp_path / stage.name), components)
    served = state.data_ref
    result = retrain_and_roll_out(plan, state, components, RunStageContext("act", tmp_path / "act"), tmp_path / "retrain",
                                  DRIFT, {"path": str(year)}, None, None)
    assert result["status"] == "no newer data" and result["data_version"] == served, result
    assert "model_version" not in result and not list((tmp_path / "retrain").glob("*-train"))
