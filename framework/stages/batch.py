"""Batch prediction: the exported model scores a table with the recipe's batch predictor, and the
answers are stored as a versioned prediction table tied to the model and data versions.

Which rows (``batch.data``): the run's test split, the run's whole data version, or any
registered data version. Each row of the table: ``key`` (``batch.key``'s column, else the
frame's index, as text), ``prediction`` and ``computed_at`` (UTC, when its batch was scored).
"""
from __future__ import annotations

import logging
import time
from typing import Any

from ..context import RunStageContext
from ..errors import StageError
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_batch(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    config = stage.component.config
    where = f"batch ({stage.component.type})"
    if state.exported is None:
        raise StageError(f"{where}: no exported model to score with (the export stage did not run)")
    frame, data_ref, rows_of = batch_frame(config, state, ctx, where)
    if getattr(config, "where", None) is not None:
        frame = filtered(frame, config.where, where)
        rows_of = f"{rows_of} where {config.where}"
        if not len(frame):
            raise StageError(f"{where}: batch.where={config.where!r} keeps no row of batch.data={config.data!r}")
    missing = [f for f in state.exported.schema.names if f not in frame.columns]
    if missing:
        raise StageError(f"{where}: batch.data={getattr(config, 'data', 'test')!r} lacks the model's feature column(s) "
                         f"{missing[:5]}; its columns: {list(frame.columns)[:10]}")
    t0 = time.perf_counter()
    predictions = stage.component.build().predict(state.exported, frame, ctx)
    seconds = time.perf_counter() - t0
    table = prediction_table(frame, predictions, row_key(config, state, frame), where)
    ctx.metric("rows", len(table))
    ctx.metric("rows_per_s", round(len(table) / seconds, 1) if seconds > 0 else None)
    ctx.metric("table_data_version", data_ref)
    if getattr(config, "table", True) and state.registry is not None:
        model_ref = state.model_version.ref if state.model_version is not None else None
        version = state.registry.put_predictions(
            plan.recipe.name, table,
            lineage={"model_version": model_ref, "data_version": data_ref, "rows": rows_of,
                     "predictor": stage.component.type},
            meta={"recipe": plan.recipe.name})
        ctx.metric("prediction_table", version.ref)
        ctx.metric("table_model_version", model_ref)
        state.prediction_table = version
        lookup = getattr(config, "lookup", None)
        if lookup is not None and lookup.enabled:
            load_lookup(state, version, lookup, where)
            if int(lookup.probe_requests) > 0:
                probe_lookup(state, config, int(lookup.probe_requests), ctx, where, plan.recipe.seed)


def load_lookup(state: RunState, version: Any, lookup: Any, where: str) -> dict:
    """Load the prediction table into the running app (``POST -/admin/lookup``): it keeps answering."""
    import httpx

    from ..registry.versions import PREDICTIONS_FILE

    app = state.app
    if app is None:
        raise StageError(f"{where}: batch.lookup.enabled but no app is being served (the serve stage did not run)")
    body = {"path": state.registry.file_location(version, PREDICTIONS_FILE), "table": version.ref,
            "model_version": version.lineage.get("model_version"), "max_age_s": float(lookup.max_age_s),
            "fallback": lookup.fallback}
    try:
        r = httpx.post(app.url + "-/admin/lookup", json=body, headers=app.admin_headers(), timeout=120, trust_env=False)
    except httpx.HTTPError as exc:
        raise StageError(f"{where}: loading {version.ref} into the app at {app.url} failed: {exc}") from exc
    if r.status_code != 200:
        raise StageError(f"{where}: the app at {app.url} refused the prediction table {version.ref}: "
                         f"{r.status_code} {r.text[:300]}")
    return r.json()["lookup"]


def probe_lookup(state: RunState, config: Any, n: int, ctx: RunStageContext, where: str, seed: int) -> None:
    """Look up ``n`` rows sampled from the run's whole data (precomputed or not): hit rate,
    staleness and latency, as a client of the served app sees them."""
    import httpx
    import numpy as np

    from ..components import raw_instances

    if state.dataset is None:
        raise StageError(f"{where}: batch.lookup.probe_requests needs the run's data")
    frame = state.dataset.frame
    sample = frame.sample(n=min(n, len(frame)), random_state=seed) if n < len(frame) else frame
    key = row_key(config, state, sample)
    keys = sample[key].astype(str).tolist() if key else [str(k) for k in sample.index]
    instances = raw_instances(sample, state.exported.schema.names)
    app = state.app
    sources = {"precomputed": 0, "online": 0, "not_found": 0}
    stale, ages, latencies = 0, [], []
    with httpx.Client(timeout=30, trust_env=False) as client:
        for k, instance in zip(keys, instances):
            t0 = time.perf_counter()
            r = client.post(app.url + "lookup", json={"key": k, "instance": instance}, headers=app.client_headers())
            latencies.append((time.perf_counter() - t0) * 1000.0)
            if r.status_code == 404:
                sources["not_found"] += 1
                continue
            if r.status_code != 200:
                raise StageError(f"{where}: lookup of key {k!r} answered {r.status_code}: {r.text[:300]}")
            answer = r.json()
            sources[answer["source"]] += 1
            if answer["source"] == "precomputed":
                ages.append(answer["age_s"])
                stale += bool(answer["stale"])
    total = len(keys)
    ctx.metric("lookup_requests", total)
    ctx.metric("hit_rate", round(sources["precomputed"] / total, 4) if total else None)
    ctx.metric("lookup_online", sources["online"])
    ctx.metric("lookup_not_found", sources["not_found"])
    ctx.metric("stale_share", round(stale / len(ages), 4) if ages else 0.0)
    ctx.metric("age_p50_s", round(float(np.median(ages)), 3) if ages else None)
    ctx.metric("lookup_p50_ms", round(float(np.median(latencies)), 3) if latencies else None)


def row_key(config: Any, state: RunState, frame: Any) -> str | None:
    """``batch.key``, else the data's own key column when the frame has it, else None (the index)."""
    key = getattr(config, "key", None)
    if key is None and state.dataset is not None and getattr(state.dataset, "key", None) in frame.columns:
        key = state.dataset.key
    return key


def batch_frame(config: Any, state: RunState, ctx: RunStageContext, where: str) -> tuple[Any, str | None, str]:
    """(rows to score, the data version they are from, which rows) for ``batch.data``."""
    data = getattr(config, "data", "test")
    if data == "test":
        if state.splits is None:
            raise StageError(f"{where}: batch.data='test' but this run has no data splits")
        return state.splits.test, state.data_ref, "test"
    if data == "all":
        if state.dataset is None:
            raise StageError(f"{where}: batch.data='all' but this run loaded no data")
        return state.dataset.frame, state.data_ref, "all"
    registered = ctx.registered_data(data)  # StageError naming the ref when it does not exist
    return registered.frame, registered.ref, "all"


def filtered(frame: Any, where_filter: str | None, where: str) -> Any:
    """The rows ``batch.where`` keeps (the filter grammar, evaluated on the frame; never code)."""
    if where_filter is None:
        return frame
    from ..expressions import ExpressionError, parse_filter

    try:
        return frame[parse_filter(where_filter).mask(frame)]
    except ExpressionError as exc:
        raise StageError(f"{where}: batch.where: {exc}") from None


def prediction_table(frame: Any, predictions: Any, key: str | None, where: str) -> Any:
    """``key``, ``prediction``, ``computed_at`` (UTC), one row per scored row, in the frame's order."""
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        if "prediction" not in predictions.columns:
            raise StageError(f"{where}: the predictor returned a frame without a 'prediction' column")
        computed = predictions["computed_at"] if "computed_at" in predictions.columns else None
        values = predictions["prediction"]
    else:
        values, computed = predictions, None
    values = list(values.tolist() if hasattr(values, "tolist") else values)
    if len(values) != len(frame):
        raise StageError(f"{where}: the predictor returned {len(values)} predictions for {len(frame)} rows")
    if key is not None:
        if key not in frame.columns:
            raise StageError(f"{where}: batch.key={key!r} is not a column; columns: {list(frame.columns)[:10]}")
        keys = frame[key].astype(str).tolist()
    else:
        keys = [str(k) for k in frame.index]
    now = pd.Timestamp.now(tz="UTC")
    computed_at = (pd.to_datetime(list(computed.tolist()), utc=True) if computed is not None
                   else pd.DatetimeIndex([now] * len(values)))
    return pd.DataFrame({"key": keys, "prediction": values, "computed_at": computed_at})


class BatchSchedule:
    """Re-runs the batch stage while the app keeps serving (``batch.schedule``, and
    ``batch.lookup.recompute_stale``): every ``every_s`` seconds, when ``batch.data`` resolves to
    a new data version, or when the loaded table is older than ``max_age_s``. Each re-run stores a
    new prediction table and loads it into the running app, which swaps it in between requests."""

    def __init__(self, plan: Plan, stage: PlannedStage, state: RunState, components: Components, run_dir: Any,
                 clock: Any = time.time):
        config = stage.component.config
        self.plan, self.stage, self.state, self.components = plan, stage, state, components
        self.run_dir, self.clock = run_dir, clock
        self.schedule = getattr(config, "schedule", None)
        self.lookup = getattr(config, "lookup", None)
        now = clock()
        self.last_run = self.last_check = now
        self.data_id = self._data_id()
        self.runs = 0
        self.log = logging.getLogger("framework.stage.batch")

    @classmethod
    def from_run(cls, plan: Plan, state: RunState, components: Components, run_dir: Any) -> "BatchSchedule | None":
        """The schedule of this run's batch stage, or None when its recipe declares none."""
        if not plan.enabled("batch") or state.exported is None:
            return None
        config = plan.stage("batch").component.config
        schedule, lookup = getattr(config, "schedule", None), getattr(config, "lookup", None)
        if not ((schedule is not None and (float(schedule.every_s) > 0 or schedule.on_new_data))
                or (lookup is not None and lookup.enabled and lookup.recompute_stale)):
            return None
        return cls(plan, plan.stage("batch"), state, components, run_dir)

    def _data_id(self) -> str | None:
        data = getattr(self.stage.component.config, "data", "test")
        if data in ("test", "all") or self.state.registry is None:
            return None
        try:
            return self.state.registry.get(data, kind="data").id
        except Exception:  # not there yet: the next check looks again
            return None

    def due(self, now: float) -> str | None:
        """Why a re-run is due now, or None."""
        s, lookup = self.schedule, self.lookup
        if s is not None and float(s.every_s) > 0 and now - self.last_run >= float(s.every_s):
            return f"every {float(s.every_s):g} s"
        if s is not None and s.on_new_data and now - self.last_check >= float(s.check_s):
            self.last_check = now
            current = self._data_id()
            if current is not None and current != self.data_id:
                return f"new data version {current[:12]}"
        table = self.state.prediction_table
        if lookup is not None and lookup.enabled and lookup.recompute_stale and table is not None:
            oldest = table.metrics.get("computed_from")
            if oldest is not None:
                import pandas as pd

                age = now - pd.Timestamp(oldest).timestamp()
                if age > float(lookup.max_age_s):
                    return f"table {table.ref} is {age:.0f} s old (max_age_s {float(lookup.max_age_s):g})"
        return None

    def tick(self, now: float | None = None) -> dict | None:
        """Re-run the stage if due; its metrics (with ``reason``), or None when nothing was due."""
        now = self.clock() if now is None else now
        reason = self.due(now)
        if reason is None:
            return None
        self.runs += 1
        ctx = RunStageContext(stage="batch", out_dir=self.run_dir / "stages" / f"batch-rerun-{self.runs:03d}",
                              seed=self.plan.recipe.seed, logger=self.log, registry=self.state.registry)
        self.log.info("batch re-run %d: %s", self.runs, reason)
        run_batch(self.plan, self.stage, self.state, ctx, self.components)
        self.last_run = self.clock()
        self.data_id = self._data_id()
        return {"reason": reason, **ctx.metrics}
