"""``"explain": true`` on a real Ray Serve over HTTP: per-instance occlusion attributions that
match the offline ``framework.explain.occlusion_attributions``, the 422 / 409 contract, and an
unchanged answer without it. Both placements (in the ingress, and through an arm deployment);
the module's app on both ingress paths (direct, proxy)."""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from framework.components import FeatureSpec, InputSchema
from framework.explain import occlusion_attributions
from framework.serving import ServedModel, deploy, fetch_records, shutdown_app
from plugins.strategy_single import SingleConfig, SingleStrategy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

FEATURES = ["mean radius", "mean texture", "worst area", "age"]
CLASSES = ["setosa", "versicolor", "virginica"]
BASELINE = [0.5, -1.0, 2.0, 0.0]


def make_onnx(seed: int = 0) -> bytes:
    """Linear(4, 3) + Softmax built with onnx.helper; the last feature ("age") is unused."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    weights[3] = 0.0
    w = numpy_helper.from_array(weights, "W")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["input", "W"], ["mm"]),
            helper.make_node("Add", ["mm", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "linear_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def session_fn(onnx_bytes: bytes):
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"input": np.asarray(x, dtype=np.float32)})[0]


def served(onnx_bytes: bytes, arm: str, version: str, baseline) -> ServedModel:
    schema = InputSchema([FeatureSpec(n) for n in FEATURES])
    return ServedModel(arm, version, onnx_bytes, schema, list(CLASSES), "input", "probabilities", baseline=baseline)


def instances(x: np.ndarray) -> list[dict]:
    return [{name: float(v) for name, v in zip(FEATURES, row)} for row in x]


def _deploy(serve_port, models, **options):
    name = f"it-explain-{uuid.uuid4().hex[:6]}"
    return deploy(models, SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name, **options)


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return make_onnx()


@pytest.fixture(scope="module", params=["direct", "proxy"])
def app(request, ray_session, serve_port, onnx_bytes):
    served_app = _deploy(serve_port, [served(onnx_bytes, "primary", "v-explain", BASELINE)], ingress=request.param)
    yield served_app
    shutdown_app(served_app)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def check_explanations(body: dict, x: np.ndarray, onnx_bytes: bytes) -> None:
    expected = occlusion_attributions(session_fn(onnx_bytes), x, BASELINE)
    explanations = body["explanations"]
    assert len(explanations) == len(x)
    for i, pairs in enumerate(explanations):
        assert [len(p) for p in pairs] == [2] * len(FEATURES)  # all 4 features (top 10)
        names = [p[0] for p in pairs]
        values = np.asarray([p[1] for p in pairs])
        assert sorted(names) == sorted(FEATURES)
        assert list(np.abs(values)) == sorted(np.abs(values), reverse=True)  # largest first
        got = dict(pairs)
        np.testing.assert_allclose([got[f] for f in FEATURES], expected[i], atol=1e-5)
        assert got["age"] == 0.0  # the model ignores it


def test_explain_true_returns_offline_attributions(app, client, onnx_bytes):
    x = np.random.default_rng(3).normal(scale=2, size=(6, len(FEATURES))).astype(np.float32)
    r = client.post(app.predict_url, json={"instances": instances(x), "explain": True})
    assert r.status_code == 200, r.text
    body = r.json()
    probabilities = session_fn(onnx_bytes)(x)
    np.testing.assert_allclose(body["probabilities"], probabilities, atol=1e-6)
    assert body["predictions"] == [CLASSES[i] for i in probabilities.argmax(axis=1)]
    check_explanations(body, x, onnx_bytes)
    # the single-instance form too
    one = client.post(app.predict_url, json={"instance": instances(x[:1])[0], "explain": True})
    assert one.status_code == 200, one.text
    check_explanations(one.json(), x[:1], onnx_bytes)


def test_explain_false_or_missing_leaves_the_answer_unchanged(app, client):
    x = np.random.default_rng(4).normal(size=(3, len(FEATURES))).astype(np.float32)
    answers = []
    for extra in ({}, {"explain": False}, {"explain": None}):
        r = client.post(app.predict_url, json={"instances": instances(x), **extra})
        assert r.status_code == 200, r.text
        body = r.json()
        # correlation_id: the X-Request-Id the Serve proxy forwards (made up by it when the client sent none)
        assert set(body) == {"request_id", "correlation_id", "model_version", "arm", "predictions", "probabilities"}
        answers.append((body["predictions"], body["probabilities"]))
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize("value", ["yes", 1, 0, [True], {"on": True}, "true"])
def test_explain_must_be_a_boolean(app, client, value):
    before = len(fetch_records(app))
    r = client.post(app.predict_url, json={"instances": instances(np.zeros((1, 4))), "explain": value})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "explain" and "expected true or false" in error["reason"]
    assert len(fetch_records(app)) == before  # refused requests are not served traffic


def test_rank_refuses_explain(app, client):
    r = client.post(app.rank_url, json={"instances": instances(np.zeros((2, 4))), "explain": True})
    assert r.status_code == 422 and r.json()["error"]["field"] == "explain"


def test_no_baseline_is_a_409(ray_session, serve_port, client, onnx_bytes):
    other = _deploy(serve_port, [served(onnx_bytes, "primary", "v-no-means", None)])
    try:
        r = client.post(other.predict_url, json={"instances": instances(np.ones((2, 4))), "explain": True})
        assert r.status_code == 409, r.text
        error = r.json()["error"]
        assert error["field"] == "explain"
        assert error["reason"] == "no baseline for explanations: the model was registered without training means"
        assert len(fetch_records(other)) == 0  # nothing ran
        plain = client.post(other.predict_url, json={"instances": instances(np.ones((2, 4)))})
        assert plain.status_code == 200 and "explanations" not in plain.json()
    finally:
        shutdown_app(other)


def test_explain_through_an_arm_deployment(ray_session, serve_port, client, onnx_bytes):
    other = _deploy(serve_port, [served(onnx_bytes, "champion", "v-dep", BASELINE)], placement="deployment")
    try:
        x = np.random.default_rng(5).normal(scale=2, size=(5, len(FEATURES))).astype(np.float32)
        r = client.post(other.predict_url, json={"instances": instances(x), "explain": True})
        assert r.status_code == 200, r.text
        check_explanations(r.json(), x, onnx_bytes)
        assert len(fetch_records(other)) == 5  # the occlusion rows are not recorded as traffic
    finally:
        shutdown_app(other)
