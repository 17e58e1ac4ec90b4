"""Request batching (``serve.batching``) and autoscaling (``serve.autoscaling``) on a real Ray Serve.

Two apps share the session's Ray and Serve port: placement "deployment" with batching and
autoscaling on (the arm is its own deployment, batching with @serve.batch), and placement
"ingress" with batching on (one batcher per arm inside the ingress replica). Concurrent
requests with 1 to 3 instances each must get the answers an unbatched call gives, and the
batchers' counters must show batches of more than one request.
"""
from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from framework.errors import RecipeError
from framework.serving import deploy, shutdown_app, validate_autoscaling, validate_batching
from plugins.strategy_single import SingleConfig, SingleStrategy

from test_serving_http import CLASSES, FEATURES, TOKEN, instance, make_onnx, offline, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

CONCURRENCY = 8
PER_THREAD = 6
# a generous wait so 8 concurrent clients reliably land in one batch on a loaded 2-core machine
BATCHING = {"max_batch_size": 8, "batch_wait_timeout_s": 0.02}
AUTOSCALING = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4}


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return make_onnx(seed=3)


def _deploy(serve_port, onnx_bytes, placement: str, **options):
    name = f"it-batch-{placement[:3]}-{uuid.uuid4().hex[:6]}"
    return deploy(
        [served_model(onnx_bytes)], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}",
        app_name=name, placement=placement, admin_token=TOKEN, batching=BATCHING, **options,
    )


@pytest.fixture(scope="module")
def dep_app(ray_session, serve_port, onnx_bytes):
    app = _deploy(serve_port, onnx_bytes, "deployment", autoscaling=AUTOSCALING)
    yield app
    shutdown_app(app)


@pytest.fixture(scope="module")
def ingress_app(ray_session, serve_port, onnx_bytes):
    app = _deploy(serve_port, onnx_bytes, "ingress")
    yield app
    shutdown_app(app)


def _hammer(url: str) -> tuple[list[np.ndarray], list[httpx.Response]]:
    """CONCURRENCY threads, each sending PER_THREAD requests of 1-3 instances; returns inputs and answers."""
    rng = np.random.default_rng(7)
    xs = [rng.normal(scale=3, size=(1 + i % 3, len(FEATURES))).astype(np.float32) for i in range(CONCURRENCY * PER_THREAD)]

    def worker(k: int) -> list[tuple[int, httpx.Response]]:
        out = []
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            for i in range(k, len(xs), CONCURRENCY):
                out.append((i, client.post(url, json={"instances": [instance(r) for r in xs[i]]})))
        return out

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = dict(pair for chunk in pool.map(worker, range(CONCURRENCY)) for pair in chunk)
    return xs, [answers[i] for i in range(len(xs))]


def _batching_snapshot(app) -> dict:
    r = httpx.get(app.url + "-/strategy", headers={"X-Admin-Token": TOKEN}, timeout=30.0, trust_env=False)
    assert r.status_code == 200, r.text
    return r.json()["batching"]


@pytest.mark.parametrize("which", ["dep_app", "ingress_app"])
def test_concurrent_requests_are_batched_and_answer_as_unbatched(which, request, onnx_bytes):
    app = request.getfixturevalue(which)
    before = _batching_snapshot(app)["arms"]["primary"]["requests"]
    xs, answers = _hammer(app.predict_url)
    assert [r.status_code for r in answers] == [200] * len(xs), [r.text for r in answers if r.status_code != 200][:3]
    for x, r in zip(xs, answers):
        # the unbatched answer: this request's rows alone through onnxruntime (measured bitwise
        # equal here; 1e-6 leaves room for ORT rounding that may differ across batch shapes)
        expected = offline(onnx_bytes, x)
        body = r.json()
        np.testing.assert_allclose(np.asarray(body["probabilities"]), expected, rtol=0, atol=1e-6)
        assert body["predictions"] == [CLASSES[i] for i in expected.argmax(axis=1)]
    snap = _batching_snapshot(app)
    assert (snap["max_batch_size"], snap["batch_wait_timeout_s"]) == (8, 0.02)
    stats = snap["arms"]["primary"]
    assert stats["requests"] - before == len(xs)  # every request went through the batcher
    assert stats["largest_batch"] > 1, stats  # and some shared one onnxruntime call
    assert stats["largest_batch"] <= 8 and stats["batches"] < stats["requests"]


def test_autoscaling_reaches_the_arm_deployment(dep_app):
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()["applications"][dep_app.app_name]["deployments"]
    arm = details["arm_primary"]["deployment_config"]
    scaling = arm["autoscaling_config"]
    assert (scaling["min_replicas"], scaling["max_replicas"], scaling["target_ongoing_requests"]) == (1, 2, 4.0)
    assert arm["max_ongoing_requests"] >= BATCHING["max_batch_size"]
    # the deployment-placement ingress stays one replica: strategy state lives there
    ingress = details["Ingress"]["deployment_config"]
    assert ingress.get("autoscaling_config") is None and ingress["num_replicas"] == 1


# ---------------------------------------------------------------------------------------------
# Validation: RecipeError naming the key, before anything is scheduled
# ---------------------------------------------------------------------------------------------
BAD_AUTOSCALING = [
    ({"max_replicas": 2, "min_replica": 1}, "serve.autoscaling.min_replica: unknown key"),
    ({"min_replicas": 1}, "serve.autoscaling.max_replicas: required"),
    ({"min_replicas": 3, "max_replicas": 2}, "serve.autoscaling.max_replicas: must be >= min_replicas (3)"),
    ({"min_replicas": 0, "max_replicas": 2}, "serve.autoscaling.min_replicas: must be an integer >= 1"),
    ({"max_replicas": 2.5}, "serve.autoscaling.max_replicas: must be an integer >= 1"),
    ({"max_replicas": True}, "serve.autoscaling.max_replicas: must be an integer >= 1"),
    ({"max_replicas": 2, "target_ongoing_requests": 0}, "serve.autoscaling.target_ongoing_requests: must be a number > 0"),
    ({"max_replicas": 2, "target_ongoing_requests": "2"}, "serve.autoscaling.target_ongoing_requests"),
]
BAD_BATCHING = [
    ({"max_batch_size": 8, "timeout": 0.1}, "serve.batching.timeout: unknown key"),
    ({"max_batch_size": 1}, "serve.batching.max_batch_size: must be 0 (off) or an integer in 2..64"),
    ({"max_batch_size": -2}, "serve.batching.max_batch_size"),
    ({"max_batch_size": 65}, "serve.batching.max_batch_size"),
    ({"max_batch_size": 8, "batch_wait_timeout_s": -0.1}, "serve.batching.batch_wait_timeout_s: must be a number"),
    ({"max_batch_size": 8, "batch_wait_timeout_s": 5}, "serve.batching.batch_wait_timeout_s"),
]


@pytest.mark.parametrize("spec,message", BAD_AUTOSCALING)
def test_bad_autoscaling_names_the_key(spec, message):
    with pytest.raises(RecipeError) as info:
        validate_autoscaling(spec, "recipe x.yaml")
    assert str(info.value).startswith("recipe x.yaml: ") and message in str(info.value)


@pytest.mark.parametrize("spec,message", BAD_BATCHING)
def test_bad_batching_names_the_key(spec, message):
    with pytest.raises(RecipeError) as info:
        validate_batching(spec)
    assert str(info.value).startswith(message)


def test_defaults_and_completion():
    assert validate_autoscaling({}) == {} and validate_autoscaling(None) == {}
    assert validate_autoscaling({"max_replicas": 3}) == {"min_replicas": 1, "max_replicas": 3, "target_ongoing_requests": 2.0}
    assert validate_batching({}) == {"max_batch_size": 0, "batch_wait_timeout_s": 0.005}
    assert validate_batching({"max_batch_size": 16}) == {"max_batch_size": 16, "batch_wait_timeout_s": 0.005}


def test_deploy_rejects_bad_settings_before_starting_anything(onnx_bytes):
    model = served_model(onnx_bytes)
    with pytest.raises(RecipeError, match=r"serve\.batching\.max_batch_size"):
        deploy([model], SingleStrategy, SingleConfig(), batching={"max_batch_size": 1})
    with pytest.raises(RecipeError, match=r"serve\.autoscaling\.max_replicas"):
        deploy([model], SingleStrategy, SingleConfig(), placement="deployment", autoscaling={"min_replicas": 2})
    with pytest.raises(RecipeError, match=r"serve\.replicas=3 and serve\.autoscaling"):
        deploy([model], SingleStrategy, SingleConfig(), replicas=3, autoscaling={"max_replicas": 3})


def test_batcher_concatenates_and_splits_in_process(onnx_bytes):
    """The batch function itself (no replica needed to call it directly): one ORT call, split back."""
    from framework.serving.batching import BatchedPredict
    from framework.serving.onnx_runner import OnnxRunner

    runner = OnnxRunner(served_model(onnx_bytes))
    calls = []
    predict = runner.predict
    runner.predict = lambda x: calls.append(len(x)) or predict(x)
    batched = BatchedPredict(runner, max_batch_size=4, batch_wait_timeout_s=0.0)
    xs = [np.random.default_rng(i).normal(size=(n, len(FEATURES))).astype(np.float32) for i, n in enumerate((1, 3, 2))]
    outs = asyncio.run(batched._run(xs))
    assert calls == [6]  # one onnxruntime call for the three requests
    for x, out in zip(xs, outs):
        np.testing.assert_array_equal(out, predict(x))
    assert batched.stats()["sizes"] == {"3": 1} and batched.stats()["rows"] == 6
