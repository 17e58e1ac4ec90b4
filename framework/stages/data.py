"""Data stages: load, check, version (and split), label."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..artifacts import write_json
from ..components import DataSplits
from ..context import RunStageContext
from ..errors import DataCheckError, StageError
from ..plan import DataVersioning, DataWindow, Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_data(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    dataset = stage.component.build().load(ctx)
    if dataset.target not in dataset.frame.columns:
        raise StageError(f"data ({stage.component.type}): target column '{dataset.target}' is not in the frame")
    if dataset.classes is None:
        dataset.classes = sorted(dataset.frame[dataset.target].unique().tolist())
    state.dataset = dataset
    ctx.metric("rows", int(len(dataset.frame)))
    ctx.metric("features", len(dataset.features))
    ctx.metric("classes", len(dataset.classes))


def run_checks(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Every check runs and reports; then the core enforces each check's ``severity`` from its
    report: ``fail`` stops the run naming what failed, ``warn`` is logged and the run goes on."""
    reports, blocking = [], []
    for planned in stage.components:
        report = planned.build().check(state.dataset, ctx)
        reports.append({**dataclasses.asdict(report), "key": planned.key, "severity": planned.severity})
        if report.passed:
            continue
        if planned.severity == "fail":
            blocking.append((planned, report))
        else:
            ctx.logger.warning("check %s (%s, severity warn) failed: %s", planned.key, planned.type, report.failures)
    write_json(ctx.out_dir / "reports.json", reports)
    passed = sum(r["passed"] for r in reports)
    ctx.metric("checks_passed", f"{passed}/{len(reports)}")
    if blocking:
        failures = [dict(f, check=f.get("check", report.check)) for _, report in blocking for f in report.failures]
        lines = "; ".join(f"{p.key} ({p.type}): {_describe_failures(r.failures)}" for p, r in blocking)
        raise DataCheckError(f"data checks failed (severity fail): {lines}. Reports: {ctx.out_dir / 'reports.json'}", failures)


def _describe_failures(failures: list[dict], most: int = 3) -> str:
    if not failures:
        return "failed (no details reported)"
    shown = []
    for f in failures[:most]:
        rows = f.get("rows") or []
        where = f" rows {rows[:5]}{'...' if len(rows) > 5 else ''}" if rows else ""
        shown.append(f"column {f.get('column')!r} check {f.get('check')!r}{where}")
    more = f" (+{len(failures) - most} more)" if len(failures) > most else ""
    return ", ".join(shown) + more


def split(plan: Plan, dataset: Any) -> DataSplits:
    """A seeded train / validation / test split, stratified for classification."""
    from sklearn.model_selection import train_test_split

    cfg = plan.recipe.split
    frame = dataset.frame
    strat = frame[dataset.target] if cfg.stratify and dataset.task == "classification" else None
    rest, test = train_test_split(frame, test_size=cfg.test, random_state=plan.recipe.seed, stratify=strat)
    strat_rest = rest[dataset.target] if strat is not None else None
    train, val = train_test_split(
        rest, test_size=cfg.val / (1.0 - cfg.test), random_state=plan.recipe.seed + 1, stratify=strat_rest
    )
    return DataSplits(dataset=dataset, train=train, val=val, test=test)


def run_version(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Store the loaded rows as a data version (``data.append``: as a new batch on top of the
    dataset's newest version), keep the rows ``data.window`` names, and split those."""
    dataset = state.dataset
    versioning = data_versioning(plan)
    meta = {"description": dataset.description, "recipe": plan.recipe.name}
    if versioning.append:
        appended = state.registry.append_data(dataset.name, dataset.frame, lambda frame: _data_schema(dataset, frame), meta)
        version, frame = appended.version, appended.frame
        batches = state.registry.batches(version)
        if appended.repeated:
            ctx.logger.info("this batch is already the newest of %s (%s): nothing appended", dataset.name, version.ref)
        ctx.metric("batch_rows", int(len(dataset.frame)))
        ctx.metric("batches", len(batches))
        ctx.metric("appended", not appended.repeated)
    else:
        version = state.registry.put_data(dataset.name, dataset.frame, schema=_data_schema(dataset, dataset.frame), meta=meta)
        frame = dataset.frame
    components.hooks.data_versioned(version)
    state.data_version = version
    ctx.metric("data_version", version.ref)
    ctx.metric("stored_rows", int(len(frame)))
    if versioning.window is not None:
        frame = window_rows(versioning.window, frame, state.registry.batches(version), dataset.time)
        ctx.metric("data_window", {**versioning.window.describe(), "rows": int(len(frame))})
    if frame is not dataset.frame:
        dataset = dataclasses.replace(dataset, frame=frame, classes=_classes(dataset, frame))
    state.dataset = dataset
    state.splits = split(plan, dataset)
    split_index = {p: [str(i) for i in getattr(state.splits, p).index] for p in ("train", "val", "test")}
    write_json(ctx.out_dir / "split.json", {"seed": plan.recipe.seed, **split_index})
    ctx.metric("train_rows", len(state.splits.train))
    ctx.metric("val_rows", len(state.splits.val))
    ctx.metric("test_rows", len(state.splits.test))


def data_versioning(plan: Plan) -> DataVersioning:
    """``data.append`` / ``data.window`` of the plan (defaults when the plan has no data source)."""
    data = plan.stage("data")
    versioning = data.components[0].versioning if data.components else None
    return versioning or DataVersioning()


def window_lineage(plan: Plan, state: RunState) -> dict | None:
    """What a model's lineage records of the window its data was cut to: the window, the
    batches (versions) it spans for ``versions: N``, and the rows it kept."""
    window = data_versioning(plan).window
    if window is None or state.data_version is None:
        return None
    out: dict[str, Any] = {**window.describe(), "rows": int(len(state.splits.dataset.frame)) if state.splits else None}
    if window.versions:
        out["batches"] = [b["version"] for b in state.registry.batches(state.data_version)[-window.versions:]]
    return out


def _data_schema(dataset: Any, frame: Any) -> dict:
    schema = {
        "features": list(dataset.features),
        "target": dataset.target,
        "classes": list(_classes(dataset, frame) or []),
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
    }
    # a declared key / time column is what diffs match rows by and windows cut by
    if dataset.key:
        schema["key"] = dataset.key
    if dataset.time:
        schema["time"] = dataset.time
    return schema


def _classes(dataset: Any, frame: Any) -> list | None:
    """The dataset's classes, plus any an older batch brought (declared ones keep their order)."""
    if dataset.classes is None or dataset.task != "classification" or dataset.target not in frame.columns:
        return dataset.classes
    known = list(dataset.classes)
    seen = set(known)
    extra = [c for c in frame[dataset.target].dropna().unique().tolist() if c not in seen]
    return known + sorted(extra, key=str)


def window_rows(window: DataWindow, frame: Any, batches: list[dict], time_column: str | None) -> Any:
    """The rows of ``frame`` the window keeps: those added by the newest ``versions`` batches,
    then those whose time column is in ``[since, until)``. An empty result is an error."""
    import pandas as pd

    kept = frame
    described = []
    if window.versions:
        newest = batches[-window.versions:]
        start = newest[0]["start"]
        kept = kept.iloc[start:newest[-1]["stop"]]
        described.append(f"the newest {len(newest)} of {len(batches)} batch(es)")
    if window.since or window.until:
        if not time_column:
            raise StageError("data.window: since/until need the rows' time column, and the data source "
                             "declared none (Dataset.time); use data.window.versions or a source with a time column")
        if time_column not in kept.columns:
            raise StageError(f"data.window: the time column '{time_column}' is not in the frame")
        times = _as_times(kept[time_column], time_column)
        mask = pd.Series(True, index=kept.index)
        if window.since:
            mask &= times >= _bound(window.since, times)
        if window.until:
            mask &= times < _bound(window.until, times)
        kept = kept[mask.to_numpy()]
        described.append(f"{time_column} in [{window.since or '-inf'}, {window.until or '+inf'})")
    if len(kept) == 0:
        span = ""
        if time_column and time_column in frame.columns and len(frame):
            times = _as_times(frame[time_column], time_column)
            span = f"; the stored rows' {time_column} runs from {times.min()} to {times.max()}"
        raise StageError(f"data.window {window.describe()} keeps no rows ({' and '.join(described)}){span}")
    return kept


def _as_times(column: Any, name: str) -> Any:
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        return column
    if pd.api.types.is_numeric_dtype(column):
        raise StageError(f"data.window: time column '{name}' holds numbers ({column.dtype}), not dates")
    try:
        return pd.to_datetime(column)
    except (ValueError, TypeError) as exc:
        raise StageError(f"data.window: time column '{name}' does not parse as dates: {exc}") from None


def _bound(iso: str, times: Any) -> Any:
    """An ISO bound comparable with the column: a naive bound on a zoned column is in its zone."""
    import pandas as pd

    bound = pd.Timestamp(iso)
    tz = getattr(times.dt, "tz", None)
    if tz is not None and bound.tzinfo is None:
        return bound.tz_localize(tz)
    if tz is None and bound.tzinfo is not None:
        return bound.tz_convert("UTC").tz_localize(None)
    return bound


def run_label(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    state.dataset = stage.component.build().label(state.dataset, ctx)
    state.splits = split(plan, state.dataset)
    ctx.metric("rows", len(state.dataset.frame))
