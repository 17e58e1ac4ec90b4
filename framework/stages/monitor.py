"""Monitoring: each monitor looks at the served rows against the training data and reports;
every alert goes through the ``on_alert_raised`` hook.

The served rows come from the deployment's durable record log (deduplicated by request id, so a
replica restart loses no window) joined with the ingress's in-memory buffer (answers the log's
writer has not flushed yet). The core hands a monitor what it cannot compute itself without the
registry: each served model version's answers on the training rows (the reference of output
drift) and a place to store what it derives from the training data version (its reference
profile), so later runs, and ``python -m framework monitor`` on the record log of a running
service, reuse it.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..components import Alert, DataSplits, Dataset, ReferenceFiles, ServedWindow
from ..context import RunStageContext
from ..errors import StageError
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState

#: stored with a served model version: which data version and part its monitors compare against
REFERENCE_POINTER = "monitor-reference.json"
REPORT_HTML = "report.html"
#: at most this long the monitor stage waits for the record log to hold every buffered answer
LOG_WAIT_S = 3.0


def run_monitor(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    frame = served_rows(state.app, list(state.splits.dataset.features), ctx)
    files = reference_files(state)
    if files is not None:
        remember_reference(state, files, frame)
    served = ServedWindow(frame=frame, features=list(state.splits.dataset.features),
                          reference_outputs=reference_outputs(state.registry, state.splits.train, frame, ctx),
                          reference_files=files, feedback=feedback_frame(state.app.record_log),
                          calibration=calibration(state.registry, state.splits, frame, ctx))
    title = f"Monitoring report: run {ctx.out_dir.parent.parent.name}"
    reports = evaluate_monitors(stage.components, served, state.splits, ctx, components, title, collected=state.alerts)
    state.add_actions_to_report = report_with_actions(served, reports, ctx, title)  # the act stage's


def evaluate_monitors(planned_monitors: Any, served: ServedWindow, splits: DataSplits, ctx: RunStageContext,
                      components: Components, title: str | None = None, collected: list | None = None) -> list[dict]:
    """Every monitor on the window; alerts to the hook (and, as ``Alert``s with the monitor's
    figures as evidence, into ``collected``); metrics and ``reports.json`` written."""
    alerts: list[str] = []
    reports = []
    for planned in planned_monitors:
        report = planned.build().evaluate(served, splits, ctx)
        reports.append(dataclasses.asdict(report))
        for alert in report.alerts:
            alerts.append(f"{planned.type}: {alert}")
            components.hooks.alert_raised(planned.type, alert)
            if collected is not None:
                collected.append(Alert(planned.type, getattr(planned.cls, "alert_kind", "alert"), alert,
                                       _evidence(report.metrics), time.time()))
        for key, value in report.metrics.items():
            ctx.metric(key, value)
    ctx.metric("alerts", len(alerts))
    write_json(ctx.out_dir / "reports.json", reports)
    write_report(ctx.out_dir / REPORT_HTML, served, reports, ctx,
                 title or f"Monitoring report: run {ctx.out_dir.parent.parent.name}")
    return reports


def report_with_actions(served: ServedWindow, reports: list[dict], ctx: RunStageContext, title: str) -> Any:
    """A function that renders the monitoring report again with the actions taken on its alerts."""
    def render_with(events: list[dict]) -> None:
        if events:
            write_report(ctx.out_dir / REPORT_HTML, served, reports, ctx, title, events)

    return render_with


def _evidence(metrics: dict) -> dict:
    """A monitor's figures as an alert's evidence: JSON-able values, long lists cut."""
    out: dict = {}
    for key, value in metrics.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            value = str(value)
        out[key] = value[:50] if isinstance(value, list) else value
    return out


def write_report(path: Path, served: ServedWindow, reports: list[dict], ctx: RunStageContext, title: str,
                 actions: list[dict] | None = None) -> None:
    """The self-contained HTML report (``framework.monitoring.report``) next to the reports."""
    from ..monitoring.report import render

    frame = served.frame
    versions = sorted({str(v) for v in frame["model_version"].dropna().unique()}) if "model_version" in frame else []
    meta = {"served rows": int(len(frame)), "model versions": versions,
            "reference": getattr(served.reference_files, "ref", None) or "the run's training rows",
            "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.write_text(render(title, reports, frame, meta, actions))
    ctx.metric("report", str(path))


def served_rows(app: Any, features: list[str], ctx: RunStageContext) -> Any:
    """What the app served: the record log's answers (every replica's, deduplicated by request
    id), plus answers still only in the ingress's buffer; the buffer alone without a log."""
    import pandas as pd

    from ..serving import fetch_records
    from ..serving.recordlog import read_records
    from ..serving.records import answers_frame

    buffered = fetch_records(app)
    if not app.record_log or not Path(app.record_log).exists():
        return buffered
    # the replicas' writers flush every 20 ms: give them a moment to hold every buffered answer
    wanted = set(buffered["request_id"]) if len(buffered) else set()
    deadline = time.monotonic() + LOG_WAIT_S
    while True:
        answers, _ = read_records(app.record_log)
        if wanted <= {a["request_id"] for a in answers} or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    logged = answers_frame(answers, features)
    ctx.metric("rows_from_record_log", int(len(logged)))
    if not len(logged):
        return buffered
    fresh = buffered[~buffered["request_id"].isin(set(logged["request_id"]))] if len(buffered) else buffered
    if not len(fresh):
        return logged
    ctx.metric("rows_only_in_buffer", int(len(fresh)))
    merged = pd.concat([logged, fresh.reindex(columns=logged.columns)], ignore_index=True)
    for column in features:  # an all-missing side must not turn numbers into objects
        if pd.api.types.is_float_dtype(logged[column]) and not pd.api.types.is_float_dtype(merged[column]):
            merged[column] = pd.to_numeric(merged[column], errors="coerce")
    return merged.sort_values("timestamp", kind="stable", ignore_index=True)


def reference_outputs(registry: Any, rows: Any, frame: Any, ctx: RunStageContext) -> dict[str, list]:
    """Each model version in the served rows, run offline (ONNX Runtime) on the training rows:
    the outputs served answers are compared with. A version the registry cannot give is left out
    (and logged): its outputs are then not tested."""
    from ..evaluation import onnx_session
    from ..registry.models import load_registered_model

    out: dict[str, list] = {}
    if registry is None or frame is None or "model_version" not in getattr(frame, "columns", ()):
        return out
    for version in sorted({str(v) for v in frame["model_version"].dropna().unique()}):
        try:
            model = load_registered_model(registry, version)
        except Exception as exc:  # an unknown or unreadable version: no output reference for it
            ctx.logger.warning("monitor: no reference outputs for %s: %s", version, exc)
            continue
        answers = onnx_session(model.onnx_bytes).run([model.output_name], model.layout.feeds(rows))[0]
        if model.task == "regression":
            out[version] = [float(v) for v in answers[:, 0]]
        else:
            out[version] = [model.classes[i] for i in answers.argmax(axis=1)]
    return out


def feedback_frame(records: Any) -> Any:
    """Feedback of a record log (deduplicated): request_id, label, time; None without a log."""
    import pandas as pd

    from ..serving.recordlog import read_records

    if not records or not Path(records).exists():
        return None
    _, feedback = read_records(records)
    return pd.DataFrame({"request_id": [f["request_id"] for f in feedback],
                         "label": [f.get("label") for f in feedback],
                         "time": pd.to_datetime([f.get("time") for f in feedback], unit="s", utc=True)})


def calibration(registry: Any, splits: DataSplits, frame: Any, ctx: RunStageContext) -> dict[str, dict]:
    """Each served classifier's confidence and correctness on the validation rows (labeled, not
    learnt from): what a performance estimate before labels calibrates on."""
    from ..evaluation import onnx_session
    from ..registry.models import load_registered_model

    out: dict[str, dict] = {}
    rows = splits.val
    if registry is None or frame is None or not len(rows) or "model_version" not in getattr(frame, "columns", ()):
        return out
    truth = [str(v) for v in rows[splits.dataset.target]]
    for version in sorted({str(v) for v in frame["model_version"].dropna().unique()}):
        try:
            model = load_registered_model(registry, version)
        except Exception as exc:
            ctx.logger.warning("monitor: no calibration for %s: %s", version, exc)
            continue
        if model.task == "regression":
            continue
        p = onnx_session(model.onnx_bytes).run([model.output_name], model.layout.feeds(rows))[0]
        answered = [str(model.classes[i]) for i in p.argmax(axis=1)]
        out[version] = {"confidence": [float(v) for v in p.max(axis=1)],
                        "correct": [a == t for a, t in zip(answered, truth)]}
    return out


def reference_files(state: RunState) -> ReferenceFiles | None:
    """Files stored with the run's data version (its train part: the rows the model learnt)."""
    if state.data_version is None or state.registry is None:
        return None
    # the train rows depend on the split and the window, not only on the version: key by them
    return data_files(state.registry, state.data_version, f"train-{len(state.splits.train)}-{_rows_digest(state.splits.train)}")


def data_files(registry: Any, version: Any, part: str) -> ReferenceFiles:
    """Files stored with data ``version`` for its rows ``part`` (``train-N-DIGEST``)."""

    def read(name: str) -> bytes | None:
        return registry.read_derived(version, f"{part}.{name}")

    def write(name: str, data: bytes) -> str:
        return registry.put_derived(version, f"{part}.{name}", data)

    return ReferenceFiles(f"{version.ref}#{part}", read, write)


def _rows_digest(frame: Any) -> str:
    """Which rows (by index label) a split holds: 12 hex digits."""
    import hashlib

    digest = hashlib.blake2b(digest_size=6)
    digest.update("\x1f".join(map(str, frame.index)).encode())
    return digest.hexdigest()


def remember_reference(state: RunState, files: ReferenceFiles, frame: Any) -> None:
    """Store which rows are the reference (with the data version) and, with every served model
    version, where its reference is: ``python -m framework monitor`` finds them from a record log."""
    ds = state.splits.dataset
    part = files.ref.split("#", 1)[1]
    manifest = {"data_version": state.data_version.ref, "part": part,
                "rows": [_plain(label) for label in state.splits.train.index],
                "val_rows": [_plain(label) for label in state.splits.val.index],
                "dataset": {"name": ds.name, "features": list(ds.features), "target": ds.target, "task": ds.task,
                            "classes": [_plain(c) for c in ds.classes] if ds.classes is not None else None}}
    files.write("reference.json", json.dumps(manifest).encode())
    versions = set(getattr(state.app, "models", {}).values())
    if frame is not None and "model_version" in getattr(frame, "columns", ()):
        versions |= {str(v) for v in frame["model_version"].dropna().unique()}
    for ref in sorted(versions):
        try:
            version = state.registry.get(ref, kind="model")
        except Exception:  # not a registered version (a test double): nothing to point from
            continue
        pointer = {"data_version": state.data_version.ref, "part": part}
        state.registry.put_derived(version, REFERENCE_POINTER, json.dumps(pointer).encode())


def _plain(value: Any) -> Any:
    """A JSON value of an index label or class (numpy scalars as Python ones)."""
    return value.item() if hasattr(value, "item") else value


def reference_for(registry: Any, model_ref: str) -> tuple[DataSplits, ReferenceFiles]:
    """The training rows a served model version is monitored against, as its run stored them."""
    try:
        model = registry.get(model_ref, kind="model")
    except Exception as exc:
        raise StageError(f"monitor: model version '{model_ref}' of the record log is not in store {registry.uri}: {exc}") from None
    pointer = registry.read_derived(model, REFERENCE_POINTER)
    if pointer is None:
        raise StageError(f"monitor: model version {model.ref} has no stored monitoring reference; a run whose "
                         f"monitor stage served it stores one (run its recipe once with a monitor)")
    where = json.loads(pointer)
    data = registry.get(where["data_version"], kind="data")
    files = data_files(registry, data, where["part"])
    manifest_bytes = files.read("reference.json")
    if manifest_bytes is None:
        raise StageError(f"monitor: data version {data.ref} has no reference rows '{where['part']}' in store {registry.uri}")
    manifest = json.loads(manifest_bytes)
    frame = registry.load_frame(data)
    missing = [r for r in manifest["rows"][:1000] if r not in frame.index]
    if missing:
        raise StageError(f"monitor: data version {data.ref} lacks reference rows {missing[:5]} (part {where['part']})")
    train = frame.loc[manifest["rows"]]
    val = frame.loc[manifest.get("val_rows") or []]
    d = manifest["dataset"]
    dataset = Dataset(name=d["name"], frame=frame, features=list(d["features"]), target=d["target"], task=d["task"],
                      classes=d["classes"])
    return DataSplits(dataset, train, val, train.iloc[:0]), files


def monitor_records(plan: Plan, components: Components, records: Path, out_dir: Path) -> dict:
    """``python -m framework monitor``: the recipe's monitors on a deployment's record log (off the
    request path; any number of replicas, restarts included: answers deduplicated by request id),
    against the reference the serving run stored. Returns the reports and where they are."""
    from ..registry import Registry
    from ..serving.recordlog import read_records
    from ..serving.records import answers_frame

    stage = plan.stage("monitor")
    if not stage.enabled or not stage.components:
        raise StageError(f"monitor: recipe '{plan.recipe.name}' declares no monitor (monitor: [...])")
    if not records.exists():
        raise StageError(f"monitor: no record log at {records}")
    answers, feedback = read_records(records)
    if not answers:
        raise StageError(f"monitor: the record log at {records} holds no answers yet")
    registry = Registry(plan.recipe.store.uri)
    versions = sorted({str(a.get("model_version")) for a in answers if a.get("model_version")})
    splits, files = reference_for(registry, versions[0])
    frame = answers_frame(answers, list(splits.dataset.features))
    ctx = RunStageContext("monitor", out_dir, plan.recipe.seed, registry=registry)
    served = ServedWindow(frame=frame, features=list(splits.dataset.features),
                          reference_outputs=reference_outputs(registry, splits.train, frame, ctx), reference_files=files,
                          feedback=feedback_frame(records), calibration=calibration(registry, splits, frame, ctx))
    alerts: list[Alert] = []
    title = f"Monitoring report: {plan.recipe.name}, record log {records.name}"
    reports = evaluate_monitors(stage.components, served, splits, ctx, components, title, collected=alerts)
    events: list[dict] = []
    if plan.enabled("act"):  # the recipe's actions on these alerts (log, webhook; cooldowns kept in the store)
        from .act import RecordLogActionContext, act_on_alerts

        events = act_on_alerts(plan, plan.stage("act").components, alerts, RecordLogActionContext(ctx), ctx)
        report_with_actions(served, reports, ctx, title)(events)
        ctx.metric("actions_taken", sum(e["status"] == "done" for e in events))
    write_json(out_dir / "metrics.json", ctx.metrics)
    return {"records": str(records), "answers": len(answers), "feedback": len(feedback), "rows": int(len(frame)),
            "versions": versions, "reference": files.ref, "reports": reports, "metrics": ctx.metrics,
            "actions": events, "out_dir": str(out_dir)}


def newest_record_log(plan: Plan) -> Path | None:
    """The newest deployment folder of the recipe's app under its record-log folder."""
    from .serve import record_log_folder

    base = record_log_folder(plan)
    if base is None:
        return None
    app = base / plan.recipe.name
    if not app.is_dir():
        return None
    folders = sorted((p for p in app.iterdir() if p.is_dir()), key=lambda p: p.name)
    return folders[-1] if folders else None
