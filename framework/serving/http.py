"""The ingress deployment: the HTTP layer in front of the strategy host, the arms and the ledger.

It answers plain Starlette requests (measured faster than a FastAPI ingress: no routing or
pydantic layer): the routing table, body limits, request ids, errors as JSON 4xx / 5xx, and the
tokens. The work is done by the parts it composes: ``StrategyHost`` (which arm answers,
verdicts, events), ``ArmPool`` (running the models), ``FeedbackLedger`` (what was served, the
feedback on it), ``RecordBuffer`` (served rows for monitors) and ``RecordLog`` (the durable copy
of every answer and feedback item, from which a restarted replica rebuilds the other two).

Security: request ids are made here (a client's ``X-Request-Id`` is only kept as its
``correlation_id``), so feedback can only name answers this service gave; JSON endpoints take
``application/json`` only (a web page cannot post a form or text/plain to them without a CORS
preflight, which is never granted); every ``-/`` endpoint needs the admin token; predict, rank
and feedback need the client token when one is configured.

With ``placement="ingress"`` the ONNX sessions live in this replica, so a request costs one
proxy->replica hop; with ``placement="deployment"`` each arm is its own deployment reached through
a DeploymentHandle (one more hop, independent scaling).
"""
from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from typing import Any, Mapping
from urllib.parse import parse_qs

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..compat.ray_serve_grpc import bind_replica_grpc_to_loopback
from ..components import Decision, InputSchema, Outcome, Verdict
from ..errors import RequestError
from ..tokens import token_problem
from .arms import ArmFailure, ArmPool
from .decisions import SharedStrategyHost
from .host import StrategyHost
from .jsonio import dumps
from .ledger import FEEDBACK_MEMORY, FeedbackLedger
from .lookup import LookupApi
from .metrics import CONTENT_TYPE, MetricsOff, ServingMetrics, replica_name
from .oip import OipApi
from .openapi import serve_openapi
from .recordlog import RESTORE_BYTES, RecordLog, read_records
from .records import RecordBuffer
from .requests import MAX_BODY_BYTES, finite_number, load_json, parse_feedback_body
from .typed_requests import make_parser
from .types import ServedModel

log = logging.getLogger("ray.serve")

JSON_TYPE = "application/json"
#: a client's X-Request-Id longer than this is refused (it is echoed in answers and records)
MAX_CORRELATION_CHARS = 128
MAX_REASON_CHARS = 1000
#: endpoints a client token guards
CLIENT_PATHS = frozenset({"/predict", "/rank", "/feedback", "/lookup"})


@serve.deployment
class Ingress:
    """One ingress replica: every request of the app's HTTP API (see the module docstring)."""

    def __init__(
        self,
        models: list[ServedModel],
        strategy_cls: type,
        strategy_config: Any,
        record_buffer: int = 10000,
        admin_token: str | None = None,
        arm_handles: Mapping[str, Any] | None = None,
        *,
        faults: Mapping[str, Mapping[str, Any]] | None = None,
        rank_class: Any = None,
        feedback_memory: int = FEEDBACK_MEMORY,
        batching: Mapping[str, Any] | None = None,
        label_mapping: Mapping[str, str] | None = None,
        client_token: str | None = None,
        record_log: Mapping[str, Any] | None = None,
        metrics: bool = True,
        decision_state: Mapping[str, str] | None = None,
    ):
        bind_replica_grpc_to_loopback()  # before Serve starts this replica's gRPC server
        self.versions = {m.arm: m.version for m in models}
        self.schema: InputSchema = models[0].schema
        self.parser = make_parser(models[0])  # raw typed rows, or one float matrix
        for name, token in (("admin_token", admin_token), ("client_token", client_token)):
            if token is not None and token_problem(token):  # deploy() refuses these first
                raise ValueError(f"{name}: {token_problem(token)}")
        # None: every -/ endpoint answers 403 (deploy() always passes one)
        self.admin_token = admin_token.encode() if admin_token else None
        self.client_token = f"Bearer {client_token}".encode() if client_token else None
        strategy = strategy_cls(strategy_config, arms=dict(self.versions))
        if decision_state is None:
            self.host = StrategyHost(strategy, self.versions)
        else:  # several ingress replicas: one strategy decides for all (serving/decisions.py)
            import ray

            self.host = SharedStrategyHost(strategy, self.versions, ray.get_actor(**decision_state))
        self.arms = ArmPool(
            models, self.host.observe, handles=arm_handles, faults=faults, rank_class=rank_class, batching=batching
        )
        self.labeler = self.arms.labeler
        self.ledger = FeedbackLedger(self.versions, memory=feedback_memory, label_mapping=label_mapping)
        self.records = RecordBuffer(self.schema.names, record_buffer)
        self.record_log: RecordLog | None = None
        self.restored = 0
        if record_log:
            self.restored = self._restore(record_log["directory"])
            self.record_log = RecordLog(record_log["directory"], record_log.get("fsync", "batch")).start()
        self._health = json.dumps({"status": "ok", "models": self.versions}).encode()
        self.oip = OipApi(self, models[0])  # the Open Inference Protocol's /v2 routes (oip.py)
        self.lookup = LookupApi(self)  # precomputed answers by key (lookup.py)
        self._post = {
            "/predict": self._predict,
            "/rank": self._rank,
            "/feedback": self._feedback,
            "/lookup": self.lookup.lookup,
            "/-/admin/lookup": self.lookup.admin_load,
            "/-/admin/promote": self._admin_promote,
            "/-/admin/rollback": self._admin_rollback,
            "/-/admin/weights": self._admin_weights,
            "/-/admin/record-log/restart": self._admin_restart_record_log,
        }
        self._get = {
            "/healthz": self._healthz,
            "/schema": self._schema,
            "/openapi.json": serve_openapi,
            "/-/records": self._records,
            "/-/strategy": self._strategy,
            "/-/events": self._events,
        }
        # Prometheus text on GET /metrics (no token, as /healthz: counts and timings, no rows)
        self.metrics = MetricsOff()
        if metrics:
            self.metrics = ServingMetrics(self.versions, replica_name(), (*self._post, *self._get, "/metrics"))
            self._get["/metrics"] = self._metrics

    def _restore(self, directory: str) -> int:
        """A restarted replica: the ledger and the record buffer refilled from the record log."""
        try:
            answers, feedback = read_records(directory, RESTORE_BYTES)
        except OSError:
            log.exception("record log %s cannot be read; starting with an empty memory", directory)
            return 0
        answers = [a for a in answers if a.get("arm") in self.versions]
        restored = self.ledger.restore(answers[-self.ledger.memory:], feedback)
        kept: list[dict] = []
        rows = 0
        for answer in reversed(answers):  # the newest rows, up to the buffer's capacity
            if rows >= self.records.capacity:
                break
            kept.append(answer)
            rows += len(answer.get("rows") or ())
        for a in reversed(kept):
            self.records.append(a.get("rows") or (), a.get("predictions") or (), a.get("model_version"), a.get("arm"),
                                a.get("latency_ms"), a["request_id"], a.get("correlation_id"), a.get("time"))
        if answers or feedback:
            log.warning("restored %d answers and %d feedback items from the record log", len(answers), len(feedback))
        return restored

    def __del__(self):  # Serve calls it when the replica stops: write what is still queued
        record_log = getattr(self, "record_log", None)
        if record_log is not None:
            record_log.stop()

    # -- HTTP entry point ----------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        start = time.perf_counter()
        # Our own id, never the client's: feedback can only name answers this service gave. The
        # X-Request-Id the Serve proxy forwards (the client's, or one the proxy made up) is kept
        # as the correlation id.
        request_id = uuid.uuid4().hex
        correlation_id = request.headers.get("x-request-id")
        scope = request.scope
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        path = "/" + path.strip("/")
        method = request.method
        try:
            if correlation_id is not None and (len(correlation_id) > MAX_CORRELATION_CHARS or not correlation_id.isprintable()):
                correlation_id = None
                raise RequestError("X-Request-Id", f"at most {MAX_CORRELATION_CHARS} printable characters")
            if path == "/v2" or path.startswith("/v2/"):  # its own routes and error format
                return await self.oip.handle(request, path, request_id, correlation_id, start)
            handler = self._post.get(path) if method == "POST" else self._get.get(path) if method == "GET" else None
            if handler is None:
                if path in self._post or path in self._get:
                    want = "POST" if path in self._post else "GET"
                    return _error(405, "method", f"use {want} for {path.lstrip('/')}, not {method}", request_id, correlation_id)
                return _error(
                    404, "path", f"no endpoint {path}; try POST predict, POST rank, POST feedback, GET healthz or GET schema (every endpoint: GET openapi.json)",
                    request_id, correlation_id,
                )
            if path.startswith("/-/"):
                self._require_admin(request)
            elif self.client_token is not None and path in CLIENT_PATHS:
                given = request.headers.get("authorization", "").encode()
                if not hmac.compare_digest(given, self.client_token):
                    raise RequestError("Authorization", "missing or wrong client token (Authorization: Bearer TOKEN)", 401)
            if method == "POST":
                _check_content_type(request)
            request.scope["framework.correlation_id"] = correlation_id
            return await handler(request, request_id, start)
        except RequestError as exc:
            self.metrics.error(path, exc.status)
            return _error(exc.status, exc.field, exc.reason, request_id, correlation_id)
        except ArmFailure as exc:  # the server's failure, not the client's: 503, the client may retry
            self.metrics.error(path, 503, exc.arm)
            return _error(503, "arm", exc.reason, request_id, correlation_id)
        except Exception as exc:  # our fault, not the client's: logged, answered as a 500
            log.exception("request %s to %s failed", request_id, path)
            self.metrics.error(path, 500)
            return _error(500, None, f"internal error: {type(exc).__name__}", request_id, correlation_id)

    @staticmethod
    async def read_body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise RequestError("body", f"request body of {length} bytes exceeds {MAX_BODY_BYTES}", 413)
        body = await request.body()
        if body and "content-type" not in request.headers:
            raise RequestError("Content-Type", f"send the body as {JSON_TYPE}", 415)
        return body

    # -- predict -------------------------------------------------------------------------------
    async def _predict(self, request: Request, request_id: str, start: float) -> Response:
        parsed = self.parser.parse_body(await self.read_body(request))
        route_request, route = self.host.route(request_id, _user_key(request, parsed.key))
        arm = route.primary
        version = self.versions[arm]
        correlation_id = request.scope.get("framework.correlation_id")
        if parsed.explain:  # refused before any model runs: nothing recorded, nothing observed
            self.arms.check_explainable(self.arms.merge_arms(route) if route.merge else [arm], parsed.shape)
        explained = arm
        if route.merge:
            answered, failure = await self.arms.run_all(self.arms.merge_arms(route), parsed.x, request_id)
            answers = {a: self.arms.answer(a, p) for a, p in answered.items()}
            merged = self.host.merge(route_request, answers)
            if merged is None and arm not in answered:
                raise failure  # nothing merged and the primary failed: nothing to answer with
            base = explained = arm if arm in answered else next(iter(answered))
            labels = answers[base]["predictions"]
            body = {"request_id": request_id, "model_version": version, "arm": arm, **answers[base]}
            if isinstance(merged, Mapping):
                body.update({k: v for k, v in merged.items()
                             if k not in ("request_id", "model_version", "arm", "correlation_id")})
            elif isinstance(merged, (list, tuple)):
                # the primary's probabilities would no longer match the merged predictions
                body["predictions"] = list(merged)
                body.pop("probabilities", None)
            served = body["predictions"]
            if not (isinstance(served, list) and len(served) == len(parsed.rows)):
                served = labels
            latency_ms = (time.perf_counter() - start) * 1000.0
        else:
            probabilities = await self.arms.run_primary(arm, parsed.x, request_id, start)
            labels = served = self.labeler[arm](probabilities)
            latency_ms = (time.perf_counter() - start) * 1000.0
            body = {"request_id": request_id, "model_version": version, "arm": arm, "predictions": labels}
            if arm not in self.arms.regression:  # a regression answers numbers only
                body["probabilities"] = probabilities.tolist()
            self.host.observe(Outcome(request_id, arm, latency_ms, prediction=labels))
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        if parsed.explain:
            body["explanations"] = await self.arms.explain(explained, parsed.x)
        payload = dumps(body)
        self.record_answer(parsed.rows, served, version, arm, latency_ms, request_id, correlation_id,
                     served[0] if len(served) == 1 else served, "predict", body.get("probabilities"))
        if route.shadows and not route.merge:
            self.arms.spawn_shadows(route.shadows, arm, parsed.x, request_id, None)
        # Serve adds X-Request-Id to every response: the correlation id (the client's, or one Serve
        # made up), not our request id; setting it here too would send the header twice.
        return Response(payload, media_type=JSON_TYPE, headers={"X-Model-Version": version})

    # -- rank ----------------------------------------------------------------------------------
    async def _rank(self, request: Request, request_id: str, start: float) -> Response:
        parsed, item_ids = self.parser.parse_rank_body(await self.read_body(request))
        route_request, route = self.host.route(request_id, _user_key(request, parsed.key))
        correlation_id = request.scope.get("framework.correlation_id")
        arm = route.primary
        version = self.versions[arm]
        teams = None
        if route.merge:
            answered, failure = await self.arms.run_all(self.arms.merge_arms(route), parsed.x, request_id, item_ids)
            rankings = {a: self.arms.ranking(a, p, item_ids) for a, p in answered.items()}
            merged = self.host.merge(route_request, rankings)
            if merged is None and arm not in answered:
                raise failure
            base = arm if arm in answered else next(iter(answered))
            probabilities = answered[base]
            ranking = rankings[base]
            if merged is not None:
                ranking, teams = _ranking_and_teams(merged, ranking)
        else:
            probabilities = await self.arms.run_primary(arm, parsed.x, request_id, start)
            ranking = self.arms.ranking(arm, probabilities, item_ids)
            self.host.observe(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, prediction=ranking))
        latency_ms = (time.perf_counter() - start) * 1000.0
        body = {"request_id": request_id, "model_version": version, "arm": arm, "ranking": ranking}
        if teams is not None:
            body["teams"] = teams
        if correlation_id is not None:
            body["correlation_id"] = correlation_id
        payload = dumps(body)
        # Ranked instances are served traffic too: monitors see them, with the primary's class.
        self.record_answer(parsed.rows, self.labeler[arm](probabilities), version, arm, latency_ms, request_id,
                     correlation_id, ranking, "rank")
        if route.shadows and not route.merge:
            self.arms.spawn_shadows(route.shadows, arm, parsed.x, request_id, item_ids)
        return Response(payload, media_type=JSON_TYPE, headers={"X-Model-Version": version})

    def record_answer(self, rows: list, labels: list, version: str, arm: str, latency_ms: float, request_id: str,
                correlation_id: str | None, prediction: Any, kind: str, probabilities: Any = None) -> None:
        """An answer was given: the record buffer, the ledger and the record log (queued, no I/O)."""
        now = time.time()
        self.metrics.served(kind, arm, latency_ms, len(rows))
        self.records.append(rows, labels, version, arm, latency_ms, request_id, correlation_id, now)
        self.ledger.remember(request_id, arm, prediction, kind)
        if self.record_log is not None:
            self.record_log.append({"type": "answer", "request_id": request_id, "correlation_id": correlation_id,
                                    "time": now, "kind": kind, "arm": arm, "model_version": version,
                                    "latency_ms": latency_ms, "rows": rows, "predictions": labels,
                                    "prediction": prediction, "probabilities": probabilities})

    # -- feedback ------------------------------------------------------------------------------
    async def _feedback(self, request: Request, request_id: str, start: float) -> Response:
        items, batch = parse_feedback_body(await self.read_body(request))
        accepted = self.ledger.accept(items, batch)
        now = time.time()
        for feedback, answer_kind in zip(accepted.feedback, accepted.answer_kinds):
            if self.record_log is not None:
                kinds = [k for k, v in (("label", feedback.label), ("reward", feedback.reward),
                                        ("clicks", feedback.clicks)) if v is not None and v != ()]
                self.record_log.append({"type": "feedback", "request_id": feedback.request_id, "time": now,
                                        "arm": feedback.arm, "kinds": kinds, "label": feedback.label,
                                        "reward": feedback.reward, "clicks": list(feedback.clicks),
                                        "prediction": feedback.prediction, "answer_kind": answer_kind})
            self.host.feedback(feedback)
        return _json(accepted.body)

    # -- admin ---------------------------------------------------------------------------------
    def _require_admin(self, request: Request) -> None:
        """Every ``-/`` endpoint (commands and reads) needs the token; without one they are off."""
        if self.admin_token is None:
            raise RequestError("X-Admin-Token", "admin endpoints are disabled: deploy with an admin token", 403)
        given = request.headers.get("x-admin-token", "").encode()
        if not hmac.compare_digest(given, self.admin_token):
            raise RequestError("X-Admin-Token", "missing or wrong admin token", 401)

    async def _admin_promote(self, request: Request, request_id: str, start: float) -> Response:
        return await self._admin_verdict(request, Verdict.PROMOTE)

    async def _admin_rollback(self, request: Request, request_id: str, start: float) -> Response:
        return await self._admin_verdict(request, Verdict.ROLLBACK)

    async def _admin_verdict(self, request: Request, verdict: Verdict) -> Response:
        data = await self.read_admin_body(request, ("reason",))
        reason = data.get("reason", f"operator {verdict.value}")
        if not isinstance(reason, str):
            raise RequestError("reason", f"expected a string, got {type(reason).__name__}")
        if len(reason) > MAX_REASON_CHARS:
            raise RequestError("reason", f"{len(reason)} characters exceed {MAX_REASON_CHARS}", 413)
        try:
            event = await self.host.apply_async(Decision(verdict, reason), "admin")
        except (ValueError, NotImplementedError) as exc:  # the strategy refuses in its current state
            raise RequestError("strategy", _refusal(exc), 409) from None
        return _json({"event": event, "state": await self.host.state_async()})

    async def _admin_weights(self, request: Request, request_id: str, start: float) -> Response:
        data = await self.read_admin_body(request, ("weights",))
        weights = data.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise RequestError("weights", 'expected an object of arm: weight, e.g. {"weights": {"champion": 0.9}}')
        clean: dict[str, float] = {}
        for arm, w in weights.items():
            if arm not in self.versions:
                raise RequestError(f"weights.{_cut(arm)}", f"unknown arm; arms: {', '.join(self.versions)}")
            if not finite_number(w) or w < 0:
                raise RequestError(f"weights.{arm}", f"expected a finite number >= 0, got {_cut(repr(w))}")
            clean[arm] = float(w)
        if not any(clean.values()):
            raise RequestError("weights", "at least one weight must be > 0")
        try:
            await self.host.set_weights_async(clean)
        except NotImplementedError as exc:
            raise RequestError("weights", _refusal(exc), 409) from None
        except ValueError as exc:
            raise RequestError("weights", _refusal(exc), 422) from None
        return _json({"weights": clean, "state": await self.host.state_async()})

    async def read_admin_body(self, request: Request, allowed: tuple[str, ...]) -> dict:
        raw = await self.read_body(request)
        if not raw.strip():
            return {}
        data = load_json(raw)
        if not isinstance(data, dict):
            raise RequestError("body", "expected a JSON object")
        for k in data:
            if k not in allowed:
                raise RequestError(_cut(k), f"unknown field; expected only: {', '.join(allowed)}")
        return data

    async def _admin_restart_record_log(self, request: Request, request_id: str, start: float) -> Response:
        """Restart the record log's writer (e.g. after the disk was full); queued records wait."""
        await self.read_admin_body(request, ())
        if self.record_log is None:
            raise RequestError("record_log", "the record log is off for this deployment", 409)
        self.record_log.restart_writer()
        return _json({"record_log": self.record_log.summary()})

    # -- read-only endpoints -------------------------------------------------------------------
    async def _healthz(self, request: Request, request_id: str, start: float) -> Response:
        return Response(self._health, media_type=JSON_TYPE)

    async def _schema(self, request: Request, request_id: str, start: float) -> Response:
        first = next(iter(self.versions))
        classes = self.arms.classes
        # each feature's type, whether it may be null, and a category's known values
        return _json({
            **self.schema.to_dict(),
            "task": "regression" if first in self.arms.regression else "classification",
            **({"unknown_categories": self.arms.layout.unknown_categories} if self.arms.layout is not None else {}),
            "classes": classes[first],
            "models": self.versions,
            "arms": {arm: {"version": v, "classes": classes[arm]} for arm, v in self.versions.items()},
            "max_instances": self.parser.max_instances,
            "rank_class": None if first in self.arms.regression else classes[first][self.arms.rank_index[first]],
        })

    async def _metrics(self, request: Request, request_id: str, start: float) -> Response:
        return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

    async def _records(self, request: Request, request_id: str, start: float) -> Response:
        return _json(self.records.columns())

    async def _strategy(self, request: Request, request_id: str, start: float) -> Response:
        snapshot = await self.host.snapshot_async()
        events = snapshot.pop("events")
        body = {
            **snapshot,
            "feedback": self.ledger.summary(),
            "events": events,
            "shadows": self.arms.shadow_summary(),
            "faults": self.arms.fault_settings(),
            "record_log": None if self.record_log is None else {**self.record_log.summary(), "restored": self.restored},
        }
        if self.arms.batching is not None:
            body["batching"] = {**self.arms.batching, "arms": await self.arms.batching_stats()}
        return _json(body)

    async def _events(self, request: Request, request_id: str, start: float) -> Response:
        values = parse_qs(request.scope.get("query_string", b"").decode("latin-1")).get("since", ["0"])
        try:
            since = int(values[-1])
        except ValueError:
            raise RequestError("since", f"expected an event index (an integer >= 0), got {_cut(repr(values[-1]))}") from None
        if since < 0:
            raise RequestError("since", f"expected an event index (an integer >= 0), got {since}")
        events, last = await self.host.events_async(since)
        return _json({"events": events, "last": last})


def _refusal(exc: Exception) -> str:
    """The strategy's own words: a refusal raised in the shared decision state's actor arrives
    wrapped by Ray (an instance of the same class) with the remote traceback around it."""
    cause = getattr(exc, "cause", None)
    return str(cause if isinstance(cause, Exception) else exc)


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON_TYPE)


def _error(status: int, field: str | None, reason: str, request_id: str, correlation_id: str | None = None) -> Response:
    body = {"error": {"field": field, "reason": reason}, "request_id": request_id}
    if correlation_id is not None:
        body["correlation_id"] = correlation_id
    return Response(dumps(body), status_code=status, media_type=JSON_TYPE)


def _cut(text: Any, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_content_type(request: Request) -> None:
    """A POST with a body must say it is JSON: browsers send text/plain and forms cross-origin
    without asking (no CORS preflight), never application/json."""
    given = request.headers.get("content-type")
    if given is not None and given.split(";", 1)[0].strip().lower() != JSON_TYPE:
        raise RequestError("Content-Type", f"expected {JSON_TYPE}, got {_cut(given)}", 415)


#: a routing key longer than this is refused
MAX_KEY_CHARS = 256


def _user_key(request: Request, body_key: str | None) -> str | None:
    key = request.headers.get("x-user-id") or body_key
    if key is not None and len(key) > MAX_KEY_CHARS:
        raise RequestError("X-User-Id" if request.headers.get("x-user-id") else "key", f"longer than {MAX_KEY_CHARS} characters")
    return key


def _ranking_and_teams(merged: Any, fallback: list) -> tuple[list, Any]:
    """A strategy's merged ranking: a list, or {"ranking": [...], "teams": ...} (or such attributes)."""
    if isinstance(merged, Mapping):
        ranking, teams = merged.get("ranking"), merged.get("teams")
    elif hasattr(merged, "ranking"):
        ranking, teams = merged.ranking, getattr(merged, "teams", None)
    else:
        ranking, teams = merged, None
    if not isinstance(ranking, (list, tuple)):
        log.error("merge() returned no ranking (%r); answering the primary's own", type(merged).__name__)
        return fallback, None
    if isinstance(teams, Mapping):
        teams = {k: list(v) for k, v in teams.items()}
    elif isinstance(teams, (list, tuple)):
        teams = list(teams)
    return list(ranking), teams
