"""The two ways in (``serve.ingress``): what URL is published, the load balancer in front of
several direct-ingress replicas, sticky users, replica restarts and autoscaling, on a real Ray
Serve over HTTP (the session's Ray and Serve port from conftest).

The request/answer contract itself runs on both paths in test_serving_http.py, feedback, admin,
shadows, merges and rank in test_serving_feedback.py, explanations in test_serving_explain.py.
"""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import numpy as np
import pytest

from framework.compat.ray_direct_ingress import ingress_targets
from framework.errors import RecipeError, ServingError
from framework.serving import deploy, shutdown_app
from framework.serving.ingress_modes import balancer_of
from plugins.strategy_single import SingleConfig, SingleStrategy
from test_serving_http import FEATURES, instance, make_onnx, offline, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

TOKEN = "ingress-admin-token-for-tests"


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return make_onnx(seed=5)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def _deploy(serve_port, onnx_bytes, ingress: str, **options):
    name = f"it-ingress-{ingress}-{uuid.uuid4().hex[:6]}"
    return deploy([served_model(onnx_bytes)], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}",
                  app_name=name, ingress=ingress, admin_token=TOKEN, **options)


def _body(seed: int = 0, n: int = 1) -> dict:
    x = np.random.default_rng(seed).normal(size=(n, len(FEATURES))).astype(np.float32)
    return {"instances": [instance(r) for r in x]}


def _kill(replica_name: str) -> None:
    import ray

    ray.kill(ray.get_actor(replica_name, namespace="serve"), no_restart=True)


def _until(check, timeout: float, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every)


def _hammer(url: str, stop: threading.Event, statuses: list, threads: int = 4, **headers) -> list[threading.Thread]:
    """Threads posting to ``url`` until ``stop``; every status (or exception name) lands in ``statuses``."""

    def fire(k: int) -> None:
        with httpx.Client(timeout=30.0, trust_env=False) as c:
            i = 0
            while not stop.is_set():
                try:
                    statuses.append(c.post(url, json=_body(k * 1000 + i % 50), headers=headers).status_code)
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)
                i += 1

    workers = [threading.Thread(target=fire, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    return workers


# ---------------------------------------------------------------------------------------------
# What is published
# ---------------------------------------------------------------------------------------------
def test_direct_publishes_the_replica_port_on_loopback_and_the_proxy_still_reaches_it(
    ray_session, serve_port, client, onnx_bytes
):
    app = _deploy(serve_port, onnx_bytes, "direct")
    try:
        replicas = ingress_targets(app.app_name)
        assert [(t.host, t.port) for t in replicas] == [("127.0.0.1", app.port)]
        assert app.url == f"http://127.0.0.1:{app.port}{app.route_prefix}/" and app.port != serve_port
        assert balancer_of(app.app_name) is None  # one replica: nothing in between
        body = _body(1, 3)
        direct = client.post(app.predict_url, json=body)
        through_proxy = client.post(f"http://127.0.0.1:{serve_port}{app.route_prefix}/predict", json=body)
        assert direct.status_code == through_proxy.status_code == 200
        assert direct.json()["probabilities"] == through_proxy.json()["probabilities"]
        # Serve's X-Request-Id (the client's, else one Serve made) is the answer's correlation id;
        # the request id feedback names is the server's own
        assert direct.headers["x-request-id"] == direct.json()["correlation_id"] != direct.json()["request_id"]
    finally:
        shutdown_app(app)
    with pytest.raises(httpx.ConnectError):  # the port is closed with the app
        client.get(app.url + "healthz")


def test_proxy_publishes_serves_port(ray_session, serve_port, client, onnx_bytes):
    app = _deploy(serve_port, onnx_bytes, "proxy")
    try:
        assert app.port == serve_port and app.ingress == "proxy"
        assert ingress_targets(app.app_name) == []  # its replica does not listen on a port of its own
        assert client.post(app.predict_url, json=_body()).status_code == 200
    finally:
        shutdown_app(app)


def test_bad_ingress_settings_are_refused_before_anything_starts(onnx_bytes):
    with pytest.raises(RecipeError, match=r"serve\.ingress: must be one of direct, proxy, got 'fast'"):
        deploy([served_model(onnx_bytes)], SingleStrategy, SingleConfig(), ingress="fast", app_name="never")
    with pytest.raises(RecipeError, match=r"serve\.balancer_port"):
        deploy([served_model(onnx_bytes)], SingleStrategy, SingleConfig(), balancer_port=70000, app_name="never")


def test_serve_without_direct_ingress_is_a_clear_error(monkeypatch):
    from framework.serving import ingress_modes

    class Status:
        status = "RUNNING"

    monkeypatch.setattr(ingress_modes, "ingress_targets", lambda name: None)
    monkeypatch.setattr("ray.serve.status", lambda: type("S", (), {"applications": {"app": Status()}})())
    with pytest.raises(ServingError, match=r"runs without direct ingress.*serve\.ingress=proxy"):
        ingress_modes.wait_for_replicas("app", 1, "app 'app'", timeout=1)


# ---------------------------------------------------------------------------------------------
# Several replicas: the balancer
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(ray_session, serve_port, onnx_bytes):
    """Two direct-ingress replicas behind the balancer."""
    app = _deploy(serve_port, onnx_bytes, "direct", replicas=2)
    yield app
    shutdown_app(app)


def _listening(pid: int) -> set[tuple[str, int]]:
    import psutil

    return {(c.laddr.ip, c.laddr.port) for c in psutil.net_connections(kind="inet")
            if c.pid == pid and c.status == psutil.CONN_LISTEN}


def test_two_replicas_are_published_behind_a_balancer_on_loopback(pair, client, onnx_bytes):
    balancer = balancer_of(pair.app_name)
    replicas = sorted((t.host, t.port) for t in ingress_targets(pair.app_name))
    assert len(replicas) == 2 and pair.port not in [p for _, p in replicas]
    assert balancer.host == "127.0.0.1" and balancer.port == pair.port and sorted(balancer.targets) == replicas
    # every port involved is on loopback: HAProxy listens on its one port only (no stats page)
    assert _listening(balancer.pid) == {("127.0.0.1", pair.port)}
    assert {host for host, _ in replicas} == {"127.0.0.1"}
    before = balancer.requests_per_target()
    x = np.random.default_rng(3).normal(size=(40, len(FEATURES))).astype(np.float32)
    for row in x:
        r = client.post(pair.predict_url, json={"instances": [instance(row)]})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(r.json()["probabilities"], offline(onnx_bytes, row[None]), atol=1e-6)
    after = balancer.requests_per_target()
    served = {t: after[t] - before.get(t, 0) for t in replicas}
    assert sum(served.values()) == 40 and min(served.values()) >= 10, served  # both replicas answer


def test_a_users_requests_and_feedback_reach_the_same_replica(pair, client):
    """Each replica keeps its own request ids (feedback for another replica's answer is a 404):
    with X-User-Id the balancer sends a user's feedback where the answer came from."""
    for user in range(12):
        headers = {"X-User-Id": f"user-{user}"}
        for _ in range(3):
            answer = client.post(pair.predict_url, json=_body(user), headers=headers).json()
            fb = client.post(pair.feedback_url, json={"request_id": answer["request_id"], "reward": 1.0},
                             headers=headers)
            assert fb.status_code == 200, (user, fb.text)


def test_a_killed_replica_behind_the_balancer_loses_no_request(pair, client):
    balancer = balancer_of(pair.app_name)
    victim = ingress_targets(pair.app_name)[0]
    statuses: list = []
    stop = threading.Event()
    workers = _hammer(pair.predict_url, stop, statuses)
    try:
        time.sleep(0.5)
        _kill(victim.name)
        replaced = _until(lambda: (lambda ts: ts if ts and len(ts) == 2 and victim.port not in [t.port for t in ts]
                                   else None)(ingress_targets(pair.app_name)), timeout=90)
        assert replaced, "Serve did not replace the killed replica"
        assert _until(lambda: sorted(balancer.targets) == sorted((t.host, t.port) for t in replaced), timeout=10)
        time.sleep(1.0)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
    # The balancer retries a request the dead replica never answered (refused, reset before any
    # byte); one whose answer the replica had begun sending when SIGKILLed cannot be replayed (the
    # client already has part of it). So at most the requests in flight at the kill (one per
    # client thread) may fail, and only as a cut connection or a 502/503, never a wrong answer.
    failed = [s for s in statuses if s != 200]
    assert len(statuses) > 50 and len(failed) <= 4, {s: statuses.count(s) for s in set(statuses)}
    assert set(failed) <= {"RemoteProtocolError", "ReadError", 502, 503}, failed
    new = [(t.host, t.port) for t in replaced if t.port != victim.port]
    assert _until(lambda: client.post(pair.predict_url, json=_body()).status_code == 200 and
                  balancer.requests_per_target().get(new[0], 0) > 0, timeout=10)


# ---------------------------------------------------------------------------------------------
# One replica replaced: the URL keeps working, on both paths
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ingress", ["direct", "proxy"])
def test_a_replaced_replica_keeps_the_url_working(ingress, ray_session, serve_port, client, onnx_bytes):
    from ray.serve.context import _get_global_client

    app = _deploy(serve_port, onnx_bytes, ingress)
    try:
        details = _get_global_client().get_serve_details()["applications"][app.app_name]["deployments"]["Ingress"]
        victim = details["replicas"][0]["actor_name"]
        body = _body(7, 2)
        expected = client.post(app.predict_url, json=body).json()["probabilities"]
        _kill(victim)

        def answered():
            try:
                r = client.post(app.predict_url, json=body, timeout=5)
            except httpx.HTTPError:
                return None
            return r if r.status_code == 200 else None

        # the kill is seen (a direct port refuses at once), then a new replica starts and the
        # same URL answers again
        went_down = _until(lambda: answered() is None, timeout=30, every=0.1)
        assert went_down or ingress == "proxy"
        r = _until(answered, timeout=120, every=0.5)
        assert r is not None, f"{app.url} never answered again after its replica was replaced"
        assert r.json()["probabilities"] == expected
        if ingress == "direct":  # a balancer took over the old port, in front of the new replica
            balancer = balancer_of(app.app_name)
            assert balancer is not None and balancer.port == app.port
            assert [p for _, p in balancer.targets] == [t.port for t in ingress_targets(app.app_name)] != [app.port]
    finally:
        shutdown_app(app)


# ---------------------------------------------------------------------------------------------
# Autoscaling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ingress", ["direct", "proxy"])
def test_an_autoscaled_ingress_answers_through_every_replica(ingress, ray_session, serve_port, client, onnx_bytes):
    app = _deploy(serve_port, onnx_bytes, ingress, autoscaling={"min_replicas": 2, "max_replicas": 3})
    try:
        for i in range(20):
            assert client.post(app.predict_url, json=_body(i)).status_code == 200
        if ingress == "direct":
            balancer = balancer_of(app.app_name)
            assert balancer.slots >= 3 and len(balancer.targets) == 2  # room for the third
            assert all(n > 0 for n in balancer.requests_per_target().values())
    finally:
        shutdown_app(app)


def test_scaling_up_enters_the_balancer(ray_session, serve_port, client, onnx_bytes):
    """Serve's autoscaler adds a replica under load (after its 30 s upscale delay); the
    balancer starts sending it requests. The default (direct) path only: it takes ~45 s."""
    app = _deploy(serve_port, onnx_bytes, "direct",
                  autoscaling={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 0.5})
    balancer = balancer_of(app.app_name)
    assert balancer is not None and len(balancer.targets) == 1  # max 2: published behind the balancer
    statuses: list = []
    stop = threading.Event()
    workers = _hammer(app.predict_url, stop, statuses, threads=6)
    try:
        assert _until(lambda: len(balancer.targets) == 2, timeout=150, every=1.0), "never scaled to 2 replicas"
        counts = balancer.requests_per_target()
        time.sleep(1.0)
        later = balancer.requests_per_target()
        assert all(later[t] > counts.get(t, 0) for t in balancer.targets), (counts, later)
    finally:
        stop.set()
        for w in workers:
            w.join(timeout=30)
        shutdown_app(app)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
