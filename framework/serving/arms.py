"""The arms an ingress replica answers with: running them, and reading their answers.

An arm is in-process (an ``OnnxRunner``, ``placement="ingress"``) or remote (an ``ArmModel``
deployment reached through its DeploymentHandle, ``placement="deployment"``); the pool calls
both the same way. No Ray import here: a remote arm is whatever handle the ingress was given.
Every answer and failure is reported to ``observe`` (the strategy host) as an ``Outcome``.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..components import Outcome, Route
from ..errors import RequestError, ServingError
from ..explain import (attributions_from_probabilities, occlusion_batch, occlusion_feeds, regression_attributions,
                       top_attributions)
from .batching import batched_predict
from .onnx_runner import OnnxRunner
from .types import ServedModel

# Serve's replica logger: in a replica these lines land in the replica's log
log = logging.getLogger("ray.serve")

#: requests whose shadows may run at once; beyond it shadows are skipped (counted), never queued,
#: so slow shadows cannot pile up memory or steal the loop from primaries
MAX_SHADOW_TASKS = 64
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

    def __reduce__(self):  # picklable with both arguments (Ray ships exceptions between processes)
        return type(self), (self.arm, self.reason)


class ArmPool:
    """Runs the arms of ``models`` (all on one input schema) and turns probabilities into answers.

    ``handles``: arm -> DeploymentHandle of its ``ArmModel`` (remote arms); None runs every arm
    in-process. ``faults``: arm -> ``{error_rate, extra_latency_ms, seed}`` injected in front of
    that arm (demos, tests, benchmarks). ``rank_class``: the class whose probability ranks items
    (None: the last). ``batching``: ``{max_batch_size, batch_wait_timeout_s}`` or None / off.
    """

    def __init__(
        self,
        models: Sequence[ServedModel],
        observe: Callable[[Outcome], None],
        *,
        handles: Mapping[str, Any] | None = None,
        faults: Mapping[str, Mapping[str, Any]] | None = None,
        rank_class: Any = None,
        batching: Mapping[str, Any] | None = None,
    ):
        if not models:
            raise ServingError("serve.models: the arm pool needs at least one model")
        self.observe = observe
        self.versions = {m.arm: m.version for m in models}
        self.feature_names = models[0].schema.names
        self.classes = {m.arm: [_plain(c) for c in m.classes] for m in models}
        #: the models' input layout when they take typed raw rows (every arm the same), else None
        self.layout = models[0].inputs
        #: arms answering one number per row (a regression), not class probabilities
        self.regression = {m.arm for m in models if getattr(m, "task", "classification") == "regression"}
        self.batching = dict(batching) if batching and batching.get("max_batch_size") else None
        if handles:
            missing = [a for a in self.versions if a not in handles]
            if missing:
                raise ServingError(f"serve.models: no deployment handle for arm(s) {missing}")
            self.local: dict[str, OnnxRunner] = {}
            self.remote = {m.arm: _RemoteArm(handles[m.arm], m, self.batching is not None) for m in models}
        else:
            self.local = {m.arm: OnnxRunner(m) for m in models}
            self.remote = {}
        # placement="ingress" with batching: one batcher per in-process arm (empty otherwise)
        self.batched = {arm: batched_predict(r, self.batching) for arm, r in self.local.items()} if self.batching else {}
        #: arm -> labels(probabilities): the predicted class per row
        self.labeler = {arm: (self.local.get(arm) or self.remote[arm]).labels for arm in self.versions}
        self.baselines, self.no_baseline = _baselines(models, len(self.feature_names))
        self.rank_index = {arm: 0 if arm in self.regression else _class_index(classes, rank_class)
                           for arm, classes in self.classes.items()}
        unknown = [a for a in (faults or {}) if a not in self.versions]
        if unknown:
            raise ServingError(f"serve.faults.{unknown[0]}: no such arm; arms: {', '.join(self.versions)}")
        self.faults = {arm: _Fault(arm, **spec) for arm, spec in (faults or {}).items()}
        self._background: set[asyncio.Task] = set()
        self.shadow_counts = {"started": 0, "skipped": 0, "errors": 0}
        if self.faults:
            log.warning("fault injection is ON for arm(s) %s: for demos, tests and benchmarks only", sorted(self.faults))

    # -- running arms --------------------------------------------------------------------------
    async def call(self, arm: str, x: np.ndarray) -> np.ndarray:
        """Probabilities [n, classes] of ``arm`` for ``x``; ArmFailure on an injected fault."""
        fault = self.faults.get(arm)
        if fault is not None:
            await fault.strike()
        runner = self.local.get(arm)
        if runner is not None:
            if self.batched:
                return await self.batched[arm](x)
            return runner.predict(x)  # tens of µs for a small model: inline beats a thread hop
        return await self.remote[arm].predict.remote(x)

    async def run_primary(self, arm: str, x: np.ndarray, request_id: str, start: float) -> np.ndarray:
        """The answering arm's probabilities; a failure is observed (latency since ``start``), then raised."""
        try:
            return await self.call(arm, x)
        except Exception:
            self.observe(Outcome(request_id, arm, (time.perf_counter() - start) * 1000.0, error=True))
            raise

    def merge_arms(self, route: Route) -> list[str]:
        """The arms a merged route runs: the primary first, then each declared shadow once."""
        arms = [route.primary]
        for a in route.shadows:
            if a in self.versions and a not in arms:
                arms.append(a)
        return arms

    async def run_all(
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
                self.observe(Outcome(request_id, arm, ms, error=True))
            else:
                answered[arm] = p
                self.observe(Outcome(request_id, arm, ms, prediction=self._prediction(arm, p, item_ids)))
        primary_failure = timed[0][1]  # arms[0] is the primary
        if len(answered) < len(arms):
            if not answered:
                raise primary_failure
            failed = [a for a in arms if a not in answered]
            log.warning("merged route: arm(s) %s failed on request %s; merging the others' answers", failed, request_id)
        return answered, primary_failure

    def answer(self, arm: str, out: np.ndarray) -> dict:
        """The body fields of ``arm``'s answer: ``predictions`` (classes, or a regression's
        numbers) and, for classes, ``probabilities``."""
        if arm in self.regression:
            return {"predictions": self.labeler[arm](out)}
        return {"predictions": self.labeler[arm](out), "probabilities": out.tolist()}

    def ranking(self, arm: str, probabilities: np.ndarray, item_ids: list) -> list:
        """``item_ids`` by the rank class's probability (a regression: the predicted value),
        highest first (ties keep input order)."""
        scores = probabilities[:, self.rank_index[arm]]
        return [item_ids[i] for i in np.argsort(-scores, kind="stable")]

    async def _timed(self, arm: str, x: np.ndarray) -> tuple[np.ndarray | None, BaseException | None, float]:
        t0 = time.perf_counter()
        try:
            p = await self.call(arm, x)
        except Exception as exc:
            return None, exc, (time.perf_counter() - t0) * 1000.0
        return p, None, (time.perf_counter() - t0) * 1000.0

    def _prediction(self, arm: str, probabilities: np.ndarray, item_ids: list | None) -> Any:
        return self.ranking(arm, probabilities, item_ids) if item_ids is not None else self.labeler[arm](probabilities)

    # -- shadows: strictly off the client's path -----------------------------------------------
    def spawn_shadows(self, arms: tuple[str, ...], primary: str, x: np.ndarray, request_id: str, item_ids) -> None:
        """Run the shadow arms in a background task after the answer left; skipped (counted) when
        MAX_SHADOW_TASKS requests' shadows are already running."""
        arms = tuple(a for a in arms if a != primary and a in self.versions)
        if not arms:
            return
        if len(self._background) >= MAX_SHADOW_TASKS:
            self.shadow_counts["skipped"] += len(arms)
            return
        self.shadow_counts["started"] += len(arms)
        task = asyncio.get_running_loop().create_task(self._shadow(arms, x, request_id, item_ids))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _shadow(self, arms: tuple[str, ...], x: np.ndarray, request_id: str, item_ids) -> None:
        await asyncio.sleep(0)  # let the primary answer leave first
        timed = await asyncio.gather(*(self._timed(a, x) for a in arms))
        for arm, (p, exc, ms) in zip(arms, timed):
            if exc is not None:
                self.shadow_counts["errors"] += 1
                if not isinstance(exc, ArmFailure):  # injected faults are expected: no traceback flood
                    log.warning("shadow arm %s failed on request %s: %r", arm, request_id, exc)
                self.observe(Outcome(request_id, arm, ms, error=True))
            else:
                self.observe(Outcome(request_id, arm, ms, prediction=self._prediction(arm, p, item_ids)))

    def shadow_summary(self) -> dict:
        return {**self.shadow_counts, "running": len(self._background)}

    # -- explanations --------------------------------------------------------------------------
    def check_explainable(self, arms: list[str], shape: tuple[int, ...]) -> None:
        """``shape``: (instances, features) of the request."""
        """RequestError before any model runs: 409 without a baseline, 413 when too many rows."""
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

    async def explain(self, arm: str, x: np.ndarray | dict) -> list[list[list]]:
        """Per instance, its top features as ``[feature, attribution]``, largest first: how much
        each feature's value pushed the answer toward the predicted class (a regression: moved
        the predicted value), compared with an average case (the training mean; for typed raw
        rows the mean of a number, the most frequent value of a category or a bool). One model
        call for the whole request (any placement; the explanation is not a served answer, so no
        fault injection and no batching queue)."""
        f = len(self.feature_names)
        if isinstance(x, dict):
            n = len(next(iter(x.values())))
            batch = occlusion_feeds(x, self.layout, self.feature_names, self.baselines[arm])
        else:
            n = x.shape[0]
            batch = occlusion_batch(x, self.baselines[arm])
        runner = self.local.get(arm)
        if runner is not None:
            out = runner.predict(batch)
        else:
            out = await self.remote[arm].handle.predict.remote(batch)
        if arm in self.regression:
            attributions = regression_attributions(out, n, f)
        else:
            attributions, _ = attributions_from_probabilities(out, n, f)
        return top_attributions(attributions, self.feature_names, EXPLAIN_TOP)

    # -- read-only -----------------------------------------------------------------------------
    def fault_settings(self) -> dict:
        return {a: {"error_rate": f.error_rate, "extra_latency_ms": f.delay_s * 1000.0} for a, f in self.faults.items()}

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


class _RemoteArm:
    """A remote arm's handle, awaited the way a local runner is called."""

    def __init__(self, handle: Any, model: ServedModel, batched: bool = False):
        self.handle = handle
        self.predict = handle.predict_batched if batched else handle.predict
        self.classes = np.asarray([_plain(c) for c in model.classes], dtype=object)
        self.regression = getattr(model, "task", "classification") == "regression"

    def labels(self, probabilities: np.ndarray) -> list:
        if self.regression:
            return probabilities[:, 0].astype(np.float64).tolist()
        return self.classes[probabilities.argmax(axis=1)].tolist()


def _baselines(models: Sequence[ServedModel], n_features: int) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Each arm's training means (what ``"explain": true`` compares with), or why it has none."""
    baselines: dict[str, np.ndarray] = {}
    missing: dict[str, str] = {}
    for m in models:
        if m.baseline is None:
            missing[m.arm] = NO_BASELINE
            continue
        if m.inputs is not None:  # raw values of an average case: numbers, booleans, categories
            if len(m.baseline) != n_features:
                missing[m.arm] = f"no usable baseline for explanations: {len(m.baseline)} values for {n_features} features"
            else:
                baselines[m.arm] = list(m.baseline)
            continue
        b = np.asarray(m.baseline, dtype=np.float64).ravel()
        if b.size != n_features or not np.isfinite(b).all():
            missing[m.arm] = (
                f"no usable baseline for explanations: arm '{m.arm}' has {b.size} training means "
                f"(finite: {bool(np.isfinite(b).all())}) for {n_features} features"
            )
            log.warning("arm %s: %s", m.arm, missing[m.arm])
            continue
        baselines[m.arm] = b.astype(np.float32)
    return baselines, missing


def _class_index(classes: list, wanted: Any) -> int:
    """Index of the ranking class (None: the last); deploy() validated that it exists."""
    if wanted is None:
        return len(classes) - 1
    for i, c in enumerate(classes):
        if c == wanted or str(c) == str(wanted):  # "1" in a recipe means the class 1
            return i
    raise ServingError(f"serve.rank_class: {wanted!r} is not one of the classes {classes}")


def _plain(value: Any) -> Any:
    """numpy scalars -> Python values, so classes serialise to JSON."""
    return value.item() if hasattr(value, "item") else value
