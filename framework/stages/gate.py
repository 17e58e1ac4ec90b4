"""Quality gates for CI/CD: thresholds on every metric, and the champion on the same test rows.
A failed gate stops the run before the model is registered or served."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import write_json
from ..context import RunStageContext
from ..errors import GateError, StageError, StoreError
from ..evaluation import LOWER_IS_BETTER, onnx_latency, onnx_quality
from ..plan import Plan, PlannedStage
from ..plugins import Components
from ..registry.models import load_registered_model
from .state import RunState


def run_gate(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    cfg = plan.recipe.gates
    exported = state.exported
    onnx_bytes = Path(exported.path).read_bytes()
    measured = onnx_quality(onnx_bytes, exported.input_name, exported.output_name, exported.classes, state.splits,
                            exported.layout, exported.task)
    # one raw row, fed as the model takes it (a float matrix, or typed inputs)
    measured.update(onnx_latency(onnx_bytes, exported.input_name, exported.layout.feeds(state.splits.test.head(1)),
                                 cfg.latency_runs))
    measured["size_mb"] = len(onnx_bytes) / 1e6
    metrics = {**state.trained.metrics, **exported.metrics, **measured}
    rows: list[dict] = []
    for name, bounds in cfg.thresholds.items():
        if name not in metrics:
            raise StageError(f"gates.thresholds.{name}: no such metric in this run; known: {', '.join(sorted(metrics))}")
        value = float(metrics[name])
        ok = (bounds.min is None or value >= bounds.min) and (bounds.max is None or value <= bounds.max)
        rule = " and ".join(filter(None, (f">= {bounds.min:g}" if bounds.min is not None else "",
                                          f"<= {bounds.max:g}" if bounds.max is not None else "")))
        rows.append({"gate": name, "value": value, "rule": rule, "passed": ok})
    champion = cfg.champion
    metric = champion.metric or ("r2" if exported.task == "regression" else "accuracy")
    if champion.ref and metric not in measured:
        raise StageError(f"gates.champion.metric: '{metric}' does not measure a {exported.task} model; "
                         f"use {', '.join(k for k in measured if not k.startswith('latency'))}")
    if champion.ref:
        try:
            champ = load_registered_model(state.registry, champion.ref)
        except StoreError as exc:  # no champion yet
            if not champion.missing_ok:
                raise StageError(f"gates.champion.ref: {exc}") from exc
            rows.append({"gate": f"champion {metric}", "value": None,
                         "rule": f"no champion '{champion.ref}' yet (missing_ok)", "passed": True})
        else:
            if champ.task != exported.task:
                raise StageError(f"gates.champion.ref: '{champ.ref}' is a {champ.task} model, this run's a {exported.task}")
            theirs = onnx_quality(champ.onnx_bytes, champ.input_name, champ.output_name, champ.classes, state.splits,
                                  champ.layout, champ.task)
            ours, base = measured[metric], theirs[metric]
            delta = (base - ours) if metric in LOWER_IS_BETTER else (ours - base)
            rows.append({"gate": f"champion {metric}", "value": delta,
                         "rule": f"this run {ours:.4f} vs {champ.ref} {base:.4f}: delta >= {champion.min_delta:g}",
                         "passed": delta >= champion.min_delta})
            ctx.metric("champion", champ.ref)
            ctx.metric(f"champion_{metric}", base)
    for key, value in measured.items():
        ctx.metric(key, value)
    passed = sum(r["passed"] for r in rows)
    ctx.metric("gates_passed", f"{passed}/{len(rows)}")
    write_json(ctx.out_dir / "gates.json", rows)
    if passed < len(rows):
        table = "\n".join(
            f"  {'PASS' if r['passed'] else 'FAIL'}  {r['gate']:<28} {'-' if r['value'] is None else format(r['value'], '.4g'):>10}  {r['rule']}"
            for r in rows
        )
        raise GateError(f"quality gates failed ({len(rows) - passed} of {len(rows)}); the model was not registered:\n{table}", rows)
