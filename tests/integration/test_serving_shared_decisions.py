"""One decision state across ingress replicas ([experiments]): two direct-ingress replicas of an
A/B test on a real Ray Serve, each reached on its own port over HTTP. Their counts add up in one
strategy, sticky users get the same arm from either, an admin command given to one reaches the
other, and a replacement replica routes as the others do from its first request."""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from framework.compat.ray_direct_ingress import ingress_targets
from framework.serving import deploy, shutdown_app
from plugins.strategy_ab import ABConfig, ABStrategy
from test_serving_feedback import wait_for
from test_serving_http import FEATURES, instance, make_onnx, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

TOKEN = "shared-decisions-admin-token"


@pytest.fixture(scope="module")
def app(ray_session, serve_port):
    name = f"it-shared-{uuid.uuid4().hex[:6]}"
    models = [served_model(make_onnx(seed=1), "champion", "v-champion"),
              served_model(make_onnx(seed=2), "challenger", "v-challenger")]
    served = deploy(models, ABStrategy, ABConfig(weights={"champion": 0.5, "challenger": 0.5}), port=serve_port,
                    route_prefix=f"/{name}", app_name=name, replicas=2, admin_token=TOKEN)
    yield served
    shutdown_app(served)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def _replica_urls(app) -> list[str]:
    """Each ingress replica's own base URL (not the balancer's)."""
    targets = ingress_targets(app.app_name)
    assert targets is not None and len(targets) == 2
    return [app.url.replace(f":{app.port}/", f":{t.port}/") for t in targets]


def _body(seed: int) -> dict:
    x = np.random.default_rng(seed).normal(size=(1, len(FEATURES))).astype(np.float32)
    return {"instances": [instance(r) for r in x]}


def _strategy(client, base: str) -> dict:
    r = client.get(base + "-/strategy", headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 200, r.text
    return r.json()


def test_counts_of_both_replicas_add_up_in_one_strategy(app, client):
    urls = _replica_urls(app)
    before = sum(a["requests"] for a in _strategy(client, urls[0])["state"]["arms"].values())
    for i in range(60):
        r = client.post(urls[i % 2] + "predict", json=_body(i))
        assert r.status_code == 200, r.text
    total = lambda base: sum(a["requests"] for a in _strategy(client, base)["state"]["arms"].values())  # noqa: E731
    assert wait_for(lambda: total(urls[0]) - before == 60 and total(urls[1]) - before == 60), \
        (total(urls[0]), total(urls[1]), before)
    one, two = _strategy(client, urls[0]), _strategy(client, urls[1])
    assert one["state"] == two["state"]  # the same strategy answers, whichever replica is asked
    assert one["shared"]["received"]["routed"] >= 60


def test_a_sticky_user_gets_the_same_arm_from_either_replica(app, client):
    urls = _replica_urls(app)
    arms = set()
    for user in range(20):
        headers = {"X-User-Id": f"user-{user}"}
        answers = [client.post(base + "predict", json=_body(user), headers=headers).json()["arm"] for base in urls]
        assert answers[0] == answers[1], (user, answers)
        arms.add(answers[0])
    assert arms == {"champion", "challenger"}  # a 50/50 split over 20 users uses both arms


def test_an_admin_command_given_to_one_replica_reaches_the_other_and_a_replacement(app, client):
    import ray

    urls = _replica_urls(app)
    r = client.post(urls[0] + "-/admin/promote", json={"reason": "operator test"}, headers={"X-Admin-Token": TOKEN})
    assert r.status_code == 200, r.text
    promoted = r.json()["event"]["arm"]
    assert promoted in ("champion", "challenger")
    # the other replica answers with the promoted arm within a sync interval or so
    assert wait_for(lambda: all(client.post(urls[1] + "predict", json=_body(k)).json()["arm"] == promoted
                              for k in range(10)), timeout=5)
    events = client.get(urls[1] + "-/events", headers={"X-Admin-Token": TOKEN}).json()
    assert events["events"][-1]["arm"] == promoted and events["events"][-1]["source"] == "admin"

    # a replica that replaces a killed one routes from the shared state from its first request
    before = ingress_targets(app.app_name)
    victim = before[1]
    ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
    replaced = wait_for(lambda: (lambda ts: ts if ts and len(ts) == 2 and victim.port not in [t.port for t in ts]
                               else None)(ingress_targets(app.app_name)), timeout=90)
    assert replaced, "Serve did not replace the killed replica"
    new = next(t for t in replaced if t.port not in {b.port for b in before})
    base = app.url.replace(f":{app.port}/", f":{new.port}/")
    assert wait_for(lambda: client.get(base + "healthz").status_code == 200, timeout=30)
    first = client.post(base + "predict", json=_body(99))
    assert first.status_code == 200 and first.json()["arm"] == promoted
