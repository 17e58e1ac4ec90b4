"""Feedback, verdicts, admin commands, shadows, merged routes, ranking and fault injection, on a
real Ray Serve over real HTTP.

Two apps per module, both with test-local strategies (no dependency on the strategy plugins):
``lab`` (admin token, four arms, routes chosen by the request's key so that one deployment
covers shadows, merges and weights; deployed once per ingress path, direct and proxy) and ``canary`` (no admin token, a candidate that always
fails, a strategy that rolls back after 3 errors).
"""
from __future__ import annotations

import json
import random
import statistics
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass

import httpx
import numpy as np
import pytest

from framework.components import Decision, Feedback, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import ServingError
from framework.serving import deploy, fetch_events, shutdown_app
from test_serving_http import CLASSES, FEATURES, instance, make_onnx, offline, served_model

pytestmark = [pytest.mark.ray, pytest.mark.timeout(180)]

TOKEN = "lab-token-long-enough-0123"
ADMIN = {"X-Admin-Token": TOKEN}
INC, CAND = "champion", "challenger"


# ---------------------------------------------------------------------------------------------
# Test-local strategies (pickled by value: Ray workers need not import this test module)
# ---------------------------------------------------------------------------------------------
@dataclass
class LabConfig:
    pass


class LabStrategy(TrafficStrategy):
    """Routes by the request's key (``arm:NAME``, ``shadow-*``, ``merge*``), else by weights
    (smooth weighted round robin: deterministic); team-draft merge of rankings; remembers
    what it observed so the tests can look."""

    name = "lab"
    Config = LabConfig

    def __init__(self, config, arms):
        super().__init__(config, arms)
        self.weights = {INC: 1.0, CAND: 0.0}
        self.credit = {INC: 0.0, CAND: 0.0}
        self.outcomes: deque = deque(maxlen=2000)
        self.feedbacks: deque = deque(maxlen=500)
        self.teams: dict[str, dict] = {}
        self.team_clicks = {INC: 0, CAND: 0}
        self.applied: list[str] = []

    def route(self, request: RouteRequest) -> Route:
        key = request.key or ""
        if key.startswith("arm:"):
            return Route(key[4:])
        special = {
            "shadow-raise": Route(INC, ("boom",)),
            "shadow-sleep": Route(INC, ("slow",)),
            "shadow-same": Route(INC, (CAND,)),
            "merge": Route(INC, (CAND,), merge=True),
            "merge-broken": Route(INC, ("boom",), merge=True),
        }.get(key)
        if special is not None:
            return special
        total = sum(self.weights.values())
        for arm, w in self.weights.items():
            self.credit[arm] += w
        best = max(self.credit, key=self.credit.get)
        self.credit[best] -= total
        return Route(best)

    def observe(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def feedback(self, feedback: Feedback) -> None:
        self.feedbacks.append(feedback)
        teams = self.teams.get(feedback.request_id, {})
        for item in feedback.clicks:
            if item in teams:
                self.team_clicks[teams[item]] += 1

    def decide(self) -> Decision:
        return Decision(Verdict.HOLD, "lab never decides", weights=dict(self.weights))

    def apply(self, decision: Decision) -> None:
        self.applied.append(decision.verdict.value)
        self.weights = {INC: 0.0, CAND: 1.0} if decision.verdict == Verdict.PROMOTE else {INC: 1.0, CAND: 0.0}
        self.credit = {INC: 0.0, CAND: 0.0}

    def set_weights(self, weights) -> None:
        extra = set(weights) - {INC, CAND}
        if extra:
            raise ValueError(f"only {INC} and {CAND} take traffic weights, not {sorted(extra)}")
        self.weights = {INC: weights.get(INC, 0.0), CAND: weights.get(CAND, 0.0)}
        self.credit = {INC: 0.0, CAND: 0.0}

    def merge(self, request: RouteRequest, answers):
        if all(isinstance(a, list) for a in answers.values()):
            return self._team_draft(request.request_id, answers)
        return {"predictions": answers[INC]["predictions"], "merged_from": sorted(answers)}

    def _team_draft(self, request_id: str, rankings):
        """Team-draft interleaving: the team with fewer picks (a coin on ties) adds its best unpicked item."""
        rng = random.Random(request_id)
        a, b = rankings[INC], rankings[CAND]
        ranking, teams, picked, count = [], [], set(), {INC: 0, CAND: 0}
        while len(ranking) < len(set(a) | set(b)):
            team = INC if count[INC] < count[CAND] or (count[INC] == count[CAND] and rng.random() < 0.5) else CAND
            item = next(i for i in rankings[team] if i not in picked)
            ranking.append(item)
            teams.append(team)
            picked.add(item)
            count[team] += 1
        self.teams[request_id] = dict(zip(ranking, teams))
        return {"ranking": ranking, "teams": teams}

    def state(self) -> dict:
        return {
            "weights": self.weights,
            "applied": self.applied,
            "team_clicks": self.team_clicks,
            "outcomes": [
                {"request_id": o.request_id, "arm": o.arm, "latency_ms": o.latency_ms, "error": o.error,
                 "prediction": o.prediction}
                for o in self.outcomes
            ],
            "feedbacks": [
                {"request_id": f.request_id, "arm": f.arm, "label": f.label, "reward": f.reward,
                 "clicks": list(f.clicks), "prediction": f.prediction}
                for f in self.feedbacks
            ],
        }


class FailFastCanary(TrafficStrategy):
    """Every other request to the candidate until it failed 3 times, then rolls back for good."""

    name = "failfast"
    Config = LabConfig
    MAX_ERRORS = 3

    def __init__(self, config, arms):
        super().__init__(config, arms)
        self.n = 0
        self.errors = 0
        self.rolled_back = False

    def route(self, request: RouteRequest) -> Route:
        if self.rolled_back:
            return Route("champion")
        self.n += 1
        return Route("candidate" if self.n % 2 == 0 else "champion")

    def observe(self, outcome: Outcome) -> None:
        if outcome.arm == "candidate" and outcome.error:
            self.errors += 1

    def decide(self) -> Decision:
        if not self.rolled_back and self.errors >= self.MAX_ERRORS:
            return Decision(Verdict.ROLLBACK, f"candidate failed {self.errors} requests", weights={"champion": 1.0})
        return Decision(Verdict.HOLD, "rolled back" if self.rolled_back else "watching the candidate")

    def apply(self, decision: Decision) -> None:
        if decision.verdict == Verdict.ROLLBACK:
            self.rolled_back = True

    def state(self) -> dict:
        return {"errors": self.errors, "rolled_back": self.rolled_back}


import ray.cloudpickle  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ---------------------------------------------------------------------------------------------
# Fixtures: one app per strategy, deployed once for the module
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def onnx_models() -> dict[str, bytes]:
    return {arm: make_onnx(seed=i) for i, arm in enumerate([INC, CAND, "boom", "slow"])}


@pytest.fixture(scope="module", params=["direct", "proxy"])
def lab(request, ray_session, serve_port, onnx_models):
    """On both ingress paths: every feedback, routing, shadow, merge, rank and admin test runs twice."""
    name = f"it-lab-{request.param}-{uuid.uuid4().hex[:6]}"
    app = deploy(
        [served_model(b, arm=arm, version=f"v-{arm}") for arm, b in onnx_models.items()],
        LabStrategy,
        LabConfig(),
        port=serve_port,
        route_prefix=f"/{name}",
        app_name=name,
        admin_token=TOKEN,
        faults={"boom": {"error_rate": 1.0}, "slow": {"extra_latency_ms": 200.0}},
        feedback_memory=100,
        ingress=request.param,
    )
    yield app
    shutdown_app(app)


@pytest.fixture(scope="module")
def canary(ray_session, serve_port, onnx_models):
    name = f"it-canary-{uuid.uuid4().hex[:6]}"
    app = deploy(
        [served_model(onnx_models[INC], arm="champion", version="v-champ"),
         served_model(onnx_models[CAND], arm="candidate", version="v-cand")],
        FailFastCanary,
        LabConfig(),
        port=serve_port,
        route_prefix=f"/{name}",
        app_name=name,
        faults={"candidate": {"error_rate": 1.0, "seed": 7}},
    )
    yield app
    shutdown_app(app)


@pytest.fixture(scope="module")
def client():
    with httpx.Client(timeout=30.0, trust_env=False) as c:
        yield c


def rows(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=3, size=(n, len(FEATURES))).astype(np.float32)


def predict(client, app, x, key=None, rid=None, headers=None, **kw):
    headers = {**(headers or {}), **({"X-Request-Id": rid} if rid else {})}
    body = {"instances": [instance(r) for r in np.atleast_2d(x)]}
    if key is not None:
        body["key"] = key
    return client.post(app.predict_url, json=body, headers=headers, **kw)


def state(client, app) -> dict:
    r = client.get(app.url + "-/strategy", headers=app.admin_headers())
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(check, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Feedback
# ---------------------------------------------------------------------------------------------
def test_feedback_reaches_the_strategy_with_arm_and_prediction(lab, client):
    answer = predict(client, lab, rows(1), key="arm:challenger", rid=f"fb-{uuid.uuid4().hex[:8]}").json()
    rid = answer["request_id"]  # the server's id, not the client's X-Request-Id
    r = client.post(lab.feedback_url, json={"request_id": rid, "label": answer["predictions"][0]})
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 1, "duplicates": 0, "unknown": [], "request_id": rid, "arm": CAND, "duplicate": False}
    mine = [f for f in state(client, lab)["state"]["feedbacks"] if f["request_id"] == rid]
    # single-instance request: the prediction is the first instance's label, not a list
    assert mine == [{"request_id": rid, "arm": CAND, "label": answer["predictions"][0], "reward": None,
                     "clicks": [], "prediction": answer["predictions"][0]}]

    # the same kind again: acknowledged, not passed on; another kind for the same request: passed
    again = client.post(lab.feedback_url, json={"request_id": rid, "label": "setosa"})
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["accepted"] == 0
    reward = client.post(lab.feedback_url, json={"request_id": rid, "reward": 1.5})
    assert reward.json()["accepted"] == 1 and reward.json()["duplicate"] is False
    mine = [f for f in state(client, lab)["state"]["feedbacks"] if f["request_id"] == rid]
    assert [(f["label"], f["reward"]) for f in mine] == [(answer["predictions"][0], None), (None, 1.5)]


def test_late_and_out_of_order_feedback_and_accuracy_per_arm(lab, client, onnx_models):
    x_first, x_second = rows(1, seed=11), rows(3, seed=12)
    first = predict(client, lab, x_first, key="arm:champion").json()
    second = predict(client, lab, x_second, key="arm:champion").json()
    for _ in range(30):  # other traffic in between: the feedback is late
        assert predict(client, lab, rows(1), key="arm:challenger").status_code == 200
    before = state(client, lab)["feedback"]["arms"][INC]
    # second before first, and a multi-instance label list: one wrong label out of three
    labels = list(second["predictions"])
    labels[0] = next(c for c in CLASSES if c != labels[0])
    r2 = client.post(lab.feedback_url, json={"request_id": second["request_id"], "label": labels})
    r1 = client.post(lab.feedback_url, json={"request_id": first["request_id"], "label": first["predictions"][0]})
    assert r2.json()["accepted"] == 1 and r1.json()["accepted"] == 1
    snap = state(client, lab)
    after = snap["feedback"]["arms"][INC]
    assert after["labels"] - before["labels"] == 4 and after["correct"] - before["correct"] == 3
    assert 0 < after["accuracy"] <= 1
    stored = {f["request_id"]: f["prediction"] for f in snap["state"]["feedbacks"]}
    assert stored[second["request_id"]] == second["predictions"]  # several instances: the list
    assert second["predictions"] == [CLASSES[i] for i in offline(onnx_models[INC], x_second).argmax(axis=1)]


def test_unknown_and_evicted_request_ids_are_404(lab, client):
    r = client.post(lab.feedback_url, json={"request_id": "never-served", "label": "setosa"})
    assert r.status_code == 404
    assert r.json()["error"] == {"field": "request_id", "reason": "unknown or expired request id 'never-served'"}
    old = predict(client, lab, rows(1), key="arm:champion").json()["request_id"]
    for _ in range(100):  # feedback_memory=100: the oldest id is evicted
        predict(client, lab, rows(1), key="arm:champion")
    r = client.post(lab.feedback_url, json={"request_id": old, "reward": 1})
    assert r.status_code == 404 and old in r.json()["error"]["reason"]


def test_feedback_batch(lab, client):
    a = predict(client, lab, rows(1), key="arm:champion").json()
    b = predict(client, lab, rows(1), key="arm:challenger").json()
    batch = {"feedback": [
        {"request_id": a["request_id"], "label": a["predictions"][0]},
        {"request_id": "gone-1", "reward": 0.0},
        {"request_id": b["request_id"], "reward": 1, "label": None},
        {"request_id": a["request_id"], "label": "setosa"},  # duplicate inside the same batch
    ]}
    r = client.post(lab.feedback_url, json=batch)
    assert r.status_code == 200, r.text
    assert r.json() == {"accepted": 2, "duplicates": 1, "unknown": ["gone-1"]}
    again = client.post(lab.feedback_url, json={"feedback": batch["feedback"][:1]})
    assert again.json() == {"accepted": 0, "duplicates": 1, "unknown": []}


BAD_FEEDBACK = [
    ("invalid-json", b'{"request_id": ', 400, "body", "invalid JSON"),
    ("not-an-object", [1], 422, "body", "expected a JSON object"),
    ("no-request-id", {"label": "setosa"}, 422, "request_id", "missing"),
    ("request-id-number", {"request_id": 5, "label": "setosa"}, 422, "request_id", "non-empty string"),
    ("nothing", {"request_id": "r"}, 422, "body", "nothing to record"),
    ("reward-string", {"request_id": "r", "reward": "high"}, 422, "reward", "finite number"),
    ("reward-bool", {"request_id": "r", "reward": True}, 422, "reward", "finite number"),
    ("reward-nan", b'{"request_id": "r", "reward": NaN}', 422, "reward", "finite number"),
    ("clicks-string", {"request_id": "r", "clicks": "a"}, 422, "clicks", "list of item ids"),
    ("click-object", {"request_id": "r", "clicks": [{"id": 1}]}, 422, "clicks[0]", "item id"),
    ("typo", {"request_id": "r", "lable": "setosa"}, 422, "lable", "unknown field"),
    ("batch-not-list", {"feedback": {"request_id": "r"}}, 422, "feedback", "expected a list"),
    ("batch-empty", {"feedback": []}, 422, "feedback", "empty"),
    ("batch-item", {"feedback": [{"request_id": "r", "label": 1}, 3]}, 422, "feedback[1]", "feedback object"),
    ("batch-item-field", {"feedback": [{"request_id": "r", "label": 1}, {"request_id": "r", "reward": "x"}]},
     422, "feedback[1].reward", "finite number"),
    ("batch-extra", {"feedback": [{"request_id": "r", "label": 1}], "label": 2}, 422, "label", "unexpected"),
]


@pytest.mark.parametrize("body,status,field,reason", [b[1:] for b in BAD_FEEDBACK], ids=[b[0] for b in BAD_FEEDBACK])
def test_malformed_feedback_is_a_4xx_naming_the_field(lab, client, body, status, field, reason):
    if isinstance(body, bytes):
        r = client.post(lab.feedback_url, content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post(lab.feedback_url, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field and reason in r.json()["error"]["reason"], r.json()
    assert client.get(lab.feedback_url).status_code == 405


# ---------------------------------------------------------------------------------------------
# Ranking and merged routes
# ---------------------------------------------------------------------------------------------
def offline_ranking(onnx_bytes: bytes, x: np.ndarray, ids: list) -> list:
    scores = offline(onnx_bytes, x)[:, -1]  # rank_class None: the last class
    return [ids[i] for i in np.argsort(-scores, kind="stable")]


def test_rank_with_a_plain_route(lab, client, onnx_models):
    x = rows(6, seed=3)
    r = client.post(lab.rank_url, json={"instances": [instance(v) for v in x]}, headers={"X-User-Id": "arm:challenger"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["arm"] == CAND and body["model_version"] == "v-challenger" and "teams" not in body
    assert body["ranking"] == offline_ranking(onnx_models[CAND], x, [str(i) for i in range(6)])
    # clicks name served items; 3 and "3" are the same item, handed on as the id that was served
    fb = client.post(lab.feedback_url, json={"request_id": body["request_id"], "clicks": [int(body["ranking"][0])]})
    assert fb.status_code == 200, fb.text
    mine = [f for f in state(client, lab)["state"]["feedbacks"] if f["request_id"] == body["request_id"]]
    assert mine[0]["clicks"] == [body["ranking"][0]] and mine[0]["prediction"] == body["ranking"]
    # the header beats the body's key; the body's key alone routes too
    ids = ["a", "b", 7, "d", "e", "f"]
    r = client.post(lab.rank_url, json={"instances": [instance(v) for v in x], "item_ids": ids, "key": "arm:champion"})
    assert r.json()["arm"] == INC and r.json()["ranking"] == offline_ranking(onnx_models[INC], x, ids)
    assert client.get(lab.url + "schema").json()["rank_class"] == CLASSES[-1]
    assert predict(client, lab, x[:1], headers={"X-User-Id": "arm:challenger"}).json()["arm"] == CAND


def test_merged_ranking_is_team_draft_and_clicks_credit_teams(lab, client, onnx_models):
    x = rows(8, seed=5)
    ids = [f"item{i}" for i in range(8)]
    r = client.post(lab.rank_url, json={"instances": [instance(v) for v in x], "item_ids": ids, "key": "merge"})
    assert r.status_code == 200, r.text
    body = r.json()
    ranking, teams = body["ranking"], body["teams"]
    assert sorted(ranking) == sorted(ids) and body["arm"] == INC and set(teams) == {INC, CAND}
    own = {arm: offline_ranking(onnx_models[arm], x, ids) for arm in (INC, CAND)}
    for k, (item, team) in enumerate(zip(ranking, teams)):  # each pick: the team's best unpicked item
        assert item == next(i for i in own[team] if i not in ranking[:k])
    # both arms answered the same request id
    outcomes = [o for o in state(client, lab)["state"]["outcomes"] if o["request_id"] == body["request_id"]]
    assert {o["arm"]: o["prediction"] for o in outcomes} == own

    before = state(client, lab)["state"]["team_clicks"]
    ok = client.post(lab.feedback_url, json={"request_id": body["request_id"], "clicks": ranking[:2]})
    assert ok.status_code == 200 and ok.json()["arm"] == INC
    after = state(client, lab)["state"]["team_clicks"]
    for item, team in zip(ranking[:2], teams[:2]):
        before[team] += 1
    assert after == before
    stranger = client.post(lab.feedback_url, json={"request_id": body["request_id"], "clicks": ["item99"]})
    assert stranger.status_code == 422 and stranger.json()["error"]["field"] == "clicks[0]"


def test_merged_predict_and_a_failing_merged_arm(lab, client, onnx_models):
    x = rows(2, seed=8)
    merged = predict(client, lab, x, key="merge").json()
    assert merged["merged_from"] == [CAND, INC] and merged["arm"] == INC
    assert merged["predictions"] == [CLASSES[i] for i in offline(onnx_models[INC], x).argmax(axis=1)]
    # a merged arm that fails: merge() gets the answers that came (the failure is observed)...
    broken = predict(client, lab, x, key="merge-broken")
    assert broken.status_code == 200 and broken.json()["merged_from"] == [INC]
    np.testing.assert_allclose(broken.json()["probabilities"], offline(onnx_models[INC], x), atol=1e-6)
    seen = [o for o in state(client, lab)["state"]["outcomes"] if o["request_id"] == broken.json()["request_id"]]
    assert {(o["arm"], o["error"]) for o in seen} == {(INC, False), ("boom", True)}
    # ... and when merge() cannot cope (the team draft needs both), the primary's own ranking
    ranked = client.post(lab.rank_url, json={"instances": [instance(v) for v in x], "key": "merge-broken"})
    assert ranked.status_code == 200 and "teams" not in ranked.json()
    assert ranked.json()["ranking"] == offline_ranking(onnx_models[INC], x, ["0", "1"])


GOOD = instance([1, 2, 3, 4])
BAD_RANKS = [
    ("invalid-json", b'{"instances": [', 400, "body", "invalid JSON"),
    ("missing-instances", {"item_ids": ["a"]}, 422, "instances", "missing"),
    ("empty", {"instances": []}, 422, "instances", "empty"),
    ("bad-feature", {"instances": [GOOD, dict(GOOD, age="x")]}, 422, "instances[1].age", "finite number"),
    ("ids-not-list", {"instances": [GOOD], "item_ids": "a"}, 422, "item_ids", "expected a list"),
    ("ids-length", {"instances": [GOOD, GOOD], "item_ids": ["a"]}, 422, "item_ids", "expected 2 ids"),
    ("ids-duplicate", {"instances": [GOOD] * 3, "item_ids": ["a", "b", "a"]}, 422, "item_ids[2]", "duplicate"),
    ("ids-type", {"instances": [GOOD], "item_ids": [True]}, 422, "item_ids[0]", "string or an integer"),
    ("bad-key", {"instances": [GOOD], "key": [1]}, 422, "key", "expected a string"),
]


@pytest.mark.parametrize("body,status,field,reason", [b[1:] for b in BAD_RANKS], ids=[b[0] for b in BAD_RANKS])
def test_malformed_rank_request_is_a_4xx(lab, client, body, status, field, reason):
    if isinstance(body, bytes):
        r = client.post(lab.rank_url, content=body, headers={"Content-Type": "application/json"})
    else:
        r = client.post(lab.rank_url, json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["field"] == field and reason in r.json()["error"]["reason"], r.json()


# ---------------------------------------------------------------------------------------------
# Shadows: off the client's path
# ---------------------------------------------------------------------------------------------
def test_shadows_never_change_the_answer_nor_wait(lab, client, onnx_models):
    x = rows(45, seed=9)
    lat: dict[str, list[float]] = {"arm:champion": [], "shadow-raise": [], "shadow-sleep": []}
    rids: dict[str, list[str]] = {k: [] for k in lat}
    for rnd in range(3):  # alternating rounds: machine noise hits all three alike
        for key in lat:
            for i in range(rnd * 15, rnd * 15 + 15):
                t0 = time.perf_counter()
                r = predict(client, lab, x[i], key=key)
                lat[key].append((time.perf_counter() - t0) * 1000)
                assert r.status_code == 200, r.text
                body = r.json()
                assert body["arm"] == INC
                np.testing.assert_allclose(body["probabilities"], offline(onnx_models[INC], x[i : i + 1]), atol=1e-6)
                rids[key].append(body["request_id"])
    p50 = {k: statistics.median(v) for k, v in lat.items()}
    assert p50["shadow-sleep"] < 100, p50  # the 200 ms shadow is not awaited
    assert p50["shadow-raise"] < 100, p50

    def shadows_seen():
        seen = {(o["request_id"], o["arm"]): o for o in state(client, lab)["state"]["outcomes"]}
        return all((rid, "slow") in seen for rid in rids["shadow-sleep"]) and seen

    seen = wait_for(shadows_seen)
    assert seen, "the slow shadow's outcomes were never observed"
    slow = [seen[(rid, "slow")] for rid in rids["shadow-sleep"]]
    # >= 200 ms give or take the event loop clock granularity
    assert all(o["latency_ms"] > 195 and not o["error"] for o in slow), [o["latency_ms"] for o in slow]
    assert all(seen[(rid, "boom")]["error"] for rid in rids["shadow-raise"])
    assert state(client, lab)["shadows"]["skipped"] == 0


def test_shadow_outcome_carries_its_prediction_for_agreement(lab, client, onnx_models):
    x = rows(3, seed=10)
    rid = predict(client, lab, x, key="shadow-same").json()["request_id"]
    got = wait_for(lambda: (lambda d: d if CAND in d else None)(
        {o["arm"]: o["prediction"] for o in state(client, lab)["state"]["outcomes"] if o["request_id"] == rid}))
    assert got == {arm: [CLASSES[i] for i in offline(onnx_models[arm], x).argmax(axis=1)] for arm in (INC, CAND)}


# ---------------------------------------------------------------------------------------------
# Admin commands and events
# ---------------------------------------------------------------------------------------------
def default_arms(client, app, n: int) -> list[str]:
    return [predict(client, app, rows(1)).json()["arm"] for _ in range(n)]


@pytest.mark.parametrize("command", ["promote", "rollback", "weights"])
def test_admin_commands_need_the_token(lab, client, command):
    url = f"{lab.url}-/admin/{command}"
    body = {"weights": {INC: 1}} if command == "weights" else {}
    assert client.post(url, json=body).status_code == 401
    wrong = client.post(url, json=body, headers={"X-Admin-Token": "guess"})
    assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "X-Admin-Token"
    assert client.get(url, headers=ADMIN).status_code == 405
    assert client.get(lab.url + "-/events").status_code == 401


def test_admin_promote_rollback_and_events(lab, client):
    last = client.get(lab.url + "-/events", headers=ADMIN).json()["last"]
    r = client.post(lab.url + "-/admin/promote", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["state"]["weights"] == {INC: 0.0, CAND: 1.0}
    assert set(default_arms(client, lab, 4)) == {CAND}
    r = client.post(lab.url + "-/admin/rollback", json={"reason": "clicks dropped"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert set(default_arms(client, lab, 4)) == {INC}
    events = fetch_events(lab, since=last)
    assert [(e["verdict"], e["reason"], e["source"]) for e in events] == [
        ("promote", "operator promote", "admin"), ("rollback", "clicks dropped", "admin")]
    assert events[0]["arms"] == {INC: "v-champion", CAND: "v-challenger", "boom": "v-boom", "slow": "v-slow"}
    assert [e["index"] for e in events] == [last + 1, last + 2] and events[0]["time"] <= events[1]["time"]
    assert fetch_events(lab, since=last + 2) == []
    assert state(client, lab)["events"]["last"]["verdict"] == "rollback"

    bad = client.post(lab.url + "-/admin/rollback", json={"reason": 3}, headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "reason"
    bad = client.post(lab.url + "-/admin/promote", content=b"{", headers={**ADMIN, "Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "body"
    bad = client.post(lab.url + "-/admin/promote", content=b"{}", headers=ADMIN)  # a body must say it is JSON
    assert bad.status_code == 415 and bad.json()["error"]["field"] == "Content-Type"
    bad = client.get(lab.url + "-/events?since=abc", headers=ADMIN)
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "since"


BAD_WEIGHTS = [
    ("unknown-arm", {"weights": {"nope": 1}}, "weights.nope", "unknown arm"),
    ("negative", {"weights": {INC: -1}}, f"weights.{INC}", ">= 0"),
    ("not-a-number", {"weights": {INC: "half"}}, f"weights.{INC}", ">= 0"),
    ("not-an-object", {"weights": [1, 0]}, "weights", "arm: weight"),
    ("all-zero", {"weights": {INC: 0}}, "weights", "> 0"),
    ("typo", {"wieghts": {INC: 1}}, "wieghts", "unknown field"),
    ("refused-by-strategy", {"weights": {"boom": 1}}, "weights", "take traffic weights"),
]


@pytest.mark.parametrize("body,field,reason", [b[1:] for b in BAD_WEIGHTS], ids=[b[0] for b in BAD_WEIGHTS])
def test_admin_weights_validation(lab, client, body, field, reason):
    r = client.post(lab.url + "-/admin/weights", json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field and reason in r.json()["error"]["reason"]


def test_admin_weights_reroute(lab, client):
    r = client.post(lab.url + "-/admin/weights", json={"weights": {INC: 1, CAND: 1}}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["weights"] == {INC: 1.0, CAND: 1.0}
    arms = default_arms(client, lab, 10)
    assert arms.count(INC) == 5 and arms.count(CAND) == 5
    assert state(client, lab)["decision"]["weights"] == {INC: 1.0, CAND: 1.0}
    client.post(lab.url + "-/admin/weights", json={"weights": {INC: 1, CAND: 0}}, headers=ADMIN)
    assert set(default_arms(client, lab, 3)) == {INC}


def test_no_request_dropped_while_switching(lab, client):
    statuses: list[int] = []
    arms: set[str] = set()
    stop = threading.Event()

    def fire():
        with httpx.Client(timeout=30.0, trust_env=False) as c:
            body = json.dumps({"instances": [instance([1, 2, 3, 4])]}).encode()
            i = 0
            while not stop.is_set():
                url = lab.predict_url if i % 3 else lab.rank_url  # rankings switch arms too
                r = c.post(url, content=body, headers={"Content-Type": "application/json"})
                statuses.append(r.status_code)
                if r.status_code == 200:
                    arms.add(r.json()["arm"])
                i += 1

    sender = threading.Thread(target=fire)
    sender.start()
    try:
        commands = [("promote", {}), ("weights", {"weights": {INC: 0.5, CAND: 0.5}}), ("rollback", {}),
                    ("weights", {"weights": {INC: 0.2, CAND: 0.8}})]
        for _ in range(4):
            for command, body in commands:
                r = client.post(f"{lab.url}-/admin/{command}", json=body, headers=ADMIN)
                assert r.status_code == 200, r.text
                time.sleep(0.03)
        client.post(lab.url + "-/admin/rollback", headers=ADMIN)
        time.sleep(0.1)
    finally:
        stop.set()
        sender.join(timeout=30)
    assert len(statuses) >= 30, len(statuses)
    assert set(statuses) == {200}, [s for s in statuses if s != 200][:5]
    assert arms == {INC, CAND}
    assert set(default_arms(client, lab, 2)) == {INC}


def test_primary_faults(lab, client):
    r = predict(client, lab, rows(1), key="arm:boom")
    assert r.status_code == 503
    assert r.json()["error"] == {"field": "arm", "reason": "injected fault in arm 'boom'"}
    t0 = time.perf_counter()
    assert predict(client, lab, rows(1), key="arm:slow").status_code == 200
    assert time.perf_counter() - t0 >= 0.2
    assert client.post(lab.rank_url, json={"instances": [GOOD], "key": "arm:boom"}).status_code == 503


# ---------------------------------------------------------------------------------------------
# A strategy's own verdict, acted on; admin endpoints without a token
# ---------------------------------------------------------------------------------------------
def test_strategy_rollback_is_acted_on(canary, client):
    statuses = []
    for _ in range(8):
        r = predict(client, canary, rows(1))
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert r.json()["error"] == {"field": "arm", "reason": "injected fault in arm 'candidate'"}
    assert statuses == [200, 503, 200, 503, 200, 503, 200, 200]  # rolled back after the 3rd error
    events = fetch_events(canary)
    assert len(events) == 1
    event = events[0]
    assert (event["verdict"], event["source"], event["reason"]) == ("rollback", "strategy", "candidate failed 3 requests")
    assert event["arms"] == {"champion": "v-champ", "candidate": "v-cand"} and event["weights"] == {"champion": 1.0}
    answers = [predict(client, canary, rows(1)) for _ in range(10)]
    assert {(r.status_code, r.json()["arm"]) for r in answers} == {(200, "champion")}
    snap = state(client, canary)
    assert snap["decision"]["verdict"] == "hold" and snap["state"] == {"errors": 3, "rolled_back": True}
    assert len(fetch_events(canary)) == 1  # HOLD after the rollback: no more events


@pytest.mark.parametrize("command", ["promote", "rollback", "weights"])
def test_deployed_without_a_token_every_admin_endpoint_needs_the_one_deploy_made_up(canary, client, command):
    r = client.post(f"{canary.url}-/admin/{command}", json={}, headers={"X-Admin-Token": "anything-anything-anything"})
    assert r.status_code == 401
    assert r.json()["error"] == {"field": "X-Admin-Token", "reason": "missing or wrong admin token"}
    assert canary.admin_token and len(canary.admin_token) >= 32
    for read_only in ("-/events", "-/strategy", "-/records"):
        assert client.get(canary.url + read_only).status_code == 401
        assert client.get(canary.url + read_only, headers=canary.admin_headers()).status_code == 200


# ---------------------------------------------------------------------------------------------
# Deploy-time validation (fails before anything is scheduled)
# ---------------------------------------------------------------------------------------------
BAD_FAULTS = [
    ("unknown-arm", {"ghost": {"error_rate": 0.1}}, "serve.faults.ghost"),
    ("rate-above-one", {INC: {"error_rate": 1.5}}, f"serve.faults.{INC}.error_rate"),
    ("rate-negative", {INC: {"error_rate": -0.1}}, f"serve.faults.{INC}.error_rate"),
    ("latency-negative", {INC: {"extra_latency_ms": -5}}, f"serve.faults.{INC}.extra_latency_ms"),
    ("unknown-key", {INC: {"errors": 0.1}}, f"serve.faults.{INC}.errors"),
    ("not-a-mapping", {INC: 0.5}, f"serve.faults.{INC}"),
]


@pytest.mark.parametrize("faults,where", [b[1:] for b in BAD_FAULTS], ids=[b[0] for b in BAD_FAULTS])
def test_bad_faults_are_serving_errors(onnx_models, faults, where):
    with pytest.raises(ServingError) as info:
        deploy([served_model(onnx_models[INC], arm=INC)], LabStrategy, LabConfig(), faults=faults, app_name="never")
    assert where in str(info.value)


def test_unknown_rank_class_is_a_serving_error(onnx_models):
    with pytest.raises(ServingError) as info:
        deploy([served_model(onnx_models[INC], arm=INC)], LabStrategy, LabConfig(), rank_class="daisy", app_name="never")
    assert "serve.rank_class" in str(info.value) and "daisy" in str(info.value)
