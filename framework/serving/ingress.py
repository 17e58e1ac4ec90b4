"""The Ray Serve deployments: the ingress (strategy host, request validation, records) and arms.

The ingress answers plain Starlette requests (measured faster than a FastAPI ingress: no routing
or pydantic layer). With ``placement="ingress"`` the ONNX sessions live in this replica, so a
request costs one proxy->replica hop; with ``placement="deployment"`` each arm is its own
deployment reached through a DeploymentHandle (one more hop, independent scaling).
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections import deque
from typing import Any, Mapping

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..components import InputSchema, Outcome, RouteRequest
from ..errors import RequestError
from .onnx_runner import OnnxRunner
from .requests import MAX_BODY_BYTES, RequestParser
from .types import RECORD_FIELDS, ServedModel

log = logging.getLogger("ray.serve")

_JSON = "application/json"


@serve.deployment
class ArmModel:
    """One arm in its own deployment (``placement="deployment"``)."""

    def __init__(self, model: ServedModel):
        self.runner = OnnxRunner(model)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.runner.predict(x)


class _HandleArm:
    """Adapter so the ingress awaits a remote arm the same way it calls a local one."""

    def __init__(self, handle: Any, model: ServedModel):
        self.handle = handle
        self.classes = np.asarray([c.item() if hasattr(c, "item") else c for c in model.classes], dtype=object)

    def labels(self, probabilities: np.ndarray) -> list:
        return self.classes[probabilities.argmax(axis=1)].tolist()


@serve.deployment
class Ingress:
    def __init__(
        self,
        models: list[ServedModel],
        strategy_cls: type,
        strategy_config: Any,
        record_buffer: int = 10000,
        admin_token: str | None = None,
        arm_handles: Mapping[str, Any] | None = None,
    ):
        self.versions = {m.arm: m.version for m in models}
        self.schema: InputSchema = models[0].schema
        self.parser = RequestParser(self.schema)
        self.feature_names = self.schema.names
        self.strategy = strategy_cls(strategy_config, arms=dict(self.versions))
        self.admin_token = admin_token
        self.classes = {m.arm: [c.item() if hasattr(c, "item") else c for c in m.classes] for m in models}
        if arm_handles:
            self.local: dict[str, OnnxRunner] = {}
            self.remote = {m.arm: _HandleArm(arm_handles[m.arm], m) for m in models}
        else:
            self.local = {m.arm: OnnxRunner(m) for m in models}
            self.remote = {}
        # Raw tuples only: the request path pays one deque.append per instance, nothing more.
        self.records: deque[tuple] = deque(maxlen=max(1, int(record_buffer)))
        self._background: set[asyncio.Task] = set()
        self._health = json.dumps({"status": "ok", "models": self.versions}).encode()

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
            if path == "/predict":
                if method != "POST":
                    return self._error(405, "method", f"use POST for predict, not {method}", request_id)
                return await self._predict(request, request_id, start)
            if method != "GET":
                if path in ("/healthz", "/schema", "/-/records", "/-/strategy"):
                    return self._error(405, "method", f"use GET for {path}, not {method}", request_id)
                return self._error(404, "path", f"no endpoint {path}", request_id)
            if path == "/healthz":
                return Response(self._health, media_type=_JSON)
            if path == "/schema":
                return self._json(self._schema_body())
            if path == "/-/records":
                denied = self._check_admin(request, request_id)
                return denied or self._json(self.records_columns())
            if path == "/-/strategy":
                denied = self._check_admin(request, request_id)
                return denied or self._json(self.strategy_snapshot())
            return self._error(404, "path", f"no endpoint {path}; try POST predict, GET healthz or GET schema", request_id)
        except RequestError as exc:
            return self._error(exc.status, exc.field, exc.reason, request_id)
        except Exception as exc:  # our fault, not the client's: logged, answered as a 500
            log.exception("request %s to %s failed", request_id, path)
            return self._error(500, None, f"internal error: {type(exc).__name__}: {exc}", request_id)

    # -- predict -------------------------------------------------------------------------------
    async def _predict(self, request: Request, request_id: str, start: float) -> Response:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise RequestError("body", f"request body of {length} bytes exceeds {MAX_BODY_BYTES}", 413)
        parsed = self.parser.parse_body(await request.body())
        key = request.headers.get("x-user-id") or parsed.key
        route = self.strategy.route(RouteRequest(request_id, key))
        arm = route.primary
        if arm not in self.versions:
            raise RuntimeError(f"strategy {self.strategy.name!r} routed to unknown arm {arm!r}")
        version = self.versions[arm]
        try:
            probabilities, labels = await self._run(arm, parsed.x)
        except Exception:
            self._observe(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, error=True))
            raise
        latency_ms = (time.perf_counter() - start) * 1000.0
        body = json.dumps(
            {
                "request_id": request_id,
                "model_version": version,
                "arm": arm,
                "predictions": labels,
                "probabilities": probabilities.tolist(),
            }
        ).encode()
        self._observe(Outcome(request_id, arm, latency_ms, prediction=labels))
        now = time.time()
        append = self.records.append
        for row, label in zip(parsed.rows, labels):
            # tuples of plain values get untracked by the GC: 10k buffered rows add no GC pauses
            append((tuple(row), label, version, arm, latency_ms, request_id, now))
        if route.shadows:
            # Shadows never touch the client's answer: they run after this handler returned.
            task = asyncio.get_running_loop().create_task(self._shadow(route.shadows, arm, parsed.x, request_id))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        # X-Request-Id itself is added to every response by the Serve proxy (same value); setting
        # it here too would send the header twice.
        return Response(body, media_type=_JSON, headers={"X-Model-Version": version})

    async def _run(self, arm: str, x: np.ndarray) -> tuple[np.ndarray, list]:
        runner = self.local.get(arm)
        if runner is not None:
            probabilities = runner.predict(x)  # tens of µs for a small model: inline beats a thread hop
            return probabilities, runner.labels(probabilities)
        remote = self.remote[arm]
        probabilities = await remote.handle.predict.remote(x)
        return probabilities, remote.labels(probabilities)

    async def _shadow(self, arms: tuple[str, ...], primary: str, x: np.ndarray, request_id: str) -> None:
        await asyncio.sleep(0)  # let the primary answer leave first
        for arm in arms:
            if arm == primary or arm not in self.versions:
                continue
            start = time.perf_counter()
            try:
                _, labels = await self._run(arm, x)
            except Exception:
                log.exception("shadow arm %s failed on request %s", arm, request_id)
                self._observe(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, error=True))
            else:
                self._observe(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, prediction=labels))

    def _observe(self, outcome: Outcome) -> None:
        try:
            self.strategy.observe(outcome)
        except Exception:  # bookkeeping must not fail an answer that is already computed
            log.exception("strategy %s observe() failed", self.strategy.name)

    # -- admin and metadata --------------------------------------------------------------------
    def records_columns(self) -> dict[str, list]:
        """The ring buffer as JSON columns: features..., prediction, model_version, arm, ..."""
        rows = list(self.records)
        columns: dict[str, list] = {name: [] for name in self.feature_names}
        if rows:
            features = list(zip(*(r[0] for r in rows)))
            for name, values in zip(self.feature_names, features):
                columns[name] = list(values)
        for i, name in enumerate(RECORD_FIELDS, start=1):
            columns[name] = [r[i] for r in rows]
        return columns

    def strategy_snapshot(self) -> dict:
        decision = self.strategy.decide()
        return {
            "strategy": self.strategy.name,
            "arms": self.versions,
            "state": self.strategy.state(),
            "decision": {
                "verdict": getattr(decision.verdict, "value", decision.verdict),
                "reason": decision.reason,
                "weights": dict(decision.weights) if decision.weights is not None else None,
            },
        }

    def _schema_body(self) -> dict:
        return {
            **self.schema.to_dict(),
            "classes": self.classes[next(iter(self.versions))],
            "models": self.versions,
            "arms": {arm: {"version": v, "classes": self.classes[arm]} for arm, v in self.versions.items()},
            "max_instances": self.parser.max_instances,
        }

    def _check_admin(self, request: Request, request_id: str) -> Response | None:
        if self.admin_token is None:
            return None
        given = request.headers.get("x-admin-token", "")
        if hmac.compare_digest(given.encode(), self.admin_token.encode()):
            return None
        return self._error(401, "X-Admin-Token", "missing or wrong admin token", request_id)

    @staticmethod
    def _json(data: Any, status: int = 200) -> Response:
        return Response(json.dumps(data, default=str).encode(), status_code=status, media_type=_JSON)

    @staticmethod
    def _error(status: int, field: str | None, reason: str, request_id: str) -> Response:
        body = {"error": {"field": field, "reason": reason}, "request_id": request_id}
        return Response(json.dumps(body).encode(), status_code=status, media_type=_JSON)


@serve.deployment
class PlainOnnx:
    """The baseline: the same ONNX file behind the most direct Ray Serve deployment."""

    def __init__(self, onnx_bytes: bytes, input_name: str, output_name: str):
        from .onnx_runner import make_session

        self.session = make_session(onnx_bytes)
        self.input_name = input_name
        self.outputs = [output_name]

    async def __call__(self, request: Request) -> dict:
        data = await request.json()
        x = np.asarray(data["inputs"], dtype=np.float32)
        return {"probabilities": self.session.run(self.outputs, {self.input_name: x})[0].tolist()}
