"""Data stages: load, check, version (and split), label."""
from __future__ import annotations

import dataclasses
from typing import Any

from ..artifacts import write_json
from ..components import DataSplits
from ..context import RunStageContext
from ..errors import DataCheckError, StageError
from ..plan import Plan, PlannedStage
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
    dataset = state.dataset
    schema = {
        "features": list(dataset.features),
        "target": dataset.target,
        "classes": list(dataset.classes),
        "dtypes": {c: str(t) for c, t in dataset.frame.dtypes.items()},
    }
    version = state.registry.put_data(
        dataset.name, dataset.frame, schema=schema, meta={"description": dataset.description, "recipe": plan.recipe.name}
    )
    components.hooks.data_versioned(version)
    state.data_version = version
    state.splits = split(plan, dataset)
    split_index = {p: [str(i) for i in getattr(state.splits, p).index] for p in ("train", "val", "test")}
    write_json(ctx.out_dir / "split.json", {"seed": plan.recipe.seed, **split_index})
    ctx.metric("data_version", version.ref)
    ctx.metric("train_rows", len(state.splits.train))
    ctx.metric("val_rows", len(state.splits.val))
    ctx.metric("test_rows", len(state.splits.test))


def run_label(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    state.dataset = stage.component.build().label(state.dataset, ctx)
    state.splits = split(plan, state.dataset)
    ctx.metric("rows", len(state.dataset.frame))
