"""Property-based fuzz of every HTTP endpoint and of the recipe loader.

HTTP: hypothesis draws a method, an endpoint, headers (content types, tokens, request ids) and a
body (JSON of any shape and depth, or raw bytes); every answer must be < 500 and, when it is an
error, the framework's JSON error body. The recipe loader: random overrides of real keys with
hostile values, and random recipe files; the outcome is a plan or a RecipeError that names a key
path (or the file), never another exception. The Open Inference Protocol's routes and /lookup
get tensor-shaped bodies of their own.
"""
from __future__ import annotations

import json
import textwrap

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import scale
from serving_helpers import FEATURES, body

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

ENDPOINTS = ["predict", "rank", "feedback", "healthz", "schema", "metrics", "-/records", "-/strategy", "-/events?since=0",
             "-/admin/promote", "-/admin/rollback", "-/admin/weights", "-/admin/record-log/restart", "nope", "-/nope"]
GET_ENDPOINTS = {"healthz", "schema", "metrics", "-/records", "-/strategy", "-/events", "nope", "-/nope"}
KEYS = ["instances", "instance", "key", "explain", "item_ids", "request_id", "label", "reward", "clicks", "feedback",
        "weights", "reason", *FEATURES]
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**500), max_value=10**500),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.sampled_from(["primary", "a", "x" * 200, "\u0000", "NaN"]))
JSON = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                      st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=8), inner, max_size=6)),
                    max_leaves=30)


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


RAW = st.one_of(
    JSON.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.binary(max_size=200),
    st.sampled_from([b"", b"{", b"null", deep(5000), b'{"instances": ' + deep(3000) + b"}", b'{"reward": 1' + b"0" * 500 + b"}",
                     json.dumps(body(1)).encode(), json.dumps({"instances": [body(1)["instance"]] * 3}).encode()]),
)
CONTENT_TYPES = st.sampled_from([None, "application/json", "application/json; charset=utf-8", "text/plain",
                                 "application/x-www-form-urlencoded", "multipart/form-data", "APPLICATION/JSON", "", "x" * 300])


def test_fuzz_every_http_endpoint(shared_app, figures):
    app = shared_app
    seen = {"inputs": 0, "5xx": 0, "statuses": {}}
    served_ids: list[str] = []
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        for i in range(3):  # real request ids for feedback bodies to name
            r = client.post(app.predict_url, json=body(i), headers=app.client_headers())
            served_ids.append(r.json()["request_id"])

        @settings(max_examples=scale(150, 2000), deadline=None, derandomize=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(odd_method=st.sampled_from([None] * 8 + ["PUT", "DELETE", "OPTIONS", "GET", "POST"]),
               endpoint=st.sampled_from(ENDPOINTS),
               raw=RAW, content_type=CONTENT_TYPES, admin=st.booleans(), client_token=st.booleans(),
               request_id=st.one_of(st.none(), st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=200)),
               feedback_id=st.sampled_from([0, 1, 2, None]))
        def probe(odd_method, endpoint, raw, content_type, admin, client_token, request_id, feedback_id):
            # mostly the endpoint's own method, so that most inputs reach its parser
            method = odd_method or ("GET" if endpoint.split("?")[0] in GET_ENDPOINTS else "POST")
            if endpoint == "feedback" and feedback_id is not None and raw.startswith(b"{"):
                raw = json.dumps({"request_id": served_ids[feedback_id], "label": raw.decode("utf-8", "replace")[:50]}).encode()
            headers = {}
            if content_type is not None:
                headers["Content-Type"] = content_type
            if admin:
                headers.update(app.admin_headers())
            if client_token:
                headers.update(app.client_headers())
            if request_id is not None:
                headers["X-Request-Id"] = request_id
            r = client.request(method, app.url + endpoint, content=raw if method != "GET" else None, headers=headers)
            seen["inputs"] += 1
            seen["statuses"][r.status_code] = seen["statuses"].get(r.status_code, 0) + 1
            if r.status_code >= 500:
                seen["5xx"] += 1
            assert r.status_code < 500, (method, endpoint, raw[:200], headers, r.status_code, r.text[:300])
            if r.status_code >= 400 and r.status_code != 404 or endpoint in ("nope", "-/nope"):
                data = r.json()
                assert set(data["error"]) == {"field", "reason"}, data
                assert isinstance(data["request_id"], str)

        try:
            probe()
        finally:
            figures.update(http_inputs=seen["inputs"], http_5xx=seen["5xx"],
                           statuses={str(k): v for k, v in sorted(seen["statuses"].items())})


DATATYPES = ["BOOL", "INT8", "INT32", "INT64", "UINT8", "UINT64", "FP16", "FP32", "FP64", "BYTES", "FP128", "", None, 3]
TENSOR = st.fixed_dictionaries(
    {"name": st.sampled_from([*FEATURES, "input", "x", "", None, 1]),
     "shape": st.one_of(st.lists(st.integers(min_value=-2, max_value=5), max_size=3), JSON),
     "datatype": st.sampled_from(DATATYPES),
     "data": st.one_of(st.lists(SCALARS, max_size=6), st.lists(st.lists(SCALARS, max_size=3), max_size=3), JSON)},
    optional={"parameters": st.one_of(JSON, st.just({"binary_data_size": 4}))})
V2_BODY = st.one_of(
    st.fixed_dictionaries({"inputs": st.one_of(st.lists(TENSOR, max_size=6), JSON)},
                          optional={"id": JSON, "parameters": JSON, "outputs": JSON}),
    RAW.map(lambda raw: raw))


def test_fuzz_the_open_inference_protocol_and_lookup(shared_app, figures):
    """v2 routes answer < 500 with the protocol's {"error": "..."}; /lookup and -/admin/lookup
    with the framework's error body."""
    app = shared_app
    name = app.app_name
    endpoints = [f"v2/models/{name}/infer", f"v2/models/{name}/versions/x/infer", f"v2/models/{name}", "v2",
                 "v2/health/ready", f"v2/models/{name}/ready", "v2/models/nope/infer", "lookup", "-/admin/lookup"]
    seen = {"inputs": 0, "5xx": 0}
    with httpx.Client(timeout=30.0, trust_env=False) as client:
        @settings(max_examples=scale(150, 2000), deadline=None, derandomize=False,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(endpoint=st.sampled_from(endpoints), payload=V2_BODY, method=st.sampled_from(["POST"] * 6 + ["GET", "PUT"]),
               content_type=st.sampled_from(["application/json"] * 4 + [None, "text/plain"]), token=st.booleans())
        def probe(endpoint, payload, method, content_type, token):
            raw = payload if isinstance(payload, bytes) else json.dumps(payload, allow_nan=True).encode()
            headers = {**(app.client_headers() if token else {}), **(app.admin_headers() if token else {})}
            if content_type is not None:
                headers["Content-Type"] = content_type
            r = client.request(method, app.url + endpoint, content=raw if method != "GET" else None, headers=headers)
            seen["inputs"] += 1
            seen["5xx"] += r.status_code >= 500
            assert r.status_code < 500, (method, endpoint, raw[:200], r.status_code, r.text[:300])
            if r.status_code >= 400:
                error = r.json()["error"]
                if endpoint.startswith("v2"):
                    assert isinstance(error, str) and error, r.text
                else:
                    assert set(error) == {"field", "reason"}, r.text

        try:
            probe()
        finally:
            figures.update(v2_lookup_inputs=seen["inputs"], v2_lookup_5xx=seen["5xx"])


# ---------------------------------------------------------------------------------------------
# The recipe loader
# ---------------------------------------------------------------------------------------------
OVERRIDE_KEYS = ["name", "seed", "split.val", "serve.port", "serve.placement", "serve.replicas", "serve.models.extra",
                 "serve.record_log_fsync", "serve.admin_token_file", "train.max_epochs", "train.model", "strategy.type",
                 "register.card.slices.s", "register.model_name", "gates.thresholds.accuracy.min", "traffic.endpoint",
                 "data.dataset", "checks", "compress", "monitor", "online_eval.rows", "target", "device.max_size_mb",
                 "ray.num_cpus", "store.uri", "typo_key", "serve.typo", "train.typo"]
HOSTILE_VALUES = st.one_of(
    st.sampled_from(["", "null", "-1", "0", "1e999", "abc", "[1,2]", "{a: 1}", "${oc.env:HOME}", "${nope}", "'@os.system(\"id\")'",
                     "__import__('os')", "[[[[]]]]", "true", "99999999999999999999999", "'`a` > 1'", "\"x\" * 10"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30),
)


def _plan(overrides):
    from framework.errors import RecipeError
    from framework.run import plan_recipe

    try:
        plan_recipe(overrides)
    except RecipeError as exc:
        message = str(exc)
        assert message and ":" in message, message
        return "refused"
    return "planned"


def test_fuzz_the_recipe_loader_overrides(figures, monkeypatch):
    monkeypatch.delenv("FRAMEWORK_ADMIN_TOKEN", raising=False)
    outcomes = {"planned": 0, "refused": 0}

    @settings(max_examples=scale(40, 500), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(st.sampled_from(OVERRIDE_KEYS), HOSTILE_VALUES), min_size=1, max_size=3))
    def probe(pairs):
        overrides = ["+recipe=quickstart"] + [f"{k}={v}" for k, v in pairs]
        outcomes[_plan(overrides)] += 1

    try:
        probe()
    finally:
        figures.update(recipe_override_inputs=sum(outcomes.values()), **outcomes)


YAML_PIECES = ["name: x", "seed: abc", "serve:\n  port: -1", "serve:\n  admin_token: hunter2hunter2hunter2",
               "register:\n  card:\n    slices:\n      s: \"@os.system('id')\"", "train:\n  epochz: 3", "data: 5",
               "checks: {a: 1}", "strategy:\n  type: nope", "  bad indent: [", "defaults:\n  - override /data: nope",
               "split:\n  val: 2", "serve:\n  models:\n    a: not-a-ref", "gates:\n  thresholds:\n    accuracy: {min: x}",
               "monitor: [{type: nope}]", "compress: [{type: int8_static}, {type: distill}]", "- a list", "key: ${nope}",
               "serve:\n  record_log_fsync: sometimes", "register:\n  model_name: 'a b'"]


def test_fuzz_the_recipe_loader_files(tmp_path, figures, monkeypatch):
    monkeypatch.delenv("FRAMEWORK_ADMIN_TOKEN", raising=False)
    outcomes = {"planned": 0, "refused": 0}
    folder = tmp_path / "recipes"
    folder.mkdir()

    @settings(max_examples=scale(30, 400), deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.sampled_from(YAML_PIECES) | st.text(max_size=40), min_size=1, max_size=4))
    def probe(pieces):
        text = "# @package _global_\ndefaults:\n  - override /data: breast_cancer\n  - override /train: mlp\n"
        text += "\n".join(textwrap.dedent(p) for p in pieces) + "\n"
        (folder / "fuzzed.yaml").write_text(text)
        outcomes[_plan(["+recipe=fuzzed", f"recipes_dir={folder}"])] += 1

    try:
        probe()
    finally:
        figures.update(recipe_file_inputs=sum(outcomes.values()), **outcomes)
