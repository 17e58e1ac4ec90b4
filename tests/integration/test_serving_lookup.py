"""Precomputed answers served by key (``POST /lookup``) over real HTTP on a real Ray Serve: a
prediction table from the registry loaded into the running app, answers with their age, stale
ones reported, a key not precomputed predicted online (or a 404 naming it), and the admin load
guarded by the admin token."""
from __future__ import annotations

import uuid

import httpx
import pandas as pd
import pytest

from framework.components import raw_instances
from framework.registry import Registry
from framework.registry.versions import PREDICTIONS_FILE
from framework.serving import deploy, shutdown_app
from framework.testing import make_stage_context
from plugins.batch_onnx import OnnxBatchPredictor
from plugins.strategy_single import SingleConfig, SingleStrategy
from test_serving_oip import typed_cars_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]
TOKEN = "admin-token-for-the-lookup-tests-0123456789"


@pytest.fixture(scope="module")
def served(ray_session, serve_port, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lookup")
    splits, exported, model = typed_cars_model(tmp, "cars:lookup-1")
    name = f"it-lookup-{uuid.uuid4().hex[:6]}"
    app = deploy([model], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name,
                 admin_token=TOKEN)
    yield app, splits, exported, tmp
    shutdown_app(app)


def test_lookup_answers_from_the_table_with_age_and_falls_back_online(served, tmp_path):
    app, splits, exported, _ = served
    frame = splits.dataset.frame
    rows = raw_instances(frame, splits.dataset.features)
    keys = [f"car-{i}" for i in range(len(frame))]
    with httpx.Client(timeout=30, trust_env=False) as client:
        r = client.post(app.url + "lookup", json={"key": "car-0"})
        assert r.status_code == 404 and "no prediction table is loaded" in r.json()["error"]["reason"]

        # the first 100 cars precomputed; the first 50 of them two hours ago
        precomputed = frame.head(100)
        predictions = OnnxBatchPredictor().predict(exported, precomputed, make_stage_context(tmp_path, "batch"))
        now = pd.Timestamp.now(tz="UTC")
        table = pd.DataFrame({"key": keys[:100], "prediction": predictions.tolist(),
                              "computed_at": [now - pd.Timedelta(hours=2)] * 50 + [now] * 50})
        registry = Registry(tmp_path / "store")
        version = registry.put_predictions("cars_lookup", table, {"model_version": "cars:lookup-1",
                                                                  "data_version": "cars:test"})
        load = {"path": registry.file_location(version, PREDICTIONS_FILE), "table": version.ref,
                "model_version": "cars:lookup-1", "max_age_s": 3600, "fallback": "online"}
        assert client.post(app.url + "-/admin/lookup", json=load).status_code == 401  # the admin token guards it
        r = client.post(app.url + "-/admin/lookup", json=load, headers=app.admin_headers())
        assert r.status_code == 200, r.text
        assert r.json()["lookup"]["keys"] == 100 and r.json()["lookup"]["stale"] is True

        online = client.post(app.predict_url, json={"instances": rows[:120]}).json()["predictions"]
        fresh = client.post(app.url + "lookup", json={"key": "car-70"}).json()
        assert fresh["source"] == "precomputed" and fresh["prediction"] == online[70] and fresh["stale"] is False
        assert 0 <= fresh["age_s"] < 60 and fresh["table"] == version.ref and fresh["model_version"] == "cars:lookup-1"
        old = client.post(app.url + "lookup", json={"key": "car-3", "instance": rows[3]}).json()
        assert old["source"] == "precomputed" and old["stale"] is True and 7100 < old["age_s"] < 7300
        assert old["prediction"] == online[3]
        # not precomputed: predicted online from the instance (nulls and strings as /predict takes them)
        for i in (100, 110, 119):
            answer = client.post(app.url + "lookup", json={"key": keys[i], "instance": rows[i]}).json()
            assert answer["source"] == "online" and answer["prediction"] == online[i]
            assert answer["model_version"] == "cars:lookup-1" and answer["age_s"] == 0.0
        r = client.post(app.url + "lookup", json={"key": "car-200"})
        assert r.status_code == 404 and "'car-200' was not precomputed" in r.json()["error"]["reason"]
        bad = client.post(app.url + "lookup", json={"key": "car-200", "instance": {**rows[200], "Make": 3}})
        assert bad.status_code in (400, 422) and bad.json()["error"]["field"] == "instance.Make"
        assert client.post(app.url + "lookup", json={"key": ["x"]}).status_code in (400, 422)

        # the recipe says no fallback: a 404 even with the instance
        r = client.post(app.url + "-/admin/lookup", json={**load, "fallback": "none"}, headers=app.admin_headers())
        assert r.status_code == 200
        r = client.post(app.url + "lookup", json={"key": "car-200", "instance": rows[200]})
        assert r.status_code == 404 and "fallback: none" in r.json()["error"]["reason"]
        figures = client.post(app.url + "-/admin/lookup", json={}, headers=app.admin_headers()).json()["lookup"]
        assert figures["answers"]["online"] == 3 and figures["answers"]["precomputed"] == 2
        assert figures["answers"]["stale"] == 1 and figures["answers"]["missing"] >= 2
        bad_load = client.post(app.url + "-/admin/lookup", json={**load, "path": str(tmp_path / "nope.parquet")},
                               headers=app.admin_headers())
        assert bad_load.status_code == 422 and "not a file" in bad_load.json()["error"]["reason"]
        not_parquet = tmp_path / "table.txt"
        not_parquet.write_text("key,prediction\n")
        bad_load = client.post(app.url + "-/admin/lookup", json={**load, "path": str(not_parquet)},
                               headers=app.admin_headers())
        assert bad_load.status_code == 422 and "cannot read the prediction table" in bad_load.json()["error"]["reason"]
