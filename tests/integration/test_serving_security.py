"""The [harden] findings about the served app, each a regression test on a real Ray Serve over HTTP
(each of them fails on the code before the hardening):

3. feedback poisoning and open records: ``-/`` reads need the admin token; request ids are the
   server's (a client's X-Request-Id is only a correlation id); an optional client token guards
   predict, rank and feedback; JSON endpoints refuse text/plain and forms (no CORS preflight).
4. inputs that gave a 500: deep JSON, a reward above 1.8e308, an admin weight of 10^400.
5. unbounded feedback payloads: label sizes and NaN labels; ``-/strategy`` stays small.
7. a replica restart loses everything in memory: late feedback joins after a restart.
"""
from __future__ import annotations

import os
import signal
import time
import uuid

import httpx
import psutil
import pytest

from framework.serving import deploy, fetch_records, shutdown_app
from plugins.strategy_single import SingleConfig, SingleStrategy
from test_serving_http import CLASSES, instance, make_onnx, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(240)]

ADMIN_TOKEN = "admin-token-for-the-security-tests"
CLIENT_TOKEN = "client-token-for-the-security-tests"
GOOD = instance([1, 2, 3, 4])


@pytest.fixture(scope="module")
def onnx_bytes() -> bytes:
    return make_onnx()


@pytest.fixture(scope="module")
def app(ray_session, serve_port, onnx_bytes, tmp_path_factory):
    name = f"it-sec-{uuid.uuid4().hex[:6]}"
    served = deploy([served_model(onnx_bytes)], SingleStrategy, SingleConfig(), port=serve_port,
                    route_prefix=f"/{name}", app_name=name, admin_token=ADMIN_TOKEN,
                    record_log=tmp_path_factory.mktemp("records"))
    yield served
    shutdown_app(served)


@pytest.fixture(scope="module")
def guarded(ray_session, serve_port, onnx_bytes):
    name = f"it-sec-client-{uuid.uuid4().hex[:6]}"
    served = deploy([served_model(onnx_bytes)], SingleStrategy, SingleConfig(), port=serve_port,
                    route_prefix=f"/{name}", app_name=name, client_token=CLIENT_TOKEN)
    yield served
    shutdown_app(served)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def predict(client, app, **headers):
    r = client.post(app.predict_url, json={"instance": GOOD}, headers={**app.client_headers(), **headers})
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------------------------------------
# 3. Feedback poisoning, open records, no token for predict, cross-site posts
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("endpoint", ["-/records", "-/strategy", "-/events"])
def test_reads_need_the_admin_token(app, client, endpoint):
    assert client.get(app.url + endpoint).status_code == 401
    assert client.get(app.url + endpoint, headers={"X-Admin-Token": ""}).status_code == 401
    assert client.get(app.url + endpoint, headers=app.admin_headers()).status_code == 200


def test_a_client_request_id_cannot_take_over_another_answer(app, client):
    first = predict(client, app, **{"X-Request-Id": "chosen-id"})
    second = predict(client, app, **{"X-Request-Id": "chosen-id"})
    assert first["request_id"] != second["request_id"]
    assert first["correlation_id"] == second["correlation_id"] == "chosen-id"
    # feedback names the server's id; the client's id is not one
    assert client.post(app.feedback_url, json={"request_id": "chosen-id", "label": CLASSES[0]}).status_code == 404
    r = client.post(app.feedback_url, json={"request_id": first["request_id"], "label": CLASSES[0]})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert client.post(app.feedback_url, json={"request_id": "x" * 65, "label": CLASSES[0]}).status_code == 422


def test_the_client_token_guards_predict_rank_and_feedback(guarded, client):
    body = {"instance": GOOD}
    for url in (guarded.predict_url, guarded.rank_url):
        assert client.post(url, json=body).status_code == 401
        wrong = client.post(url, json=body, headers={"Authorization": "Bearer " + "x" * 30})
        assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "Authorization"
        assert client.post(url, json=body, headers=guarded.client_headers()).status_code == 200
    rid = predict(client, guarded)["request_id"]
    assert client.post(guarded.feedback_url, json={"request_id": rid, "reward": 1}).status_code == 401
    assert client.post(guarded.feedback_url, json={"request_id": rid, "reward": 1},
                       headers=guarded.client_headers()).status_code == 200
    assert client.get(guarded.url + "healthz").status_code == 200  # health and schema stay open
    # the admin token is not the client token and vice versa
    assert client.get(guarded.url + "-/strategy", headers={"X-Admin-Token": CLIENT_TOKEN}).status_code == 401


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                          "text/plain; charset=utf-8"])
@pytest.mark.parametrize("endpoint", ["predict", "rank", "feedback"])
def test_cross_site_content_types_are_refused(app, client, endpoint, content_type):
    import json

    rid = predict(client, app)["request_id"]
    body = {"instance": GOOD} if endpoint != "feedback" else {"request_id": rid, "label": CLASSES[0]}
    r = client.post(app.url + endpoint, content=json.dumps(body), headers={"Content-Type": content_type})
    assert r.status_code == 415, r.text
    assert r.json()["error"]["field"] == "Content-Type"
    ok = client.post(app.url + endpoint, content=json.dumps(body), headers={"Content-Type": "application/json; charset=utf-8"})
    assert ok.status_code == 200


# ---------------------------------------------------------------------------------------------
# 4. Inputs that were a 500
# ---------------------------------------------------------------------------------------------
def test_deep_json_huge_reward_and_huge_weight_are_4xx(app, client):
    headers = {"Content-Type": "application/json"}
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for url in (app.predict_url, app.rank_url, app.feedback_url):
        r = client.post(url, content=deep, headers=headers)
        assert r.status_code == 400 and r.json()["error"] == {"field": "body", "reason": "JSON nested too deeply"}, r.text
    rid = predict(client, app)["request_id"]
    r = client.post(app.feedback_url, content=b'{"request_id": "%s", "reward": 1%s}' % (rid.encode(), b"0" * 400),
                    headers=headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "reward", r.text
    r = client.post(app.url + "-/admin/weights", content=b'{"weights": {"primary": 1%s}}' % (b"0" * 400),
                    headers={**headers, **app.admin_headers()})
    assert r.status_code == 422 and r.json()["error"]["field"] == "weights.primary", r.text
    r = client.post(app.url + "-/admin/promote", json={"reason": "r" * 5000}, headers=app.admin_headers())
    assert r.status_code == 413


# ---------------------------------------------------------------------------------------------
# 5. Unbounded feedback payloads
# ---------------------------------------------------------------------------------------------
def test_feedback_labels_are_bounded_and_finite(app, client):
    rid = predict(client, app)["request_id"]
    headers = {"Content-Type": "application/json"}
    r = client.post(app.feedback_url, json={"request_id": rid, "label": "x" * 4_000_000})
    assert r.status_code == 413 and r.json()["error"]["field"] == "label"
    r = client.post(app.feedback_url, content=b'{"request_id": "%s", "label": NaN}' % rid.encode(), headers=headers)
    assert r.status_code == 422 and r.json()["error"]["field"] == "label"
    r = client.post(app.feedback_url, json={"request_id": rid, "label": {"nested": [1]}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "label"
    r = client.post(app.feedback_url, json={"request_id": rid, "label": ["a"] * 2000})
    assert r.status_code == 413
    for _ in range(20):  # at the size limit: -/strategy shows the last 10 entries, each small
        one = predict(client, app)["request_id"]
        assert client.post(app.feedback_url, json={"request_id": one, "label": "y" * 128}).status_code == 200
    snapshot = client.get(app.url + "-/strategy", headers=app.admin_headers())
    assert snapshot.status_code == 200 and len(snapshot.content) < 20_000
    assert "NaN" not in snapshot.text


# ---------------------------------------------------------------------------------------------
# 7. A replica restart keeps what was served and the feedback on it (the record log)
# ---------------------------------------------------------------------------------------------
def replica_pids(app_name: str) -> set[int]:
    pids = set()
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or ())
        if f"ServeReplica:{app_name}:Ingress" in cmdline:
            pids.add(proc.pid)
    return pids


def wait_for_new_replica(app, client, old: set[int], timeout: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            healthy = client.get(app.url + "healthz", timeout=5).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and replica_pids(app.app_name) - old:
            return time.monotonic() - started
        time.sleep(0.2)
    raise AssertionError("no new replica after the kill")


def test_late_feedback_joins_after_a_replica_restart(app, client):
    served = [predict(client, app, **{"X-Request-Id": f"before-kill-{i}"}) for i in range(5)]
    assert client.post(app.feedback_url, json={"request_id": served[0]["request_id"], "label": served[0]["predictions"][0]},
                       headers=app.client_headers()).status_code == 200
    before = client.get(app.url + "-/strategy", headers=app.admin_headers()).json()["feedback"]
    time.sleep(0.5)  # the writer flushes every 20 ms
    pids = replica_pids(app.app_name)
    assert len(pids) == 1, pids
    os.kill(next(iter(pids)), signal.SIGKILL)
    wait_for_new_replica(app, client, pids)

    snapshot = client.get(app.url + "-/strategy", headers=app.admin_headers()).json()
    assert snapshot["record_log"]["restored"] >= 5
    after = snapshot["feedback"]
    assert after["arms"]["primary"]["labels"] == before["arms"]["primary"]["labels"]  # counters survived
    # late feedback for answers served before the kill joins them; a repeat is still a duplicate
    late = client.post(app.feedback_url, json={"request_id": served[1]["request_id"], "label": served[1]["predictions"][0]})
    assert late.status_code == 200 and late.json()["arm"] == "primary" and late.json()["accepted"] == 1
    again = client.post(app.feedback_url, json={"request_id": served[0]["request_id"], "label": CLASSES[0]})
    assert again.status_code == 200 and again.json()["duplicate"] is True
    frame = fetch_records(app)
    assert {a["request_id"] for a in served} <= set(frame["request_id"])
    assert set(frame[frame["request_id"] == served[2]["request_id"]]["correlation_id"]) == {"before-kill-2"}
