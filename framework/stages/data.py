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
    if dataset.classes is None and dataset.task != "regression":  # a regression target has no classes
        dataset.classes = sorted(dataset.frame[dataset.target].unique().tolist())
    state.dataset = dataset
    ctx.metric("rows", int(len(dataset.frame)))
    ctx.metric("features", len(dataset.features))
    if dataset.classes is not None:
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
    """A seeded train / validation / test split, stratified for classification.

    A table too small for the recipe's fractions, or a class with too few rows for a stratified
    split, is a DataCheckError that says how many rows there are and what the split needs."""
    from sklearn.model_selection import train_test_split

    cfg = plan.recipe.split
    frame = dataset.frame
    stratified = bool(cfg.stratify and dataset.task == "classification")  # a regression target is not stratified
    val_of_rest = cfg.val / (1.0 - cfg.test)
    _check_split_size(dataset, len(frame), cfg.val, cfg.test, val_of_rest)
    if stratified:
        _check_stratifiable(dataset, frame, cfg.test, "test", "the whole table", (cfg.val, cfg.test, val_of_rest))
    strat = frame[dataset.target] if stratified else None
    try:
        rest, test = train_test_split(frame, test_size=cfg.test, random_state=plan.recipe.seed, stratify=strat)
        if stratified:
            _check_stratifiable(dataset, rest, val_of_rest, "val", "the rows left after the test part",
                                (cfg.val, cfg.test, val_of_rest))
        strat_rest = rest[dataset.target] if stratified else None
        train, val = train_test_split(rest, test_size=val_of_rest, random_state=plan.recipe.seed + 1, stratify=strat_rest)
    except ValueError as exc:  # a case the checks above did not foresee: still say where
        raise DataCheckError(f"split: cannot split data '{dataset.name}' ({len(frame)} rows, val {cfg.val}, "
                             f"test {cfg.test}, stratified: {stratified}): {exc}") from None
    return DataSplits(dataset=dataset, train=train, val=val, test=test)


def _split_sizes(n: int, val: float, test: float, val_of_rest: float) -> tuple[int, int, int]:
    """(train, val, test) rows of an n-row table, rounded as scikit-learn rounds them."""
    import math

    n_test = math.ceil(test * n)
    n_val = math.ceil(val_of_rest * (n - n_test))
    return n - n_test - n_val, n_val, n_test


def _check_split_size(dataset: Any, n: int, val: float, test: float, val_of_rest: float) -> None:
    sizes = _split_sizes(n, val, test, val_of_rest)
    if min(sizes) >= 1:
        return
    needed = next(m for m in range(max(n, 1), 100_000) if min(_split_sizes(m, val, test, val_of_rest)) >= 1)
    train, n_val, n_test = sizes
    raise DataCheckError(
        f"split: data '{dataset.name}' has {n} rows; split.val={val} and split.test={test} would leave "
        f"{train} train, {n_val} val and {n_test} test rows, and each part needs at least one: the split needs "
        f"at least {needed} rows. Gather more rows",
        [{"column": None, "check": "split_size", "rows": [], "rows_needed": needed, "rows_found": n}],
    )


def _check_stratifiable(dataset: Any, frame: Any, fraction: float, part: str, of: str,
                        fractions: tuple[float, float, float]) -> None:
    """What scikit-learn's stratified split needs of ``frame``: two rows of every class, and at
    least one row per class on each side of the cut (``fractions``: val, test, val of the rest)."""
    import math

    counts = frame[dataset.target].value_counts()
    hint = ("; or set split.stratify=false" if frame[dataset.target].dtype.kind != "f" or counts.max() > 1
            else "; a float target with a value per row: is it a regression? Set data.task: regression")
    scarce = counts[counts < 2]
    if len(scarce):
        shown = ", ".join(f"{label!r} ({count} row{'s' if count != 1 else ''})" for label, count in scarce.head(10).items())
        raise DataCheckError(
            f"split: data '{dataset.name}' cannot be split stratified on '{dataset.target}': in {of}, "
            f"{len(scarce)} class{'es' if len(scarce) != 1 else ''} {'have' if len(scarce) != 1 else 'has'} fewer "
            f"than 2 rows: {shown}{' ...' if len(scarce) > 10 else ''}. A stratified split needs at least 2 rows of "
            f"every class (3 to put one in each of train, val and test). Gather more rows of "
            f"{'them' if len(scarce) != 1 else 'it'}, or drop {'them' if len(scarce) != 1 else 'it'}{hint}",
            [{"column": dataset.target, "check": "rows_per_class", "rows": [], "classes": {str(k): int(v) for k, v in scarce.items()}}],
        )
    n, k = len(frame), len(counts)
    cut = math.ceil(fraction * n)
    if cut < k or n - cut < k:
        # the whole table's size at which train, val and test each get a row of every class
        needed = next(m for m in range(k, 10_000_000) if min(_split_sizes(m, *fractions)) >= k)
        raise DataCheckError(
            f"split: data '{dataset.name}' cannot be split stratified on '{dataset.target}': the {part} part of "
            f"{of} ({n} rows) would get {cut} rows and the rest {n - cut}, but a stratified cut needs at least one "
            f"row of each of the {k} classes on both sides. With split.val={fractions[0]} and "
            f"split.test={fractions[1]}, {k} classes need at least {needed} rows in all "
            f"(the data has {len(dataset.frame)}). Gather more rows{hint}",
            [{"column": dataset.target, "check": "rows_per_class", "rows": [], "rows_needed": needed,
              "rows_found": len(dataset.frame)}],
        )


def run_version(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    dataset = state.dataset
    schema = {
        "features": list(dataset.features),
        "target": dataset.target,
        "classes": list(dataset.classes or []),  # a regression has none
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
