"""Data stages: load, check, version (and split); labeling is ``label.py``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..artifacts import write_json
from ..components import DataSplits
from ..context import RunStageContext
from ..errors import DataCheckError, StageError
from ..plan import DataVersioning, DataWindow, Plan, PlannedComponent, PlannedStage
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
    """Every check runs, in recipe order, and reports; the core enforces each check's ``severity``
    from its report: ``fail`` stops the run (after every check reported) naming what failed,
    ``warn`` is logged and the run goes on, ``quarantine`` takes the flagged rows out of the data
    (kept for the quarantine set the version stage stores; ``readmit: true`` keeps them in).

    A check's ``apply`` (the PII policies) runs right after its ``check``: later checks and stages
    see what it returns, and so do the rows earlier checks quarantined, so the quarantine set
    never holds what a later check removes. Checks that only look at the split run in the
    version stage (:func:`run_split_checks`)."""
    dataset = state.dataset
    ledger = quarantine_ledger(state)
    reports, blocking, summary = [], [], {}
    idle = [f"{p.key} ({p.type})" for p in stage.components if not (p.cls.checks_dataset() or p.cls.checks_splits())]
    if idle:
        raise StageError(f"{', '.join(idle)}: implements neither check(dataset, ctx) nor check_splits(splits, ctx)")
    pending = [p.key for p in stage.components if not p.cls.checks_dataset()]
    for planned in stage.components:
        if not planned.cls.checks_dataset():
            continue
        check = planned.build()
        report = check.check(dataset, ctx)
        checked = dataset
        dataset = _applied(check, planned, checked, report, ctx)
        for entry in ledger:  # rows quarantined earlier get the same treatment as the rows kept
            entry.rows = _applied(check, planned, dataclasses.replace(checked, frame=entry.rows), report, ctx).frame
        outcome, flagged, stops = _enforce(planned, report, dataset.frame.index, ctx)
        if stops:
            blocking.append((planned, stops))
        if flagged and outcome == "quarantine":
            ledger.append(_take_out(planned, dataset.frame, flagged, None))
            dataset = dataclasses.replace(dataset, frame=dataset.frame.drop(index=list(flagged)))
        if flagged:
            summary[f"{planned.key} ({planned.type})"] = _reason_counts(flagged, outcome)
        reports.append(_report_entry(planned, report, outcome, flagged))
    state.dataset = dataset
    write_json(ctx.out_dir / "reports.json", reports)
    passed = sum(r["passed"] for r in reports)
    ctx.metric("checks_passed", f"{passed}/{len(reports)}")
    if pending:
        ctx.metric("checks_after_split", len(pending))
    _quarantine_metrics(ctx, summary, len(dataset.frame))
    if blocking:
        _raise_blocking(blocking, ctx.out_dir / "reports.json")


def run_split_checks(plan: Plan, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Right after the split (``run_version``): the checks that compare its parts
    (``DataCheck.check_splits``: train/test leakage, valuation of training rows against
    validation) run and their severity is enforced; rows they quarantine leave the split that
    holds them. Then this run's quarantined rows (from the checks stage too) are stored as the
    data version ``<dataset>.quarantine`` whose parent and ``meta.data_version`` are the data
    version just stored: never silently dropped."""
    checks = [p for p in plan.stage("checks").components if p.cls.checks_splits()] if plan.enabled("checks") else []
    ledger = quarantine_ledger(state)
    reports, blocking, summary = [], [], {}
    for planned in checks:
        splits = state.splits
        report = planned.build().check_splits(splits, ctx)
        parts = {p: getattr(splits, p) for p in SPLIT_PARTS}
        labels = parts["train"].index.append([parts["val"].index, parts["test"].index])
        outcome, flagged, stops = _enforce(planned, report, labels, ctx)
        if stops:
            blocking.append((planned, stops))
        if flagged and outcome == "quarantine":
            for part, frame in parts.items():
                here = {r: why for r, why in flagged.items() if r in frame.index}
                if here:
                    ledger.append(_take_out(planned, frame, here, part))
                    parts[part] = frame.drop(index=list(here))
            dataset = dataclasses.replace(splits.dataset, frame=splits.dataset.frame.drop(index=list(flagged), errors="ignore"))
            state.dataset = dataset  # a later re-split (labeling) must not bring them back
            state.splits = DataSplits(dataset=dataset, **parts)
        if flagged:
            summary[f"{planned.key} ({planned.type})"] = _reason_counts(flagged, outcome)
        reports.append(_report_entry(planned, report, outcome, flagged))
    if reports:
        write_json(ctx.out_dir / "split_checks.json", reports)
        ctx.metric("split_checks_passed", f"{sum(r['passed'] for r in reports)}/{len(reports)}")
        _quarantine_metrics(ctx, summary, None)
    stored = store_quarantine(plan, state, components)
    if stored is not None:
        ctx.metric("quarantine_set", stored.ref)
        ctx.metric("quarantine_set_rows", int(stored.metrics.get("rows", 0)))
        ctx.logger.info("quarantine set %s: %s rows held out of data version %s", stored.ref,
                        stored.metrics.get("rows"), state.data_version.ref)
    if blocking:
        _raise_blocking(blocking, ctx.out_dir / "split_checks.json")


# ---------------------------------------------------------------------------------------------
# Quarantine: rows a check flags leave the data with their reason, into a versioned set
# ---------------------------------------------------------------------------------------------
SPLIT_PARTS = ("train", "val", "test")
#: bookkeeping columns of a quarantine set, beside the quarantined rows' own columns; a data
#: column of the same name pushes ours to ``quarantine_<name>`` (the set's schema names them)
QUARANTINE_COLUMNS = ("check", "reason", "evidence", "score", "split")
#: flagged rows listed per check in reports.json (the quarantine set holds every one)
REPORTED_FLAGGED = 20


def quarantine_name(dataset_name: str) -> str:
    """The registry name of a dataset's quarantine set."""
    return f"{dataset_name}.quarantine"


@dataclass
class Quarantined:
    """The rows one check took out: their values (as the data held them) and why."""

    key: str  # checks[i]
    type: str
    split: str | None  # the part they left; None: taken out before the split
    rows: Any  # pandas.DataFrame
    reasons: list[str]
    evidence: list[Any]
    scores: list[Any]


def quarantine_ledger(state: RunState) -> list[Quarantined]:
    """This run's quarantined rows so far: the checks stage fills it, the version stage stores it."""
    return state.quarantine


def store_quarantine(plan: Plan, state: RunState, components: Components) -> Any:
    """Store the ledger as ``<dataset>.quarantine`` tied to ``state.data_version`` (its parent and
    ``meta.data_version``); returns the version, or None when nothing was quarantined."""
    import pandas as pd

    ledger = quarantine_ledger(state)
    if not ledger:
        return None
    if state.data_version is None:
        raise StageError("quarantine: rows were quarantined but no data version was stored to tie them to")
    data_columns = list(dict.fromkeys(c for q in ledger for c in q.rows.columns))
    names = {c: (f"quarantine_{c}" if c in data_columns else c) for c in QUARANTINE_COLUMNS}
    parts = []
    for q in ledger:
        rows = q.rows.copy()
        rows[names["check"]] = f"{q.key} ({q.type})"
        rows[names["reason"]] = q.reasons
        rows[names["evidence"]] = [None if e is None else str(e) for e in q.evidence]
        rows[names["score"]] = pd.array([None if s is None else float(s) for s in q.scores], dtype="Float64")
        rows[names["split"]] = q.split or "before_split"
        parts.append(rows)
    frame = pd.concat(parts)
    counts: dict[str, dict] = {}
    for q in ledger:
        entry = counts.setdefault(f"{q.key} ({q.type})", {"rows": 0, "reasons": {}})
        entry["rows"] += len(q.reasons)
        for reason in q.reasons:
            entry["reasons"][reason] = entry["reasons"].get(reason, 0) + 1
    version = state.data_version
    schema = {"columns": {c: str(t) for c, t in frame.dtypes.items()}, "bookkeeping": names}
    meta = {"data_version": version.ref, "dataset": state.dataset.name, "recipe": plan.recipe.name,
            "rows": len(frame), "checks": counts}
    stored = state.registry.put_data(quarantine_name(state.dataset.name), frame, schema=schema, meta=meta,
                                     parent=f"{version.name}:{version.id}")
    components.hooks.data_versioned(stored)
    return stored


def _applied(check: Any, planned: PlannedComponent, dataset: Any, report: Any, ctx: RunStageContext) -> Any:
    """``check.apply``'s dataset, checked against its contract: same rows, the target kept."""
    out = check.apply(dataset, report, ctx)
    if out is dataset:
        return dataset
    where = f"{planned.key} ({planned.type}).apply"
    if out is None or not hasattr(out, "frame"):
        raise StageError(f"{where} returned {type(out).__name__}, not a Dataset")
    if not out.frame.index.equals(dataset.frame.index):
        raise StageError(f"{where} changed the rows; a check takes rows out only through severity quarantine")
    if out.target not in out.frame.columns:
        raise StageError(f"{where} dropped the target column '{out.target}'")
    missing = [f for f in out.features if f not in out.frame.columns]
    if missing:
        raise StageError(f"{where} left features {missing[:5]} that are not columns of its frame")
    return out


def _flagged_rows(report: Any) -> tuple[dict, list[dict]]:
    """label -> (reason, evidence, score) of every row a report flags, and the failures whose rows
    the core cannot take out (table-wide ones, or those listing a sample of their rows)."""
    flagged: dict = {}
    if report.flagged:
        for f in report.flagged:
            flagged.setdefault(f["row"], (str(f.get("reason") or report.check), f.get("evidence"), f.get("score")))
        return flagged, [f for f in report.failures if not f.get("rows")]
    uncovered = []
    for f in report.failures:
        rows = list(f.get("rows") or [])
        if not rows or int(f.get("count", len(rows))) > len(rows):
            uncovered.append(f)
        reason = str(f.get("check") or report.check) + (f" ({f['column']})" if f.get("column") is not None else "")
        for row in rows:
            flagged.setdefault(row, (reason, None, None))
    return flagged, uncovered


def _enforce(planned: PlannedComponent, report: Any, index: Any, ctx: RunStageContext) -> tuple[str, dict, list[dict]]:
    """What a report means under its check's severity: (outcome, flagged rows, failures that stop
    the run). Outcomes: passed, fail, warn, quarantine, readmit."""
    where = f"{planned.key} ({planned.type})"
    if report.passed:
        return "passed", {}, []
    severity = planned.severity or "fail"
    if severity == "fail":
        return "fail", {}, list(report.failures) or [{"column": None, "check": report.check, "rows": []}]
    if severity == "warn":
        ctx.logger.warning("check %s, severity warn, failed: %s", where, _describe_failures(report.failures))
        return "warn", {}, []
    flagged, uncovered = _flagged_rows(report)
    if flagged:
        if not index.is_unique:
            raise StageError(f"{where}: severity quarantine names rows by label, but the frame's index has duplicate "
                             "labels; give the data source a unique index")
        strangers = [r for r in flagged if r not in index]
        if strangers:
            raise StageError(f"{where} flagged rows {strangers[:5]} that are not labels of the data's index")
    stops = [dict(f, why="names no rows to quarantine" if not f.get("rows") else "lists a sample of its rows")
             for f in uncovered]
    if not flagged and not stops:  # failed, but said nothing the core can act on
        stops = [{"column": None, "check": report.check, "rows": [], "why": "names no rows to quarantine"}]
    outcome = "readmit" if planned.readmit else "quarantine"
    if flagged:
        counts = ", ".join(f"{k}: {v}" for k, v in _reason_counts(flagged, outcome)["reasons"].items())
        verb = "flagged and re-admitted (readmit: true)" if planned.readmit else "quarantined"
        ctx.logger.warning("check %s: %d rows %s (%s)", where, len(flagged), verb, counts)
    return outcome, flagged, stops


def _take_out(planned: PlannedComponent, frame: Any, flagged: dict, split: str | None) -> Quarantined:
    labels = list(flagged)
    why = [flagged[r] for r in labels]
    return Quarantined(planned.key, planned.type, split, frame.loc[labels].copy(),
                       [w[0] for w in why], [w[1] for w in why], [w[2] for w in why])


def _reason_counts(flagged: dict, outcome: str) -> dict:
    reasons: dict[str, int] = {}
    for reason, _, _ in flagged.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    return {"rows": len(flagged), "reasons": reasons, "readmitted": outcome == "readmit"}


def _quarantine_metrics(ctx: RunStageContext, summary: dict, rows_left: int | None) -> None:
    """How many rows each check took out (or re-admitted), and why: stage metrics, hence the summary."""
    if not summary:
        return
    out = sum(s["rows"] for s in summary.values() if not s["readmitted"])
    back = sum(s["rows"] for s in summary.values() if s["readmitted"])
    ctx.metric("quarantined_rows", out)
    if back:
        ctx.metric("readmitted_rows", back)
    ctx.metric("quarantine", summary)
    if rows_left is not None and out:
        ctx.metric("rows", rows_left)


def _report_entry(planned: PlannedComponent, report: Any, outcome: str, flagged: dict) -> dict:
    # not dataclasses.asdict: ``flagged`` may list a million rows, reports.json gets a sample
    entry = {"key": planned.key, "type": planned.type, "severity": planned.severity, "outcome": outcome,
             "check": report.check, "passed": report.passed, "rows_checked": report.rows_checked,
             "failures": report.failures, "details": report.details}
    if flagged:
        entry["flagged_rows"] = len(flagged)
        entry["flagged_sample"] = [{"row": r, "reason": w[0], "evidence": w[1], "score": w[2]}
                                   for r, w in list(flagged.items())[:REPORTED_FLAGGED]]
    elif report.flagged:  # warn / fail: what quarantine would have taken out
        entry["flagged_rows"] = len(report.flagged)
        entry["flagged_sample"] = list(report.flagged[:REPORTED_FLAGGED])
    return entry


def _raise_blocking(blocking: list, reports_path: Any) -> None:
    failures = [dict(f, check=f.get("check", p.type)) for p, stops in blocking for f in stops]
    lines = "; ".join(f"{p.key} ({p.type}): {_describe_failures(stops)}" for p, stops in blocking)
    severities = sorted({p.severity or "fail" for p, _ in blocking})
    raise DataCheckError(f"data checks failed (severity {', '.join(severities)}): {lines}. Reports: {reports_path}", failures)


def _describe_failures(failures: list[dict], most: int = 3) -> str:
    if not failures:
        return "failed (no details reported)"
    shown = []
    for f in failures[:most]:
        rows = f.get("rows") or []
        where = f" rows {rows[:5]}{'...' if len(rows) > 5 else ''}" if rows else ""
        why = f": {f['why']}" if f.get("why") else ""
        shown.append(f"column {f.get('column')!r} check {f.get('check')!r}{where}{why}")
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
    run_split_checks(plan, state, ctx, components)
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
