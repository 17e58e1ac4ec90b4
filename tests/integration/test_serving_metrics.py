"""``GET /metrics`` of a real ingress replica on Ray Serve, read by Prometheus' own parser
(``prometheus_client.parser.text_string_to_metric_families``): request counts, latency
histogram and errors per model version and arm, the replica's CPU and memory."""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework.serving import deploy, shutdown_app
from framework.serving.metrics import MetricsOff, ServingMetrics
from plugins.strategy_ab import ABConfig, ABStrategy
from plugins.strategy_single import SingleConfig, SingleStrategy
from test_serving_http import FEATURES, TOKEN, instance, make_onnx, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]


def samples(text: str) -> dict[str, list]:
    """metric family name -> its samples, as the Prometheus client parses the exposition."""
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def value(found: dict, family: str, sample: str, **labels) -> float:
    matching = [s.value for s in found[family] if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matching) == 1, (family, sample, labels, found.get(family))
    return matching[0]


def test_unit_exposition_parses_and_counts():
    metrics = ServingMetrics({"champion": "m:1", "challenger": "m:2"}, "r1", ("/predict", "/feedback"))
    for ms in (0.3, 0.7, 4.0):
        metrics.served("predict", "champion", ms, 2)
    metrics.served("predict", "challenger", 30.0, 1)
    metrics.error("/predict", 422)
    metrics.error("/predict", 503, "challenger")
    metrics.error("/nowhere/" + "x" * 50, 404)  # an unknown path: one bounded label
    found = samples(metrics.exposition().decode())
    assert value(found, "framework_requests", "framework_requests_total", arm="champion", model_version="m:1",
                 endpoint="predict", replica="r1") == 3
    assert value(found, "framework_instances", "framework_instances_total", arm="champion") == 6
    assert value(found, "framework_request_latency_seconds", "framework_request_latency_seconds_count",
                 arm="challenger") == 1
    assert value(found, "framework_request_latency_seconds", "framework_request_latency_seconds_bucket",
                 arm="champion", le="0.001") == 2
    assert value(found, "framework_errors", "framework_errors_total", status="422", arm="", endpoint="predict") == 1
    assert value(found, "framework_errors", "framework_errors_total", status="503", arm="challenger",
                 model_version="m:2") == 1
    assert value(found, "framework_errors", "framework_errors_total", status="404", endpoint="other") == 1
    assert value(found, "framework_model_info", "framework_model_info", arm="challenger", model_version="m:2") == 1
    assert value(found, "process_resident_memory_bytes", "process_resident_memory_bytes") > 1e6
    MetricsOff().served("predict", "champion", 1.0, 1)  # the switched-off twin takes the same calls


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def test_metrics_endpoint_on_a_served_app(ray_session, serve_port, client):
    name = f"it-metrics-{uuid.uuid4().hex[:6]}"
    models = [served_model(make_onnx(seed=1), "champion", "m:1"), served_model(make_onnx(seed=2), "challenger", "m:2")]
    app = deploy(models, ABStrategy, ABConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name,
                 admin_token=TOKEN, faults={"challenger": {"error_rate": 0.3, "seed": 3}})
    try:
        x = np.random.default_rng(0).normal(size=(60, len(FEATURES)))
        answered: dict[str, int] = {"champion": 0, "challenger": 0}
        failed = 0
        for i, row in enumerate(x):
            r = client.post(app.predict_url, json={"instances": [instance(row)]}, headers={"X-User-Id": f"u{i}"})
            if r.status_code == 200:
                answered[r.json()["arm"]] += 1
            else:
                assert r.status_code == 503, r.text
                failed += 1
        assert client.post(app.predict_url, json={"instances": [{"mean radius": "big"}]}).status_code == 422
        assert failed > 0 and answered["challenger"] > 0 and answered["champion"] > 0

        r = client.get(app.url + "metrics")  # no token: counts and timings, no served rows
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        found = samples(r.text)
        for arm, version in (("champion", "m:1"), ("challenger", "m:2")):
            assert value(found, "framework_requests", "framework_requests_total", arm=arm, model_version=version,
                         endpoint="predict") == answered[arm]
            assert value(found, "framework_request_latency_seconds", "framework_request_latency_seconds_count",
                         arm=arm) == answered[arm]
            assert value(found, "framework_request_latency_seconds", "framework_request_latency_seconds_bucket",
                         arm=arm, le="+Inf") == answered[arm]
        assert value(found, "framework_errors", "framework_errors_total", status="503", arm="challenger",
                     model_version="m:2") == failed
        assert value(found, "framework_errors", "framework_errors_total", status="422", arm="") == 1
        replica = {s.labels["replica"] for s in found["framework_requests"]}
        assert len(replica) == 1 and replica != {""}  # the Serve replica's id
        assert value(found, "process_cpu_seconds", "process_cpu_seconds_total") > 0
        assert value(found, "process_resident_memory_bytes", "process_resident_memory_bytes") > 10e6
    finally:
        shutdown_app(app)


def test_metrics_can_be_switched_off(ray_session, serve_port, client):
    name = f"it-nometrics-{uuid.uuid4().hex[:6]}"
    app = deploy([served_model(make_onnx())], SingleStrategy, SingleConfig(), port=serve_port,
                 route_prefix=f"/{name}", app_name=name, admin_token=TOKEN, metrics=False)
    try:
        assert client.post(app.predict_url, json={"instances": [instance([1, 2, 3, 4])]}).status_code == 200
        assert client.get(app.url + "metrics").status_code == 404
    finally:
        shutdown_app(app)
