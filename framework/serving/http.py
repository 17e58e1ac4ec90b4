"""The ingress deployment: the HTTP layer in front of the strategy host, the arms and the ledger.

It answers plain Starlette requests (measured faster than a FastAPI ingress: no routing or
pydantic layer): the routing table, body limits, request ids, errors as JSON 4xx / 5xx, and the
admin token. The work is done by the parts it composes: ``StrategyHost`` (which arm answers,
verdicts, events), ``ArmPool`` (running the models), ``FeedbackLedger`` (what was served, the
feedback on it) and ``RecordBuffer`` (served rows for monitors).

With ``placement="ingress"`` the ONNX sessions live in this replica, so a request costs one
proxy->replica hop; with ``placement="deployment"`` each arm is its own deployment reached through
a DeploymentHandle (one more hop, independent scaling).
"""
from __future__ import annotations

import hmac
import json
import logging
import math
import time
import uuid
from typing import Any, Mapping
from urllib.parse import parse_qs

from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..components import Decision, InputSchema, Outcome, Verdict
from ..errors import RequestError
from .arms import ArmFailure, ArmPool
from .host import StrategyHost
from .jsonio import dumps
from .ledger import FEEDBACK_MEMORY, FeedbackLedger
from .records import RecordBuffer
from .requests import MAX_BODY_BYTES, load_json, parse_feedback_body
from .typed_requests import make_parser
from .types import ServedModel

log = logging.getLogger("ray.serve")

JSON_TYPE = "application/json"


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
    ):
        self.versions = {m.arm: m.version for m in models}
        self.schema: InputSchema = models[0].schema
        self.parser = make_parser(models[0])  # raw typed rows, or one float matrix
        self.admin_token = admin_token
        self.host = StrategyHost(strategy_cls(strategy_config, arms=dict(self.versions)), self.versions)
        self.arms = ArmPool(
            models, self.host.observe, handles=arm_handles, faults=faults, rank_class=rank_class, batching=batching
        )
        self.labeler = self.arms.labeler
        self.ledger = FeedbackLedger(self.versions, memory=feedback_memory, label_mapping=label_mapping)
        self.records = RecordBuffer(self.schema.names, record_buffer)
        self._health = json.dumps({"status": "ok", "models": self.versions}).encode()
        self._post = {
            "/predict": self._predict,
            "/rank": self._rank,
            "/feedback": self._feedback,
            "/-/admin/promote": self._admin_promote,
            "/-/admin/rollback": self._admin_rollback,
            "/-/admin/weights": self._admin_weights,
        }
        self._get = {
            "/healthz": self._healthz,
            "/schema": self._schema,
            "/-/records": self._records,
            "/-/strategy": self._strategy,
            "/-/events": self._events,
        }

    # -- HTTP entry point ----------------------------------------------------------------------
    async def __call__(self, request: Request) -> Response:
        start = time.perf_counter()
        # The Serve proxy always forwards an X-Request-Id (the client's or one it generated);
        # the uuid is for calls that did not come through it.
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        scope = request.scope
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root):]
        path = "/" + path.strip("/")
        method = request.method
        try:
            handler = self._post.get(path) if method == "POST" else self._get.get(path) if method == "GET" else None
            if handler is None:
                if path in self._post or path in self._get:
                    want = "POST" if path in self._post else "GET"
                    return _error(405, "method", f"use {want} for {path.lstrip('/')}, not {method}", request_id)
                return _error(
                    404, "path", f"no endpoint {path}; try POST predict, POST rank, POST feedback, GET healthz or GET schema",
                    request_id,
                )
            return await handler(request, request_id, start)
        except RequestError as exc:
            return _error(exc.status, exc.field, exc.reason, request_id)
        except ArmFailure as exc:  # the server's failure, not the client's: 503, the client may retry
            return _error(503, "arm", exc.reason, request_id)
        except Exception as exc:  # our fault, not the client's: logged, answered as a 500
            log.exception("request %s to %s failed", request_id, path)
            return _error(500, None, f"internal error: {type(exc).__name__}: {exc}", request_id)

    @staticmethod
    async def _body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise RequestError("body", f"request body of {length} bytes exceeds {MAX_BODY_BYTES}", 413)
        return await request.body()

    # -- predict -------------------------------------------------------------------------------
    async def _predict(self, request: Request, request_id: str, start: float) -> Response:
        parsed = self.parser.parse_body(await self._body(request))
        route_request, route = self.host.route(request_id, request.headers.get("x-user-id") or parsed.key)
        arm = route.primary
        version = self.versions[arm]
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
                body.update({k: v for k, v in merged.items() if k not in ("request_id", "model_version", "arm")})
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
        if parsed.explain:
            body["explanations"] = await self.arms.explain(explained, parsed.x)
        payload = dumps(body)
        self.records.append(parsed.rows, served, version, arm, latency_ms, request_id)
        self.ledger.remember(request_id, arm, served[0] if len(served) == 1 else served, "predict")
        if route.shadows and not route.merge:
            self.arms.spawn_shadows(route.shadows, arm, parsed.x, request_id, None)
        # X-Request-Id itself is added to every response by the Serve proxy (same value); setting
        # it here too would send the header twice.
        return Response(payload, media_type=JSON_TYPE, headers={"X-Model-Version": version})

    # -- rank ----------------------------------------------------------------------------------
    async def _rank(self, request: Request, request_id: str, start: float) -> Response:
        parsed, item_ids = self.parser.parse_rank_body(await self._body(request))
        route_request, route = self.host.route(request_id, request.headers.get("x-user-id") or parsed.key)
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
        payload = dumps(body)
        # Ranked instances are served traffic too: monitors see them, with the primary's class.
        self.records.append(parsed.rows, self.labeler[arm](probabilities), version, arm, latency_ms, request_id)
        self.ledger.remember(request_id, arm, ranking, "rank")
        if route.shadows and not route.merge:
            self.arms.spawn_shadows(route.shadows, arm, parsed.x, request_id, item_ids)
        return Response(payload, media_type=JSON_TYPE, headers={"X-Model-Version": version})

    # -- feedback ------------------------------------------------------------------------------
    async def _feedback(self, request: Request, request_id: str, start: float) -> Response:
        items, batch = parse_feedback_body(await self._body(request))
        accepted = self.ledger.accept(items, batch)
        for feedback in accepted.feedback:
            self.host.feedback(feedback)
        return _json(accepted.body)

    # -- admin ---------------------------------------------------------------------------------
    def _require_admin(self, request: Request) -> None:
        """Commands need the token; without one configured they are off altogether."""
        if self.admin_token is None:
            raise RequestError("X-Admin-Token", "admin endpoints are disabled: deploy with an admin token", 403)
        if self._check_admin(request, "") is not None:
            raise RequestError("X-Admin-Token", "missing or wrong admin token", 401)

    def _check_admin(self, request: Request, request_id: str) -> Response | None:
        """The 401 answer when a token is configured and the request lacks it; None otherwise."""
        if self.admin_token is None:
            return None
        given = request.headers.get("x-admin-token", "")
        if hmac.compare_digest(given.encode(), self.admin_token.encode()):
            return None
        return _error(401, "X-Admin-Token", "missing or wrong admin token", request_id)

    async def _admin_promote(self, request: Request, request_id: str, start: float) -> Response:
        return await self._admin_verdict(request, Verdict.PROMOTE)

    async def _admin_rollback(self, request: Request, request_id: str, start: float) -> Response:
        return await self._admin_verdict(request, Verdict.ROLLBACK)

    async def _admin_verdict(self, request: Request, verdict: Verdict) -> Response:
        self._require_admin(request)
        data = await self._admin_body(request, ("reason",))
        reason = data.get("reason", f"operator {verdict.value}")
        if not isinstance(reason, str):
            raise RequestError("reason", f"expected a string, got {type(reason).__name__}")
        try:
            event = self.host.apply(Decision(verdict, reason), "admin")
        except (ValueError, NotImplementedError) as exc:  # the strategy refuses in its current state
            raise RequestError("strategy", str(exc), 409) from None
        return _json({"event": event, "state": self.host.state()})

    async def _admin_weights(self, request: Request, request_id: str, start: float) -> Response:
        self._require_admin(request)
        data = await self._admin_body(request, ("weights",))
        weights = data.get("weights")
        if not isinstance(weights, dict) or not weights:
            raise RequestError("weights", 'expected an object of arm: weight, e.g. {"weights": {"champion": 0.9}}')
        clean: dict[str, float] = {}
        for arm, w in weights.items():
            if arm not in self.versions:
                raise RequestError(f"weights.{arm}", f"unknown arm; arms: {', '.join(self.versions)}")
            if type(w) not in (int, float) or not math.isfinite(w) or w < 0:
                raise RequestError(f"weights.{arm}", f"expected a finite number >= 0, got {w!r}")
            clean[arm] = float(w)
        if not any(clean.values()):
            raise RequestError("weights", "at least one weight must be > 0")
        try:
            self.host.set_weights(clean)
        except NotImplementedError as exc:
            raise RequestError("weights", str(exc), 409) from None
        except ValueError as exc:
            raise RequestError("weights", str(exc), 422) from None
        return _json({"weights": clean, "state": self.host.state()})

    async def _admin_body(self, request: Request, allowed: tuple[str, ...]) -> dict:
        raw = await self._body(request)
        if not raw.strip():
            return {}
        data = load_json(raw)
        if not isinstance(data, dict):
            raise RequestError("body", "expected a JSON object")
        for k in data:
            if k not in allowed:
                raise RequestError(k, f"unknown field; expected only: {', '.join(allowed)}")
        return data

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

    async def _records(self, request: Request, request_id: str, start: float) -> Response:
        return self._check_admin(request, request_id) or _json(self.records.columns())

    async def _strategy(self, request: Request, request_id: str, start: float) -> Response:
        denied = self._check_admin(request, request_id)
        if denied:
            return denied
        snapshot = self.host.snapshot()
        events = snapshot.pop("events")
        body = {
            **snapshot,
            "feedback": self.ledger.summary(),
            "events": events,
            "shadows": self.arms.shadow_summary(),
            "faults": self.arms.fault_settings(),
        }
        if self.arms.batching is not None:
            body["batching"] = {**self.arms.batching, "arms": await self.arms.batching_stats()}
        return _json(body)

    async def _events(self, request: Request, request_id: str, start: float) -> Response:
        denied = self._check_admin(request, request_id)
        if denied:
            return denied
        values = parse_qs(request.scope.get("query_string", b"").decode("latin-1")).get("since", ["0"])
        try:
            since = int(values[-1])
        except ValueError:
            raise RequestError("since", f"expected an event index (an integer >= 0), got {values[-1]!r}") from None
        if since < 0:
            raise RequestError("since", f"expected an event index (an integer >= 0), got {since}")
        return _json({"events": self.host.events_since(since), "last": self.host.event_count})


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON_TYPE)


def _error(status: int, field: str | None, reason: str, request_id: str) -> Response:
    body = {"error": {"field": field, "reason": reason}, "request_id": request_id}
    return Response(dumps(body), status_code=status, media_type=JSON_TYPE)


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
