"""Monitoring: each monitor looks at the served rows against the training data and reports;
every alert goes through the ``on_alert_raised`` hook."""
from __future__ import annotations

import dataclasses

from ..artifacts import write_json
from ..components import ServedWindow
from ..context import RunStageContext
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_monitor(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from ..serving import fetch_records

    frame = fetch_records(state.app)
    served = ServedWindow(frame=frame, features=list(state.splits.dataset.features))
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
