"""Batch prediction: the exported model scores a table with the recipe's batch predictor, and the
answers are stored as a versioned prediction table tied to the model and data versions.

Which rows (``batch.data``): the run's test split, the run's whole data version, or any
registered data version. Each row of the table: ``key`` (``batch.key``'s column, else the
frame's index, as text), ``prediction`` and ``computed_at`` (UTC, when its batch was scored).
"""
from __future__ import annotations

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
    missing = [f for f in state.exported.schema.names if f not in frame.columns]
    if missing:
        raise StageError(f"{where}: batch.data={getattr(config, 'data', 'test')!r} lacks the model's feature column(s) "
                         f"{missing[:5]}; its columns: {list(frame.columns)[:10]}")
    t0 = time.perf_counter()
    predictions = stage.component.build().predict(state.exported, frame, ctx)
    seconds = time.perf_counter() - t0
    table = prediction_table(frame, predictions, getattr(config, "key", None), where)
    ctx.metric("rows", len(table))
    ctx.metric("rows_per_s", round(len(table) / seconds, 1) if seconds > 0 else None)
    ctx.metric("data_version", data_ref)
    if getattr(config, "table", True) and state.registry is not None:
        model_ref = state.model_version.ref if state.model_version is not None else None
        version = state.registry.put_predictions(
            plan.recipe.name, table,
            lineage={"model_version": model_ref, "data_version": data_ref, "rows": rows_of,
                     "predictor": stage.component.type},
            meta={"recipe": plan.recipe.name})
        ctx.metric("prediction_table", version.ref)
        ctx.metric("model_version", model_ref)
        state.prediction_table = version


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
