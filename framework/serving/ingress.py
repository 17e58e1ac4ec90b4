"""The Ray Serve deployments: the ingress (strategy host, request validation, records) and arms.

The ingress answers plain Starlette requests (measured faster than a FastAPI ingress: no routing
or pydantic layer). With ``placement="ingress"`` the ONNX sessions live in this replica, so a
request costs one proxy->replica hop; with ``placement="deployment"`` each arm is its own
deployment reached through a DeploymentHandle (one more hop, independent scaling).

Everything the strategy sees happens in this replica's event loop, one call at a time: route,
observe, feedback, decide, apply, set_weights. A verdict or an operator's command therefore
swaps traffic between two requests, never during one, and no request is dropped by a switch.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import random
import time
import uuid
from collections import OrderedDict, deque
from typing import Any, Mapping
from urllib.parse import parse_qs

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import Response

from ..components import Decision, Feedback, InputSchema, Outcome, Route, RouteRequest, Verdict
from ..errors import RequestError
from ..explain import attributions_from_probabilities, occlusion_batch, top_attributions
from .onnx_runner import OnnxRunner
from .requests import MAX_BODY_BYTES, FeedbackItem, RequestParser, load_json, parse_feedback_body
from .types import RECORD_FIELDS, ServedModel

log = logging.getLogger("ray.serve")

_JSON = "application/json"
#: request ids remembered for feedback (oldest evicted): ~100 B each plus the prediction
FEEDBACK_MEMORY = 100_000
#: feedback entries kept for ``GET -/strategy`` (the per-arm counters are cumulative)
FEEDBACK_LOG = 10_000
#: promote / rollback events kept for ``GET -/events`` (their index keeps counting)
EVENTS_KEPT = 1_000
#: requests whose shadows may run at once; beyond it shadows are skipped (counted), never queued,
#: so slow shadows cannot pile up memory or steal the loop from primaries
MAX_SHADOW_TASKS = 64
_ACTING = ("promote", "rollback")
#: ``"explain": true``: attributions returned per instance (the largest by size)
EXPLAIN_TOP = 10
#: ``"explain": true`` runs instances x (features + 1) rows in one call; beyond this: 413
EXPLAIN_MAX_ROWS = 65_536
NO_BASELINE = "no baseline for explanations: the model was registered without training means"


class ArmFailure(Exception):
    """An arm could not answer (an injected fault): a server-side failure, 503 when it was the primary."""

    def __init__(self, arm: str, reason: str):
        super().__init__(reason)
        self.arm = arm
        self.reason = reason


class _Fault:
    """Fault injection for one arm (demos, tests, benchmarks): extra latency, then maybe an error."""

    __slots__ = ("arm", "error_rate", "delay_s", "rng")

    def __init__(self, arm: str, error_rate: float = 0.0, extra_latency_ms: float = 0.0, seed: int = 0):
        self.arm = arm
        self.error_rate = float(error_rate)
        self.delay_s = float(extra_latency_ms) / 1000.0
        self.rng = random.Random(seed)

    async def strike(self) -> None:
        if self.delay_s > 0:
            await asyncio.sleep(self.delay_s)  # never time.sleep: other requests keep flowing
        if self.error_rate > 0 and self.rng.random() < self.error_rate:
            raise ArmFailure(self.arm, f"injected fault in arm '{self.arm}'")


@serve.deployment
class ArmModel:
    """One arm in its own deployment (``placement="deployment"``)."""

    def __init__(self, model: ServedModel, batching: Mapping[str, Any] | None = None):
        self.runner = OnnxRunner(model)
        self.batched = _batcher(self.runner, batching)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # sync on purpose: without batching this path stays exactly as measured before
        return self.runner.predict(x)

    async def predict_batched(self, x: np.ndarray) -> np.ndarray:
        """Queued with the other calls in flight on this replica; one onnxruntime call per batch."""
        return await self.batched(x)

    def stats(self) -> dict:
        """This replica's batching counters (batch sizes seen); {} when batching is off."""
        return self.batched.stats() if self.batched is not None else {}


def _batcher(runner: OnnxRunner, batching: Mapping[str, Any] | None):
    if not batching or not batching.get("max_batch_size"):
        return None
    from .batching import BatchedPredict

    return BatchedPredict(runner, batching["max_batch_size"], batching["batch_wait_timeout_s"])


class _HandleArm:
    """Adapter so the ingress awaits a remote arm the same way it calls a local one."""

    def __init__(self, handle: Any, model: ServedModel, batched: bool = False):
        self.handle = handle
        self.predict = handle.predict_batched if batched else handle.predict
        self.classes = np.asarray([c.item() if hasattr(c, "item") else c for c in model.classes], dtype=object)

    def labels(self, probabilities: np.ndarray) -> list:
        return self.classes[probabilities.argmax(axis=1)].tolist()


class _Served:
    """What the ingress remembers of one answered request, so later feedback can name arm and prediction."""

    __slots__ = ("arm", "prediction", "kind", "given")

    def __init__(self, arm: str, prediction: Any, kind: str):
        self.arm = arm
        self.prediction = prediction
        self.kind = kind  # "predict" | "rank"
        self.given: frozenset = frozenset()  # feedback kinds already passed to the strategy


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
        *,
        faults: Mapping[str, Mapping[str, Any]] | None = None,
        rank_class: Any = None,
        feedback_memory: int = FEEDBACK_MEMORY,
        batching: Mapping[str, Any] | None = None,
    ):
        self.versions = {m.arm: m.version for m in models}
        self.schema: InputSchema = models[0].schema
        self.parser = RequestParser(self.schema)
        self.feature_names = self.schema.names
        self.strategy = strategy_cls(strategy_config, arms=dict(self.versions))
        self.admin_token = admin_token
        self.classes = {m.arm: [c.item() if hasattr(c, "item") else c for c in m.classes] for m in models}
        self.batching = dict(batching) if batching and batching.get("max_batch_size") else None
        if arm_handles:
            self.local: dict[str, OnnxRunner] = {}
            self.remote = {m.arm: _HandleArm(arm_handles[m.arm], m, self.batching is not None) for m in models}
        else:
            self.local = {m.arm: OnnxRunner(m) for m in models}
            self.remote = {}
        # placement="ingress" with batching: one batcher per in-process arm (empty otherwise)
        self.batched = {arm: _batcher(runner, self.batching) for arm, runner in self.local.items()} if self.batching else {}
        self.labeler = {arm: (self.local.get(arm) or self.remote[arm]).labels for arm in self.versions}
        # "explain": true compares each feature with the arm's training mean (its baseline)
        self.baselines: dict[str, np.ndarray] = {}
        self.no_baseline: dict[str, str] = {}
        for m in models:
            if m.baseline is None:
                self.no_baseline[m.arm] = NO_BASELINE
                continue
            b = np.asarray(m.baseline, dtype=np.float64).ravel()
            if b.size != len(self.feature_names) or not np.isfinite(b).all():
                self.no_baseline[m.arm] = (
                    f"no usable baseline for explanations: arm '{m.arm}' has {b.size} training means "
                    f"(finite: {bool(np.isfinite(b).all())}) for {len(self.feature_names)} features"
                )
                log.warning("arm %s: %s", m.arm, self.no_baseline[m.arm])
                continue
            self.baselines[m.arm] = b.astype(np.float32)
        # Ranking scores each instance with the probability of one class (default: the last).
        self.rank_class = rank_class
        self.rank_index = {arm: _class_index(classes, rank_class) for arm, classes in self.classes.items()}
        # Faults are injected here, in front of the arm, whatever the placement.
        self.faults = {arm: _Fault(arm, **spec) for arm, spec in (faults or {}).items()}
        # Raw tuples only: the request path pays one deque.append per instance, nothing more.
        self.records: deque[tuple] = deque(maxlen=max(1, int(record_buffer)))
        # request id -> _Served, oldest first: feedback may arrive late and in any order.
        self.served: OrderedDict[str, _Served] = OrderedDict()
        self.memory = max(1, int(feedback_memory))
        self.feedback_log: deque[dict] = deque(maxlen=FEEDBACK_LOG)
        self.feedback_stats = {arm: _ArmFeedback() for arm in self.versions}
        self.feedback_counts = {"accepted": 0, "duplicates": 0, "unknown": 0}
        self.events: deque[dict] = deque(maxlen=EVENTS_KEPT)
        self.event_count = 0
        self.decision: Decision | None = None
        # the strategy's last acted-on verdict: a strategy that keeps returning the verdict it was
        # just given through apply() must not flood the events with copies
        self._acted: tuple[str, str] | None = None
        self._background: set[asyncio.Task] = set()
        self.shadow_stats = {"started": 0, "skipped": 0, "errors": 0}
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
        if self.faults:
            log.warning("fault injection is ON for arm(s) %s: for demos, tests and benchmarks only", sorted(self.faults))

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
                    return self._error(405, "method", f"use {want} for {path.lstrip('/')}, not {method}", request_id)
                return self._error(
                    404, "path", f"no endpoint {path}; try POST predict, POST rank, POST feedback, GET healthz or GET schema",
                    request_id,
                )
            return await handler(request, request_id, start)
        except RequestError as exc:
            return self._error(exc.status, exc.field, exc.reason, request_id)
        except ArmFailure as exc:  # the server's failure, not the client's: 503, the client may retry
            return self._error(503, "arm", exc.reason, request_id)
        except Exception as exc:  # our fault, not the client's: logged, answered as a 500
            log.exception("request %s to %s failed", request_id, path)
            return self._error(500, None, f"internal error: {type(exc).__name__}: {exc}", request_id)

    @staticmethod
    async def _body(request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise RequestError("body", f"request body of {length} bytes exceeds {MAX_BODY_BYTES}", 413)
        return await request.body()

    def _route(self, request_id: str, key: str | None) -> tuple[RouteRequest, Route]:
        route_request = RouteRequest(request_id, key)
        route = self.strategy.route(route_request)
        if route.primary not in self.versions:
            raise RuntimeError(f"strategy {self.strategy.name!r} routed to unknown arm {route.primary!r}")
        return route_request, route

    # -- predict -------------------------------------------------------------------------------
    async def _predict(self, request: Request, request_id: str, start: float) -> Response:
        parsed = self.parser.parse_body(await self._body(request))
        route_request, route = self._route(request_id, request.headers.get("x-user-id") or parsed.key)
        arm = route.primary
        version = self.versions[arm]
        if parsed.explain:  # refused before any model runs: nothing recorded, nothing observed
            self._check_explainable(self._merge_arms(route) if route.merge else [arm], parsed.x.shape)
        explained = arm
        if route.merge:
            answered, failure = await self._run_all(self._merge_arms(route), parsed.x, request_id)
            answers = {a: {"predictions": self.labeler[a](p), "probabilities": p.tolist()} for a, p in answered.items()}
            merged = self._merge(route_request, answers)
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
                body.pop("probabilities")
            served = body["predictions"]
            if not (isinstance(served, list) and len(served) == len(parsed.rows)):
                served = labels
            latency_ms = (time.perf_counter() - start) * 1000.0
        else:
            probabilities = await self._run_primary(arm, parsed.x, request_id, start)
            labels = served = self.labeler[arm](probabilities)
            latency_ms = (time.perf_counter() - start) * 1000.0
            body = {"request_id": request_id, "model_version": version, "arm": arm,
                    "predictions": labels, "probabilities": probabilities.tolist()}
            self._signal(Outcome(request_id, arm, latency_ms, prediction=labels))
        if parsed.explain:
            body["explanations"] = await self._explanations(explained, parsed.x)
        payload = json.dumps(body, default=str).encode()
        now = time.time()
        append = self.records.append
        for row, label in zip(parsed.rows, served):
            # tuples of plain values get untracked by the GC: 10k buffered rows add no GC pauses
            append((tuple(row), label, version, arm, latency_ms, request_id, now))
        self._remember(request_id, arm, served[0] if len(served) == 1 else served, "predict")
        if route.shadows and not route.merge:
            self._spawn_shadows(route.shadows, arm, parsed.x, request_id, None)
        # X-Request-Id itself is added to every response by the Serve proxy (same value); setting
        # it here too would send the header twice.
        return Response(payload, media_type=_JSON, headers={"X-Model-Version": version})

    # -- explain -------------------------------------------------------------------------------
    def _check_explainable(self, arms: list[str], shape: tuple[int, ...]) -> None:
        for a in arms:
            if a in self.no_baseline:
                raise RequestError("explain", self.no_baseline[a], 409)
        rows = shape[0] * (shape[1] + 1)
        if rows > EXPLAIN_MAX_ROWS:
            most = max(1, EXPLAIN_MAX_ROWS // (shape[1] + 1))
            raise RequestError(
                "explain", f"explaining {shape[0]} instances needs {rows} model rows (limit {EXPLAIN_MAX_ROWS}): "
                f"send at most {most} instances with explain", 413,
            )

    async def _explanations(self, arm: str, x: np.ndarray) -> list[list[list]]:
        """Per instance, its top features as ``[feature, attribution]``, largest first: how much
        each feature's value pushed the answer toward the predicted class, compared with an
        average case (the training mean). One model call for the whole request (any placement;
        the explanation is not a served answer, so no fault injection and no batching queue)."""
        batch = occlusion_batch(x, self.baselines[arm])
        runner = self.local.get(arm)
        if runner is not None:
            probabilities = runner.predict(batch)
        else:
            probabilities = await self.remote[arm].handle.predict.remote(batch)
        attributions, _ = attributions_from_probabilities(probabilities, x.shape[0], x.shape[1])
        return top_attributions(attributions, self.feature_names, EXPLAIN_TOP)

    # -- rank ----------------------------------------------------------------------------------
    async def _rank(self, request: Request, request_id: str, start: float) -> Response:
        parsed, item_ids = self.parser.parse_rank_body(await self._body(request))
        route_request, route = self._route(request_id, request.headers.get("x-user-id") or parsed.key)
        arm = route.primary
        version = self.versions[arm]
        teams = None
        if route.merge:
            answered, failure = await self._run_all(self._merge_arms(route), parsed.x, request_id, item_ids)
            rankings = {a: self._ranking(a, p, item_ids) for a, p in answered.items()}
            merged = self._merge(route_request, rankings)
            if merged is None and arm not in answered:
                raise failure
            base = arm if arm in answered else next(iter(answered))
            probabilities = answered[base]
            ranking = rankings[base]
            if merged is not None:
                ranking, teams = _ranking_and_teams(merged, ranking)
        else:
            probabilities = await self._run_primary(arm, parsed.x, request_id, start)
            ranking = self._ranking(arm, probabilities, item_ids)
            self._signal(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, prediction=ranking))
        latency_ms = (time.perf_counter() - start) * 1000.0
        body = {"request_id": request_id, "model_version": version, "arm": arm, "ranking": ranking}
        if teams is not None:
            body["teams"] = teams
        payload = json.dumps(body, default=str).encode()
        # Ranked instances are served traffic too: monitors see them, with the primary's class.
        now = time.time()
        append = self.records.append
        for row, label in zip(parsed.rows, self.labeler[arm](probabilities)):
            append((tuple(row), label, version, arm, latency_ms, request_id, now))
        self._remember(request_id, arm, ranking, "rank")
        if route.shadows and not route.merge:
            self._spawn_shadows(route.shadows, arm, parsed.x, request_id, item_ids)
        return Response(payload, media_type=_JSON, headers={"X-Model-Version": version})

    def _ranking(self, arm: str, probabilities: np.ndarray, item_ids: list) -> list:
        scores = probabilities[:, self.rank_index[arm]]
        return [item_ids[i] for i in np.argsort(-scores, kind="stable")]  # stable: ties keep input order

    # -- running arms --------------------------------------------------------------------------
    async def _call(self, arm: str, x: np.ndarray) -> np.ndarray:
        fault = self.faults.get(arm)
        if fault is not None:
            await fault.strike()
        runner = self.local.get(arm)
        if runner is not None:
            if self.batched:
                return await self.batched[arm](x)
            return runner.predict(x)  # tens of µs for a small model: inline beats a thread hop
        return await self.remote[arm].predict.remote(x)

    async def _run_primary(self, arm: str, x: np.ndarray, request_id: str, start: float) -> np.ndarray:
        try:
            return await self._call(arm, x)
        except Exception:
            self._signal(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, error=True))
            raise

    async def _timed(self, arm: str, x: np.ndarray) -> tuple[np.ndarray | None, BaseException | None, float]:
        t0 = time.perf_counter()
        try:
            p = await self._call(arm, x)
        except Exception as exc:
            return None, exc, (time.perf_counter() - t0) * 1000.0
        return p, None, (time.perf_counter() - t0) * 1000.0

    def _merge_arms(self, route: Route) -> list[str]:
        arms = [route.primary]
        for a in route.shadows:
            if a in self.versions and a not in arms:
                arms.append(a)
        return arms

    async def _run_all(
        self, arms: list[str], x: np.ndarray, request_id: str, item_ids: list | None = None
    ) -> tuple[dict[str, np.ndarray], BaseException | None]:
        """Every arm of a merged route, concurrently (separate deployments overlap), each observed.

        Returns the arms that answered (their probabilities) and the primary's failure (None when
        it answered); raises the primary's failure when no arm answered.
        """
        timed = await asyncio.gather(*(self._timed(a, x) for a in arms))
        answered = {}
        for arm, (p, exc, ms) in zip(arms, timed):
            if exc is not None:
                self._signal(Outcome(request_id, arm, ms, error=True))
            else:
                answered[arm] = p
                prediction = self._ranking(arm, p, item_ids) if item_ids is not None else self.labeler[arm](p)
                self._signal(Outcome(request_id, arm, ms, prediction=prediction))
        primary_failure = timed[0][1]  # arms[0] is the primary
        if len(answered) < len(arms):
            if not answered:
                raise primary_failure
            failed = [a for a in arms if a not in answered]
            log.warning("merged route: arm(s) %s failed on request %s; merging the others' answers", failed, request_id)
        return answered, primary_failure

    def _merge(self, route_request: RouteRequest, answers: Mapping[str, Any]) -> Any:
        """The strategy's merged answer from the arms that answered (a failed arm is absent)."""
        try:
            return self.strategy.merge(route_request, answers)
        except Exception:  # the primary's own answer is still a good answer
            log.exception("strategy %s merge() failed; answering the primary's own", self.strategy.name)
            return None

    # -- shadows: strictly off the client's path -----------------------------------------------
    def _spawn_shadows(self, arms: tuple[str, ...], primary: str, x: np.ndarray, request_id: str, item_ids) -> None:
        arms = tuple(a for a in arms if a != primary and a in self.versions)
        if not arms:
            return
        if len(self._background) >= MAX_SHADOW_TASKS:
            self.shadow_stats["skipped"] += len(arms)
            return
        self.shadow_stats["started"] += len(arms)
        task = asyncio.get_running_loop().create_task(self._shadow(arms, x, request_id, item_ids))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(self, arms: tuple[str, ...], x: np.ndarray, request_id: str, item_ids) -> None:
        await asyncio.sleep(0)  # let the primary answer leave first
        timed = await asyncio.gather(*(self._timed(a, x) for a in arms))
        for arm, (p, exc, ms) in zip(arms, timed):
            if exc is not None:
                self.shadow_stats["errors"] += 1
                if not isinstance(exc, ArmFailure):  # injected faults are expected: no traceback flood
                    log.warning("shadow arm %s failed on request %s: %r", arm, request_id, exc)
                self._signal(Outcome(request_id, arm, ms, error=True))
            else:
                prediction = self._ranking(arm, p, item_ids) if item_ids is not None else self.labeler[arm](p)
                self._signal(Outcome(request_id, arm, ms, prediction=prediction))

    # -- strategy signals and verdicts ---------------------------------------------------------
    def _signal(self, outcome: Outcome) -> None:
        try:
            self.strategy.observe(outcome)
        except Exception:  # bookkeeping must not fail an answer that is already computed
            log.exception("strategy %s observe() failed", self.strategy.name)
        self._decide()

    def _decide(self) -> Decision | None:
        """Ask for a verdict (cheap: HOLD until a window closes) and act on PROMOTE / ROLLBACK."""
        try:
            decision = self.strategy.decide()
        except Exception:
            log.exception("strategy %s decide() failed", self.strategy.name)
            return None
        self.decision = decision
        verdict = _verdict(decision)
        if verdict in _ACTING and self._acted != (verdict, decision.reason):
            self._acted = (verdict, decision.reason)
            try:
                self._apply(decision, "strategy")
            except Exception:
                log.exception("strategy %s apply(%s) failed", self.strategy.name, verdict)
        return decision

    def _apply(self, decision: Decision, source: str) -> dict:
        self.strategy.apply(decision)
        self.event_count += 1
        event = {
            "index": self.event_count,
            "time": time.time(),
            "verdict": _verdict(decision),
            "reason": decision.reason,
            "weights": dict(decision.weights) if decision.weights is not None else None,
            "arms": dict(self.versions),
            "source": source,
        }
        self.events.append(event)
        log.warning("traffic %s by %s: %s (arms %s)", event["verdict"], source, decision.reason, self.versions)
        return event

    # -- feedback ------------------------------------------------------------------------------
    def _remember(self, request_id: str, arm: str, prediction: Any, kind: str) -> None:
        served = self.served
        if request_id in served:  # a client reusing an id: the latest answer is the one to judge
            del served[request_id]
        served[request_id] = _Served(arm, prediction, kind)
        if len(served) > self.memory:
            served.popitem(last=False)

    async def _feedback(self, request: Request, request_id: str, start: float) -> Response:
        items, batch = parse_feedback_body(await self._body(request))
        # Validate every item against what was served before recording any: a batch is one unit.
        resolved: list[tuple[FeedbackItem, _Served | None]] = []
        for item in items:
            entry = self.served.get(item.request_id)
            if entry is None and not batch:
                self.feedback_counts["unknown"] += 1
                raise RequestError("request_id", f"unknown or expired request id '{item.request_id}'", 404)
            if entry is not None and item.clicks and entry.kind == "rank":
                _check_clicks(item, entry)
            resolved.append((item, entry))
        accepted, duplicates, unknown = 0, 0, []
        for item, entry in resolved:
            if entry is None:
                unknown.append(item.request_id)
                continue
            new = tuple(k for k in item.kinds if k not in entry.given)
            if not new:  # acknowledged, but the strategy counts each answer once per kind
                duplicates += 1
                continue
            entry.given = entry.given | set(new)
            feedback = Feedback(
                item.request_id,
                entry.arm,
                label=item.label if "label" in new else None,
                reward=item.reward if "reward" in new else None,
                clicks=tuple(item.clicks) if "clicks" in new else (),
                prediction=entry.prediction,
            )
            self._log_feedback(feedback, entry.kind)
            try:
                self.strategy.feedback(feedback)
            except Exception:
                log.exception("strategy %s feedback() failed", self.strategy.name)
            accepted += 1
            self._decide()
        self.feedback_counts["accepted"] += accepted
        self.feedback_counts["duplicates"] += duplicates
        self.feedback_counts["unknown"] += len(unknown)
        answer: dict[str, Any] = {"accepted": accepted, "duplicates": duplicates, "unknown": unknown}
        if not batch:
            answer.update(request_id=items[0].request_id, arm=resolved[0][1].arm, duplicate=duplicates == 1)
        return self._json(answer)

    def _log_feedback(self, feedback: Feedback, kind: str) -> None:
        stats = self.feedback_stats[feedback.arm]
        stats.feedback += 1
        if feedback.label is not None and kind == "predict":
            n, correct = _score(feedback.label, feedback.prediction)
            stats.labels += n
            stats.correct += correct
        if feedback.reward is not None:
            stats.rewards += 1
            stats.reward_sum += feedback.reward
        if feedback.clicks:
            stats.clicked += 1
            stats.clicks += len(feedback.clicks)
        self.feedback_log.append(
            {"time": time.time(), "request_id": feedback.request_id, "arm": feedback.arm, "label": feedback.label,
             "reward": feedback.reward, "clicks": list(feedback.clicks), "prediction": feedback.prediction}
        )

    def feedback_summary(self) -> dict:
        return {
            **self.feedback_counts,
            "remembered_requests": len(self.served),
            "arms": {arm: s.as_dict() for arm, s in self.feedback_stats.items()},
            "recent": list(self.feedback_log)[-10:],
        }

    # -- admin ---------------------------------------------------------------------------------
    def _require_admin(self, request: Request) -> None:
        """Commands need the token; without one configured they are off altogether."""
        if self.admin_token is None:
            raise RequestError("X-Admin-Token", "admin endpoints are disabled: deploy with an admin token", 403)
        if self._check_admin(request, "") is not None:
            raise RequestError("X-Admin-Token", "missing or wrong admin token", 401)

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
            event = self._apply(Decision(verdict, reason), "admin")
        except (ValueError, NotImplementedError) as exc:  # the strategy refuses in its current state
            raise RequestError("strategy", str(exc), 409) from None
        self._acted = None  # a later verdict of the strategy is a new one, even if worded the same
        self._decide()
        return self._json({"event": event, "state": self.strategy.state()})

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
            self.strategy.set_weights(clean)
        except NotImplementedError as exc:
            raise RequestError("weights", str(exc), 409) from None
        except ValueError as exc:
            raise RequestError("weights", str(exc), 422) from None
        log.warning("traffic reweighted by admin: %s", clean)
        self._decide()
        return self._json({"weights": clean, "state": self.strategy.state()})

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
        return Response(self._health, media_type=_JSON)

    async def _schema(self, request: Request, request_id: str, start: float) -> Response:
        return self._json(self._schema_body())

    async def _records(self, request: Request, request_id: str, start: float) -> Response:
        return self._check_admin(request, request_id) or self._json(self.records_columns())

    async def _strategy(self, request: Request, request_id: str, start: float) -> Response:
        denied = self._check_admin(request, request_id)
        if denied:
            return denied
        snapshot = self.strategy_snapshot()
        if self.batching is not None:
            snapshot["batching"] = {**self.batching, "arms": await self.batching_stats()}
        return self._json(snapshot)

    async def batching_stats(self) -> dict[str, Any]:
        """Batch sizes seen per arm: this replica's batchers, or for remote arms the counters of
        the arm replica that answers this call (one replica's view when an arm has several)."""
        if not self.remote:
            return {arm: b.stats() for arm, b in self.batched.items()}
        arms = list(self.remote)
        answers = await asyncio.gather(
            *(asyncio.wait_for(self.remote[a].handle.stats.remote(), 5.0) for a in arms), return_exceptions=True
        )
        return {a: (s if not isinstance(s, BaseException) else {"error": repr(s)}) for a, s in zip(arms, answers)}

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
        return self._json({"events": [e for e in self.events if e["index"] > since], "last": self.event_count})

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
        decision = self._decide() or self.decision
        return {
            "strategy": self.strategy.name,
            "arms": self.versions,
            "state": self.strategy.state(),
            "decision": None if decision is None else {
                "verdict": _verdict(decision),
                "reason": decision.reason,
                "weights": dict(decision.weights) if decision.weights is not None else None,
            },
            "feedback": self.feedback_summary(),
            "events": {"count": self.event_count, "last": self.events[-1] if self.events else None},
            "shadows": {**self.shadow_stats, "running": len(self._background)},
            "faults": {a: {"error_rate": f.error_rate, "extra_latency_ms": f.delay_s * 1000.0} for a, f in self.faults.items()},
        }

    def _schema_body(self) -> dict:
        return {
            **self.schema.to_dict(),
            "classes": self.classes[next(iter(self.versions))],
            "models": self.versions,
            "arms": {arm: {"version": v, "classes": self.classes[arm]} for arm, v in self.versions.items()},
            "max_instances": self.parser.max_instances,
            "rank_class": self.classes[next(iter(self.versions))][self.rank_index[next(iter(self.versions))]],
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


class _ArmFeedback:
    """Cumulative feedback counters of one arm (what answered, judged against what came back)."""

    __slots__ = ("feedback", "labels", "correct", "rewards", "reward_sum", "clicked", "clicks")

    def __init__(self):
        self.feedback = self.labels = self.correct = self.rewards = self.clicked = self.clicks = 0
        self.reward_sum = 0.0

    def as_dict(self) -> dict:
        return {
            "feedback": self.feedback,
            "labels": self.labels,
            "correct": self.correct,
            "accuracy": self.correct / self.labels if self.labels else None,
            "rewards": self.rewards,
            "mean_reward": self.reward_sum / self.rewards if self.rewards else None,
            "clicked_answers": self.clicked,
            "clicks": self.clicks,
        }


def _verdict(decision: Decision) -> str:
    return getattr(decision.verdict, "value", decision.verdict)


def _class_index(classes: list, wanted: Any) -> int:
    """Index of the ranking class (None: the last); deploy() validated that it exists."""
    if wanted is None:
        return len(classes) - 1
    for i, c in enumerate(classes):
        if c == wanted or str(c) == str(wanted):  # "1" in a recipe means the class 1
            return i
    raise ValueError(f"rank class {wanted!r} is not one of the classes {classes}")


def _same(label: Any, prediction: Any) -> bool:
    return label == prediction or str(label) == str(prediction)


def _score(label: Any, prediction: Any) -> tuple[int, int]:
    """(labels scored, correct): one per instance; shapes that do not match are not scored."""
    if isinstance(prediction, list):
        if isinstance(label, list) and len(label) == len(prediction):
            return len(label), sum(_same(a, b) for a, b in zip(label, prediction))
        return 0, 0
    if isinstance(label, list):
        return (1, int(_same(label[0], prediction))) if len(label) == 1 else (0, 0)
    return 1, int(_same(label, prediction))


def _check_clicks(item: FeedbackItem, entry: _Served) -> None:
    """Clicks on a ranking must name items that were in it. Compared as strings ("3" is 3) and
    handed on as the ids that were served, so a strategy matches them against its own ranking."""
    shown = {str(i): i for i in entry.prediction}
    clicks = []
    for j, c in enumerate(item.clicks or ()):
        if str(c) not in shown:
            raise RequestError(
                f"{item.at}clicks[{j}]", f"item {json.dumps(c)} was not in the ranking served for request '{item.request_id}'"
            )
        clicks.append(shown[str(c)])
    item.clicks = tuple(clicks)


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

