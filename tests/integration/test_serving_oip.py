"""The Open Inference Protocol (v2 REST) and the OpenAPI document, over real HTTP on a real Ray Serve.

Requests are built as the protocol's specification gives them (KServe "Open Inference Protocol",
REST): ``{"id", "inputs": [{"name", "shape", "datatype", "data"}], "outputs": [{"name"}]}``. One
app of two arms behind an A/B split (with a client token) checks that the strategy routes v2
requests as it routes ``/predict``; a typed app (cars: strings, missing values) checks BYTES
inputs and nulls against ``/predict``.
"""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from framework.components import FeatureSpec, InputSchema, raw_instances
from framework.serving import ServedModel, deploy, shutdown_app
from framework.serving.oip import ROUTES
from framework.serving.openapi import documented_routes, openapi_document
from plugins.strategy_ab import ABConfig, ABStrategy
from plugins.strategy_single import SingleConfig, SingleStrategy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

FEATURES = ["mean radius", "mean texture", "worst area", "age"]
CLASSES = ["setosa", "versicolor", "virginica"]
CLIENT_TOKEN = "client-token-for-the-v2-tests-0123456789"
AUTH = {"Authorization": f"Bearer {CLIENT_TOKEN}"}


def make_onnx(seed: int) -> bytes:
    """Linear(4, 3) + Softmax built with onnx.helper: a real model, no torch needed."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "linear_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def offline(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    return ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def feature_inputs(x: np.ndarray, datatype: str = "FP32") -> list[dict]:
    """One input per feature column, shape [rows], as a protocol client sends named inputs."""
    return [{"name": name, "shape": [len(x)], "datatype": datatype, "data": x[:, j].tolist()}
            for j, name in enumerate(FEATURES)]


@pytest.fixture(scope="module")
def models():
    return {"champion": make_onnx(0), "challenger": make_onnx(1)}


@pytest.fixture(scope="module")
def app(ray_session, serve_port, models):
    schema = InputSchema([FeatureSpec(n) for n in FEATURES])
    served = [ServedModel(arm, f"linear:{arm}-v1", b, schema, list(CLASSES), "input", "probabilities")
              for arm, b in models.items()]
    name = f"it-oip-{uuid.uuid4().hex[:6]}"
    deployed = deploy(served, ABStrategy, ABConfig(weights={"champion": 0.5, "challenger": 0.5}), port=serve_port,
                      route_prefix=f"/{name}", app_name=name, client_token=CLIENT_TOKEN)
    yield deployed
    shutdown_app(deployed)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def infer_url(app) -> str:
    return f"{app.url}v2/models/{app.app_name}/infer"


# ---------------------------------------------------------------------------------------------
# Health and metadata
# ---------------------------------------------------------------------------------------------
def test_health_server_and_model_metadata(app, client):
    assert client.get(app.url + "v2/health/live").json() == {"live": True}
    assert client.get(app.url + "v2/health/ready").json() == {"ready": True}
    server = client.get(app.url + "v2").json()
    assert server["name"] == "framework" and "version" in server and server["extensions"] == []

    meta = client.get(f"{app.url}v2/models/{app.app_name}")
    assert meta.status_code == 200, meta.text
    meta = meta.json()
    assert meta["name"] == app.app_name
    assert sorted(meta["versions"]) == ["linear:challenger-v1", "linear:champion-v1"]
    assert [(i["name"], i["datatype"], i["shape"]) for i in meta["inputs"]] == [(f, "FP32", [-1]) for f in FEATURES]
    assert {o["name"]: o["datatype"] for o in meta["outputs"]} == {"predictions": "BYTES", "probabilities": "FP32"}
    assert meta["parameters"]["matrix_input"] == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}
    assert client.get(f"{app.url}v2/models/{app.app_name}/ready").json() == {"name": app.app_name, "ready": True}

    version = client.get(f"{app.url}v2/models/{app.app_name}/versions/linear:challenger-v1").json()
    assert version["versions"] == ["linear:challenger-v1"]

    for path, status, words in (
        ("v2/models/nope", 404, "'nope' is not served"),
        (f"v2/models/{app.app_name}/versions/v9", 404, "no version 'v9'"),
        ("v2/unknown", 404, "no endpoint"),
    ):
        r = client.get(app.url + path)
        assert r.status_code == status and words in r.json()["error"], r.text
        assert set(r.json()) == {"error"}  # the protocol's error format
    r = client.get(infer_url(app))
    assert r.status_code == 405 and "use POST" in r.json()["error"]


# ---------------------------------------------------------------------------------------------
# Infer
# ---------------------------------------------------------------------------------------------
def test_infer_as_the_specification_gives_it(app, client, models):
    """Named inputs, an id echoed, outputs asked for by name, the version that answered."""
    x = np.random.default_rng(2).normal(scale=3, size=(5, 4)).astype(np.float32)
    request = {"id": "42", "inputs": feature_inputs(x), "outputs": [{"name": "predictions"}, {"name": "probabilities"}]}
    r = client.post(infer_url(app), json=request, headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "42" and body["model_name"] == app.app_name
    arm = body["parameters"]["arm"]
    assert body["model_version"] == f"linear:{arm}-v1" == r.headers["x-model-version"]
    assert len(body["parameters"]["request_id"]) == 32  # the server's id, the one feedback names
    predictions, probabilities = body["outputs"]
    expected = offline(models[arm], x)
    assert probabilities["datatype"] == "FP32" and probabilities["shape"] == [5, 3]
    np.testing.assert_allclose(np.asarray(probabilities["data"]).reshape(5, 3), expected, atol=1e-6)
    assert predictions == {"name": "predictions", "datatype": "BYTES", "shape": [5],
                           "data": [CLASSES[i] for i in expected.argmax(axis=1)]}

    # only the output asked for; nested data ([[v], [v]] for shape [n, 1]); INT64 values; the matrix
    nested = [{"name": f, "shape": [5, 1], "datatype": "FP64", "data": [[v] for v in x[:, j].tolist()]}
              for j, f in enumerate(FEATURES)]
    one = client.post(infer_url(app), json={"inputs": nested, "outputs": [{"name": "predictions"}]}, headers=AUTH).json()
    assert [o["name"] for o in one["outputs"]] == ["predictions"]
    assert one["outputs"][0]["data"] == [CLASSES[i] for i in offline(models[one["parameters"]["arm"]], x).argmax(1)]
    xi = np.round(x).astype(np.int64)
    ints = client.post(infer_url(app), json={"inputs": feature_inputs(xi, "INT64")}, headers=AUTH).json()
    np.testing.assert_allclose(np.asarray(ints["outputs"][1]["data"]).reshape(5, 3),
                               offline(models[ints["parameters"]["arm"]], xi.astype(np.float32)), atol=1e-6)
    matrix = {"inputs": [{"name": "input", "shape": [5, 4], "datatype": "FP32", "data": x.ravel().tolist()}]}
    m = client.post(infer_url(app), json=matrix, headers=AUTH).json()
    np.testing.assert_allclose(np.asarray(m["outputs"][1]["data"]).reshape(5, 3),
                               offline(models[m["parameters"]["arm"]], x), atol=1e-6)
    assert m["id"] == m["parameters"]["request_id"]  # no client id: the server's


def test_the_traffic_strategy_routes_v2_as_it_routes_predict(app, client, models):
    """The A/B split is sticky by key: a key's v2 answer comes from the arm its /predict answer came from."""
    x = np.asarray([[0.5, -1.0, 2.0, 30.0]], dtype=np.float32)
    instance = dict(zip(FEATURES, x[0].tolist()))
    arms = set()
    for i in range(24):
        key = f"user-{i}"
        p = client.post(app.predict_url, json={"instance": instance, "key": key}, headers=AUTH).json()
        v = client.post(infer_url(app), json={"inputs": feature_inputs(x), "parameters": {"key": key}},
                        headers=AUTH).json()
        assert v["parameters"]["arm"] == p["arm"] and v["model_version"] == p["model_version"]
        assert v["outputs"][0]["data"] == p["predictions"]
        np.testing.assert_allclose(v["outputs"][1]["data"], np.asarray(p["probabilities"]).ravel(), atol=1e-7)
        arms.add(p["arm"])
    assert arms == {"champion", "challenger"}  # both arms answered: the split is real

    # a version named in the path answers itself, whatever the split says
    pinned = f"{app.url}v2/models/{app.app_name}/versions/linear:challenger-v1/infer"
    for _ in range(3):
        body = client.post(pinned, json={"inputs": feature_inputs(x)}, headers=AUTH).json()
        assert body["model_version"] == "linear:challenger-v1" and body["parameters"]["arm"] == "challenger"


def test_malformed_infer_requests_get_400_naming_the_input(app, client):
    x = np.ones((3, 4), dtype=np.float32)
    good = feature_inputs(x)

    def with_input(i: int, **change) -> dict:
        inputs = [dict(t) for t in good]
        inputs[i].update(change)
        return {"inputs": inputs}

    cases = [
        (with_input(1, datatype="BYTES", data=["a", "b", "c"]), "input 'mean texture'", "datatype BYTES does not fit"),
        (with_input(2, datatype="FP128"), "input 'worst area'", "unknown datatype"),
        (with_input(0, shape=[4]), "input 'mean radius'", "shape [4] holds 4 values, data has 3"),
        (with_input(3, shape=[2], data=[1.0, 2.0]), "input 'age'", "every input holds one value per row"),
        (with_input(3, shape=[3, 2], data=[1.0] * 6), "input 'age'", "[rows] or [rows, 1]"),
        (with_input(0, data=[1.0, "x", 2.0]), "input 'mean radius'", "data[1]"),
        (with_input(0, datatype="INT32", data=[1, 2, 2**40]), "input 'mean radius'", "not a INT32 value"),
        (with_input(2, data=[1.0, None, 2.0]), "input 'worst area'", "row 1: expected a finite number"),
        ({"inputs": good + [{"name": "colour", "shape": [3], "datatype": "BYTES", "data": ["r", "g", "b"]}]},
         "input 'colour'", "unknown input"),
        ({"inputs": good[:2] + good[3:]}, "input 'worst area'", "missing"),
        ({"inputs": [{"name": "input", "shape": [3, 3], "datatype": "FP32", "data": [0.0] * 9}]}, "input 'input'",
         "expected [rows, 4]"),
        ({"inputs": good, "outputs": [{"name": "logits"}]}, "outputs[0]", "unknown output"),
        ({"instances": [{}]}, "instances", "unknown field"),
        ({"inputs": []}, "inputs", "non-empty list"),
    ]
    for request, where, words in cases:
        r = client.post(infer_url(app), json=request, headers=AUTH)
        assert r.status_code == 400, (request, r.text)
        error = r.json()["error"]
        assert isinstance(error, str) and where in error and words in error, (where, words, error)

    # the hardened API's rules hold on v2 too
    assert client.post(infer_url(app), json={"inputs": good}).status_code == 401
    assert client.post(infer_url(app), json={"inputs": good},
                       headers={"Authorization": "Bearer wrong-token-000000000000000"}).status_code == 401
    plain = client.post(infer_url(app), content=b'{"inputs": []}', headers={**AUTH, "Content-Type": "text/plain"})
    assert plain.status_code == 415 and "Content-Type" in plain.json()["error"]
    deep = client.post(infer_url(app), content=b"[" * 100_000 + b"]" * 100_000,
                       headers={**AUTH, "Content-Type": "application/json"})
    assert deep.status_code in (400, 413) and "error" in deep.json()
    big = feature_inputs(np.ones((1025, 4), dtype=np.float32))
    too_many = client.post(infer_url(app), json={"inputs": big}, headers=AUTH)
    assert too_many.status_code == 413 and "1025 rows exceed" in too_many.json()["error"]
    # health and metadata stay open, as /healthz and /schema are
    assert client.get(app.url + "v2/health/ready").status_code == 200


# ---------------------------------------------------------------------------------------------
# The OpenAPI document
# ---------------------------------------------------------------------------------------------
def test_openapi_document_equals_the_routes(app, client):
    from framework.serving.http import Ingress

    served = client.get(app.url + "openapi.json")
    assert served.status_code == 200 and served.json() == openapi_document()
    assert served.json()["openapi"].startswith("3.")
    # the ingress's own routing tables, read from an ingress built outside Serve
    ingress = Ingress.func_or_class([ServedModel("primary", "v", make_onnx(0), InputSchema([FeatureSpec(n) for n in FEATURES]),
                                                 list(CLASSES), "input", "probabilities")], SingleStrategy, SingleConfig())
    routes = {("POST", p) for p in ingress._post} | {("GET", p) for p in ingress._get} | set(ROUTES)
    assert documented_routes() == routes
    documented = {(m.upper(), p) for p, ops in served.json()["paths"].items() for m in ops}
    assert documented == routes
    # every documented GET without a path parameter answers (admin ones with 401/403, not 404)
    for method, path in routes:
        if method == "GET" and "{" not in path:
            assert client.get(app.url + path.lstrip("/")).status_code != 404, path


# ---------------------------------------------------------------------------------------------
# Raw typed rows: BYTES categories, nulls
# ---------------------------------------------------------------------------------------------
def typed_cars_model(tmp, version: str):
    """A small model of vega_datasets' cars trained in-process, its preprocessing (a string
    column, missing values) merged into the ONNX file: (splits, exported, served model)."""
    import torch

    from framework.components import TrainedModel
    from framework.testing import make_stage_context
    from framework.testing.data import cars_splits
    from plugins.export_onnx import OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp, "features"))
    torch.set_num_threads(1)
    module = fit_in_process({"hidden": 16, "lr": 0.02}, splits, epochs=20, seed=0)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    exported = OnnxExporter().export(trained, splits, make_stage_context(tmp, "export"))
    model = ServedModel("primary", version, exported.path.read_bytes(), exported.schema, list(exported.classes),
                        exported.input_name, exported.output_name, inputs=exported.inputs)
    return splits, exported, model


@pytest.fixture(scope="module")
def typed_app(ray_session, serve_port, tmp_path_factory):
    splits, exported, model = typed_cars_model(tmp_path_factory.mktemp("oip-typed"), "cars:1")
    name = f"it-oip-typed-{uuid.uuid4().hex[:6]}"
    app = deploy([model], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name)
    yield app, splits, exported
    shutdown_app(app)


def typed_inputs(rows: list[dict], schema: InputSchema) -> list[dict]:
    datatype = {"category": "BYTES", "bool": "BOOL", "int": "INT64", "float": "FP32"}
    return [{"name": f.name, "shape": [len(rows)], "datatype": datatype[f.dtype], "data": [r[f.name] for r in rows]}
            for f in schema.features]


def test_typed_rows_bytes_and_nulls_answer_as_predict(typed_app, client):
    app, splits, exported = typed_app
    rows = raw_instances(splits.test.head(10), splits.dataset.features)
    rows[1] = {**rows[1], "Horsepower": None, "Make": "tesla"}  # missing number, category never seen
    meta = client.get(f"{app.url}v2/models/{app.app_name}").json()
    types = {i["name"]: i["datatype"] for i in meta["inputs"]}
    assert types["Make"] == "BYTES" and "matrix_input" not in meta["parameters"]
    v2 = client.post(f"{app.url}v2/models/{app.app_name}/infer", json={"inputs": typed_inputs(rows, exported.schema)})
    assert v2.status_code == 200, v2.text
    p = client.post(app.predict_url, json={"instances": rows}).json()
    predictions, probabilities = v2.json()["outputs"]
    assert predictions["data"] == p["predictions"]
    np.testing.assert_allclose(np.asarray(probabilities["data"]).reshape(len(rows), -1), p["probabilities"], atol=1e-7)

    inputs = typed_inputs(rows[:2], exported.schema)
    by_name = {t["name"]: t for t in inputs}
    by_name["Make"]["datatype"] = "FP32"
    by_name["Make"]["data"] = [1.0, 2.0]
    r = client.post(f"{app.url}v2/models/{app.app_name}/infer", json={"inputs": inputs})
    assert r.status_code == 400 and "input 'Make'" in r.json()["error"] and "use BYTES" in r.json()["error"]
    inputs = typed_inputs(rows[:2], exported.schema)
    next(t for t in inputs if t["name"] == "Cylinders")["data"] = [4, None]
    r = client.post(f"{app.url}v2/models/{app.app_name}/infer", json={"inputs": inputs})
    assert r.status_code == 400 and "input 'Cylinders': row 1: null is not allowed" in r.json()["error"], r.text
