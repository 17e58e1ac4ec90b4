"""The serving app on a real Ray Serve, over real HTTP: answers, 4xx contract, records, admin.

The module's app is deployed once per ingress mode (``direct``: the replica's own port;
``proxy``: through Serve's HTTP proxy), so every test here runs on both paths; one test deploys a
second app with ``placement="deployment"``. All use the session's Ray and Serve port from conftest.
"""
from __future__ import annotations

import socket
import uuid

import httpx
import numpy as np
import pytest

from framework.components import FeatureSpec, InputSchema
from framework.errors import ServingError
from framework.serving import ServedModel, deploy, fetch_events, fetch_records, shutdown_app
from plugins.strategy_single import SingleConfig, SingleStrategy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

FEATURES = ["mean radius", "mean texture", "worst area", "age"]
CLASSES = ["setosa", "versicolor", "virginica"]
TOKEN = "s3cret-admin-token-for-tests"


def make_onnx(n_in: int = 4, n_out: int = 3, seed: int = 0) -> bytes:
    """Linear(n_in, n_out) + Softmax built with onnx.helper: a real model, no torch needed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def offline(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def served_model(onnx_bytes: bytes, arm: str = "primary", version: str = "v-test-1") -> ServedModel:
    schema = InputSchema([FeatureSpec(n) for n in FEATURES])
    return ServedModel(arm, version, onnx_bytes, schema, list(CLASSES), "input", "probabilities")


def instance(values) -> dict:
    return {name: float(v) for name, v in zip(FEATURES, values)}


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return make_onnx()


INGRESS = ["direct", "proxy"]


@pytest.fixture(scope="module", params=INGRESS)
def app(request, ray_session, serve_port, onnx_bytes):
    name = f"it-serving-{request.param}-{uuid.uuid4().hex[:6]}"
    served = deploy(
        [served_model(onnx_bytes)],
        SingleStrategy,
        SingleConfig(),
        port=serve_port,
        route_prefix=f"/{name}",
        app_name=name,
        admin_token=TOKEN,
        record_buffer=500,
        ingress=request.param,
    )
    assert served.ingress == request.param
    yield served
    shutdown_app(served)


def gone(client, url: str) -> bool:
    """Nothing answers ``url`` any more: the proxy says 404, a direct port refuses connections."""
    try:
        return client.get(url).status_code == 404
    except httpx.ConnectError:
        return True


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


# ---------------------------------------------------------------------------------------------
# Answers
# ---------------------------------------------------------------------------------------------
def test_predictions_equal_offline_onnxruntime(app, client, onnx_bytes):
    x = np.random.default_rng(1).normal(scale=3, size=(25, len(FEATURES))).astype(np.float32)
    r = client.post(app.predict_url, json={"instances": [instance(row) for row in x]})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = offline(onnx_bytes, x)
    np.testing.assert_allclose(np.asarray(body["probabilities"]), expected, rtol=0, atol=1e-6)
    assert body["predictions"] == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert body["model_version"] == "v-test-1" and body["arm"] == "primary"
    assert r.headers["x-model-version"] == "v-test-1"


def test_single_instance_form_and_integer_values(app, client, onnx_bytes):
    row = {"mean radius": 1, "mean texture": -2, "worst area": 0.5, "age": 40}
    r = client.post(app.predict_url, json={"instance": row})
    assert r.status_code == 200, r.text
    expected = offline(onnx_bytes, np.asarray([[1, -2, 0.5, 40]], dtype=np.float32))
    np.testing.assert_allclose(r.json()["probabilities"], expected, atol=1e-6)


def test_a_client_request_id_is_only_a_correlation_id(app, client):
    r = client.post(app.predict_url, json={"instance": instance([1, 2, 3, 4])}, headers={"X-Request-Id": "req-42"})
    assert r.status_code == 200
    assert r.headers["x-request-id"] == "req-42"  # the Serve proxy echoes it, exactly once
    body = r.json()
    assert body["correlation_id"] == "req-42"
    assert len(body["request_id"]) == 32 and body["request_id"] != "req-42"  # the server's own id


def test_request_id_generated_by_the_server(app, client):
    r = client.post(app.predict_url, json={"instance": instance([1, 2, 3, 4])})
    rid = r.json()["request_id"]
    assert rid and int(rid, 16) >= 0
    assert client.post(app.predict_url, json={"instance": instance([1, 2, 3, 4])}).json()["request_id"] != rid


def test_healthz_and_schema(app, client):
    health = client.get(app.url + "healthz")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "models": {"primary": "v-test-1"}}
    schema = client.get(app.url + "schema").json()
    assert [f["name"] for f in schema["features"]] == FEATURES
    assert schema["classes"] == CLASSES
    assert schema["models"] == {"primary": "v-test-1"}


# ---------------------------------------------------------------------------------------------
# Client errors: 4xx with field and reason, never a 5xx
# ---------------------------------------------------------------------------------------------
GOOD = {"mean radius": 1.0, "mean texture": 2.0, "worst area": 3.0, "age": 4.0}


def _with(**changes):
    row = dict(GOOD)
    for k, v in changes.items():
        row[k.replace("_", " ")] = v
    return row


BAD_REQUESTS = [
    # (id, raw body or JSON-able, status, field, words in the reason)
    ("invalid-json", b'{"instances": [', 400, "body", "invalid JSON"),
    ("not-an-object", [1, 2], 422, "body", "expected a JSON object"),
    ("missing-instances", {"rows": []}, 422, "instances", "missing"),
    ("instances-not-list", {"instances": {"a": 1}}, 422, "instances", "expected a list"),
    ("empty-list", {"instances": []}, 422, "instances", "empty"),
    ("too-many", {"instances": [GOOD] * 1025}, 413, "instances", "1025"),
    ("instance-not-object", {"instances": [GOOD, GOOD, GOOD, [1, 2, 3, 4]]}, 422, "instances[3]", "expected an object"),
    ("missing-feature", {"instances": [GOOD, {k: v for k, v in GOOD.items() if k != "age"}]}, 422, "instances[1].age", "missing"),
    ("unknown-feature", {"instances": [dict(GOOD, colour=1.0)]}, 422, "instances[0].colour", "unknown feature"),
    ("string-value", {"instances": [GOOD, GOOD, GOOD, _with(mean_radius="abc")]}, 422, "instances[3].mean radius", "expected a finite number, got 'abc'"),
    ("bool-value", {"instances": [_with(age=True)]}, 422, "instances[0].age", "got true"),
    ("null-value", {"instances": [_with(age=None)]}, 422, "instances[0].age", "got null"),
    ("list-value", {"instances": [_with(age=[1])]}, 422, "instances[0].age", "expected a finite number"),
    ("nan", b'{"instances": [{"mean radius": NaN, "mean texture": 2, "worst area": 3, "age": 4}]}', 422, "instances[0].mean radius", "finite"),
    ("infinity", b'{"instances": [{"mean radius": 1, "mean texture": -Infinity, "worst area": 3, "age": 4}]}', 422, "instances[0].mean texture", "finite"),
    ("float32-overflow", {"instances": [_with(worst_area=1e39)]}, 422, "instances[0].worst area", "finite"),
    ("huge-int", b'{"instances": [{"mean radius": 1' + b"0" * 400 + b', "mean texture": 2, "worst area": 3, "age": 4}]}', 422, "instances[0].mean radius", "finite"),
    ("single-instance-bad", {"instance": _with(age="x")}, 422, "instance.age", "got 'x'"),
    ("single-instance-not-object", {"instance": 3}, 422, "instance", "expected an object"),
    ("bad-key", {"instances": [GOOD], "key": {"user": 1}}, 422, "key", "expected a string"),
]


@pytest.mark.parametrize("body,status,field,reason", [b[1:] for b in BAD_REQUESTS], ids=[b[0] for b in BAD_REQUESTS])
def test_malformed_request_is_a_4xx_naming_the_field(app, client, body, status, field, reason):
    rid = f"bad-{uuid.uuid4().hex[:8]}"
    headers = {"X-Request-Id": rid, "Content-Type": "application/json"}
    if isinstance(body, bytes):
        r = client.post(app.predict_url, content=body, headers=headers)
    else:
        r = client.post(app.predict_url, json=body, headers=headers)
    assert r.status_code == status, r.text
    data = r.json()
    assert data["error"]["field"] == field
    assert reason in data["error"]["reason"], data
    assert data["correlation_id"] == rid and data["request_id"] != rid


def test_wrong_method_and_path_are_4xx(app, client):
    assert client.get(app.predict_url).status_code == 405
    r = client.post(app.url + "nope", json={})
    assert r.status_code == 404 and r.json()["error"]["field"] == "path"


def test_bad_requests_are_not_counted_or_recorded_as_served(app, client):
    before = client.get(app.url + "-/strategy", headers={"X-Admin-Token": TOKEN}).json()["state"]["requests"]
    client.post(app.predict_url, json={"instances": []})
    after = client.get(app.url + "-/strategy", headers={"X-Admin-Token": TOKEN}).json()["state"]["requests"]
    assert after == before


# ---------------------------------------------------------------------------------------------
# Records, admin and strategy state
# ---------------------------------------------------------------------------------------------
def test_records_hold_the_served_rows(app, client):
    rid = f"rec-{uuid.uuid4().hex[:8]}"
    rows = [instance([i, i + 0.5, -i, 30 + i]) for i in range(3)]
    answer = client.post(app.predict_url, json={"instances": rows}, headers={"X-Request-Id": rid}).json()
    frame = fetch_records(app)
    assert {*FEATURES, "prediction", "model_version", "arm", "latency_ms", "request_id", "timestamp",
            "correlation_id"} <= set(frame.columns)
    mine = frame[frame["request_id"] == answer["request_id"]]
    assert len(mine) == 3 and set(mine["correlation_id"]) == {rid}
    assert mine[FEATURES].to_dict("records") == rows
    assert mine["prediction"].tolist() == answer["predictions"]
    assert set(mine["model_version"]) == {"v-test-1"} and set(mine["arm"]) == {"primary"}
    assert (mine["latency_ms"] > 0).all()
    assert str(frame["timestamp"].dtype).startswith("datetime64")


def test_records_buffer_is_bounded(app, client):
    for _ in range(6):
        client.post(app.predict_url, json={"instances": [GOOD] * 100})
    assert len(fetch_records(app)) == 500


@pytest.mark.parametrize("endpoint", ["-/records", "-/strategy", "-/events"])
def test_admin_token_enforced(app, client, endpoint):
    assert client.get(app.url + endpoint).status_code == 401
    wrong = client.get(app.url + endpoint, headers={"X-Admin-Token": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "X-Admin-Token"
    assert client.get(app.url + endpoint, headers={"X-Admin-Token": TOKEN}).status_code == 200


def test_strategy_state_counts_requests(app, client):
    def state():
        r = client.get(app.url + "-/strategy", headers={"X-Admin-Token": TOKEN})
        assert r.status_code == 200
        return r.json()

    before = state()["state"]["requests"]
    for _ in range(5):
        assert client.post(app.predict_url, json={"instance": GOOD}, headers={"X-User-Id": "u1"}).status_code == 200
    snap = state()
    assert snap["state"]["requests"] == before + 5
    assert snap["state"]["errors"] == 0 and snap["state"]["error_rate"] == 0.0
    assert snap["state"]["latency_ms"]["p50"] > 0
    assert snap["decision"] == {"verdict": "hold", "reason": "single strategy never changes traffic", "weights": {"primary": 1.0}}


def test_admin_commands_on_a_strategy_without_weights(app, client):
    r = client.post(app.url + "-/admin/weights", json={"weights": {"primary": 1.0}}, headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 409
    assert r.json()["error"] == {"field": "weights", "reason": "strategy 'single' has no traffic weights to set"}
    assert client.post(app.url + "-/admin/promote").status_code == 401
    r = client.post(app.url + "-/admin/promote", json={"reason": "drill"}, headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 200, r.text
    event = fetch_events(app)[-1]
    assert (event["verdict"], event["reason"], event["source"]) == ("promote", "drill", "admin")
    assert event["arms"] == {"primary": "v-test-1"}
    assert client.post(app.predict_url, json={"instance": GOOD}).status_code == 200  # nothing to switch: still served


# ---------------------------------------------------------------------------------------------
# Placement "deployment", removal, and deploy-time errors
# ---------------------------------------------------------------------------------------------
def test_deployment_placement_and_shutdown(app, client, serve_port, onnx_bytes):
    name = f"it-serving-dep-{uuid.uuid4().hex[:6]}"
    other = deploy(
        [served_model(onnx_bytes, arm="champion", version="v-dep")],
        SingleStrategy,
        SingleConfig(),
        port=serve_port,
        route_prefix=f"/{name}",
        app_name=name,
        placement="deployment",
        ingress=app.ingress,
    )
    try:
        x = np.random.default_rng(2).normal(size=(7, len(FEATURES))).astype(np.float32)
        r = client.post(other.predict_url, json={"instances": [instance(row) for row in x]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probabilities"], offline(onnx_bytes, x), atol=1e-6)
        assert r.headers["x-model-version"] == "v-dep" and r.json()["arm"] == "champion"
        bad = client.post(other.predict_url, json={"instances": [dict(GOOD, age="old")]})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "instances[0].age"
        assert len(fetch_records(other)) == 7  # deployed without a token: deploy() made one up
        # rank and feedback through the remote arm; admin commands are off without a token
        ranked = client.post(other.rank_url, json={"instances": [instance(row) for row in x[:3]], "item_ids": ["a", "b", "c"]})
        assert ranked.status_code == 200, ranked.text
        order = np.argsort(-offline(onnx_bytes, x[:3])[:, -1], kind="stable")
        assert ranked.json()["ranking"] == [["a", "b", "c"][i] for i in order]
        fb = client.post(other.feedback_url, json={"request_id": r.json()["request_id"], "label": CLASSES[0]})
        assert fb.status_code == 200 and fb.json()["arm"] == "champion"
        assert client.post(other.url + "-/admin/rollback").status_code == 401
    finally:
        shutdown_app(other)
    from ray import serve

    assert name not in serve.status().applications
    assert gone(client, other.url + "healthz")  # neither the proxy nor a replica port answers for it
    assert client.get(app.url + "healthz").status_code == 200  # the other app is untouched


def test_serve_already_on_another_port_is_a_serving_error(app, serve_port, onnx_bytes):
    with pytest.raises(ServingError) as info:
        deploy([served_model(onnx_bytes)], SingleStrategy, SingleConfig(), port=serve_port + 1, app_name="never")
    msg = str(info.value)
    assert str(serve_port) in msg and str(serve_port + 1) in msg and "already runs" in msg


def test_broken_model_fails_fast_naming_the_arm(app, serve_port):
    with pytest.raises(ServingError) as info:
        deploy([served_model(b"not an onnx file", arm="broken")], SingleStrategy, SingleConfig(), port=serve_port)
    assert "serve.models.broken" in str(info.value)


def test_port_in_use_is_a_serving_error():
    from framework.serving.app import _check_port_free

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServingError) as info:
            _check_port_free("127.0.0.1", port)
    assert f"127.0.0.1:{port}" in str(info.value) and "in use" in str(info.value)


# ---------------------------------------------------------------------------------------------
# Internal failure: the ingress class in-process (no Ray), a strategy that raises
# ---------------------------------------------------------------------------------------------
class _ExplodingStrategy(SingleStrategy):
    name = "exploding"

    def route(self, request):
        raise ZeroDivisionError("boom")


def test_internal_error_is_a_500_with_the_request_id(onnx_bytes):
    import asyncio
    import json

    from starlette.requests import Request

    from framework.serving.http import Ingress

    ingress = Ingress.func_or_class([served_model(onnx_bytes)], _ExplodingStrategy, SingleConfig())
    body = json.dumps({"instance": GOOD}).encode()

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http", "method": "POST", "path": "/predict", "root_path": "", "query_string": b"",
        "headers": [(b"x-request-id", b"rid-500"), (b"content-type", b"application/json")],
    }
    response = asyncio.run(ingress(Request(scope, receive)))
    assert response.status_code == 500
    data = json.loads(response.body)
    assert data["correlation_id"] == "rid-500" and "ZeroDivisionError" in data["error"]["reason"]
