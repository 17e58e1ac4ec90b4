"""Lifecycle plugin ``acme_audit``: every event of a run, one JSON object a line, in
``acme_audit.jsonl`` in the run directory (where ACME's compliance tooling collects them).

Lifecycle hooks observe; they return nothing and must be cheap: they run in every run of every
recipe once the package is installed. Events are kept in memory from ``on_plan_created`` (which
starts a new log) and written when ``on_run_finished`` names the run directory.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from framework import hookimpl

AUDIT_FILE = "acme_audit.jsonl"
#: events kept at most between a plan and its run's end (a plan that never runs is dropped by the next)
MAX_EVENTS = 10_000

_events: list[dict] = []


def _record(event: str, **fields) -> None:
    if len(_events) < MAX_EVENTS:
        _events.append({"event": event, "time": round(time.time(), 3), **fields})


@hookimpl
def on_plan_created(plan):
    _events.clear()
    _record("plan_created", recipe=plan.recipe.name, recipe_hash=plan.recipe_hash,
            stages=[s.name for s in plan.stages if s.enabled])


@hookimpl
def on_stage_started(stage, component):
    _record("stage_started", stage=stage, component=component)


@hookimpl
def on_stage_finished(stage, component, status, seconds, metrics):
    _record("stage_finished", stage=stage, component=component, status=status, seconds=round(seconds, 3))


@hookimpl
def on_data_versioned(version):
    _record("data_versioned", version=version.ref)


@hookimpl
def on_model_registered(version):
    _record("model_registered", version=version.ref, aliases=list(version.aliases))


@hookimpl
def on_rollout_decided(decision, strategy):
    _record("rollout_decided", strategy=strategy, verdict=decision.verdict.value, arm=decision.arm,
            reason=decision.reason)


@hookimpl
def on_alert_raised(monitor, alert):
    _record("alert_raised", monitor=monitor, alert=alert)


@hookimpl
def on_run_finished(run_dir, summary):
    _record("run_finished", status=summary.get("status"), seconds=summary.get("seconds"))
    lines = "".join(json.dumps(e, default=str) + "\n" for e in _events)
    (Path(run_dir) / AUDIT_FILE).write_text(lines)
    _events.clear()
