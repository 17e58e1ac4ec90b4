"""Monitoring: each monitor looks at the served rows against the training data and reports;
every alert goes through the ``on_alert_raised`` hook.

The core hands a monitor what it cannot compute itself without the registry: each served model
version's answers on the training rows (the reference of output drift) and a place to store
what it derives from the training data version (its reference profile), so later runs on the
same data version reuse it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..artifacts import write_json
from ..components import ReferenceFiles, ServedWindow
from ..context import RunStageContext
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_monitor(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from ..serving import fetch_records

    frame = fetch_records(state.app)
    served = ServedWindow(frame=frame, features=list(state.splits.dataset.features),
                          reference_outputs=reference_outputs(state, frame, ctx),
                          reference_files=reference_files(state))
    alerts: list[str] = []
    reports = []
    for planned in stage.components:
        report = planned.build().evaluate(served, state.splits, ctx)
        reports.append(dataclasses.asdict(report))
        for alert in report.alerts:
            alerts.append(f"{planned.type}: {alert}")
            components.hooks.alert_raised(planned.type, alert)
        for key, value in report.metrics.items():
            ctx.metric(key, value)
    ctx.metric("alerts", len(alerts))
    write_json(ctx.out_dir / "reports.json", reports)


def reference_outputs(state: RunState, frame: Any, ctx: RunStageContext) -> dict[str, list]:
    """Each model version in the served rows, run offline (ONNX Runtime) on the training rows:
    the outputs served answers are compared with. A version the registry cannot give is left out
    (and logged): its outputs are then not tested."""
    from ..evaluation import onnx_session
    from ..registry.models import load_registered_model

    out: dict[str, list] = {}
    if state.registry is None or frame is None or "model_version" not in getattr(frame, "columns", ()):
        return out
    rows = state.splits.train
    for version in sorted({str(v) for v in frame["model_version"].dropna().unique()}):
        try:
            model = load_registered_model(state.registry, version)
        except Exception as exc:  # an unknown or unreadable version: no output reference for it
            ctx.logger.warning("monitor: no reference outputs for %s: %s", version, exc)
            continue
        answers = onnx_session(model.onnx_bytes).run([model.output_name], model.layout.feeds(rows))[0]
        if model.task == "regression":
            out[version] = [float(v) for v in answers[:, 0]]
        else:
            out[version] = [model.classes[i] for i in answers.argmax(axis=1)]
    return out


def reference_files(state: RunState) -> ReferenceFiles | None:
    """Files stored with the run's data version (its train part: the rows the model learnt)."""
    version, registry = state.data_version, state.registry
    if version is None or registry is None:
        return None
    # the train rows depend on the split and the window, not only on the version: key by them
    part = f"train-{len(state.splits.train)}-{_rows_digest(state.splits.train)}"

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
