"""The ``rollback`` action on a real canary served by Ray Serve over HTTP: an alert rolls the
challenger back through the app's admin API, and the event says what the strategy did."""
from __future__ import annotations

import uuid

import httpx
import pytest

from framework import Alert
from framework.context import RunStageContext
from framework.plugins import default_components
from framework.run import plan_recipe
from framework.serving import deploy, fetch_events, shutdown_app
from framework.stages.act import CoreActionContext, act_on_alerts
from framework.stages.state import RunState
from plugins.strategy_canary import CanaryConfig, CanaryStrategy
from plugins.strategy_single import SingleConfig, SingleStrategy

from test_serving_http import TOKEN, instance, make_onnx, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

ALERT = Alert("performance", "accuracy_drop", "accuracy of m:2 0.41 below 0.80", {"accuracy": 0.41}, 1.0)


def act(tmp_path, app):
    plan = plan_recipe(["+recipe=quickstart", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        "+actions=[{type: rollback, on: [accuracy_drop]}]"])
    ctx = RunStageContext("act", tmp_path / "act")
    actx = CoreActionContext(plan, RunState(app=app), ctx, default_components())
    return act_on_alerts(plan, plan.stage("act").components, [ALERT], actx, ctx)


def test_rollback_action_rolls_a_running_canary_back_through_the_admin_api(ray_session, serve_port, tmp_path):
    name = f"it-rollback-{uuid.uuid4().hex[:6]}"
    models = [served_model(make_onnx(seed=0), arm="champion", version="m:1"),
              served_model(make_onnx(seed=1), arm="challenger", version="m:2")]
    app = deploy(models, CanaryStrategy, CanaryConfig(steps=[50, 100]), port=serve_port, route_prefix=f"/{name}",
                 app_name=name, admin_token=TOKEN, ingress="proxy")
    try:
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            arms = {client.post(app.predict_url, json={"instances": [instance([1, 2, 3, 4])]},
                                headers={"X-User-Id": f"u{i}"}).json()["arm"] for i in range(40)}
            assert arms == {"champion", "challenger"}  # half the users on the challenger
            [event] = act(tmp_path, app)
            assert event["status"] == "done" and event["result"]["rolled_back"] is True, event
            assert event["result"]["event"]["verdict"] == "rollback"
            assert "accuracy_drop alert from performance" in event["result"]["event"]["reason"]
            # every request is the champion's now, and the app's events say why
            after = {client.post(app.predict_url, json={"instances": [instance([1, 2, 3, 4])]},
                                 headers={"X-User-Id": f"u{i}"}).json()["arm"] for i in range(40)}
            assert after == {"champion"}
            assert fetch_events(app)[-1]["verdict"] == "rollback"
    finally:
        shutdown_app(app)


def test_rollback_of_a_single_model_is_recorded_and_it_keeps_answering(ray_session, serve_port, tmp_path):
    name = f"it-rollback-single-{uuid.uuid4().hex[:6]}"
    app = deploy([served_model(make_onnx(), arm="primary", version="m:1")], SingleStrategy, SingleConfig(),
                 port=serve_port, route_prefix=f"/{name}", app_name=name, admin_token=TOKEN, ingress="proxy")
    try:
        [event] = act(tmp_path, app)
    finally:
        shutdown_app(app)
    # the strategy records the rollback; its one arm is what it "rolls back" to
    assert event["status"] == "done" and event["result"]["event"]["verdict"] == "rollback"
    assert event["result"]["event"]["arm"] == "primary" and event["result"]["event"]["source"] == "admin"
