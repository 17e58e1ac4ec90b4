"""The export stage: every served candidate to ONNX, then the ONNX-level compression steps, and
the variant table that compares them on the same test rows."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..artifacts import write_json
from ..context import RunStageContext
from ..errors import StoreError
from ..evaluation import onnx_latency, onnx_quality
from ..plan import Plan, PlannedStage, this_run_rank
from ..plugins import Components
from ..registry.models import load_registered_model
from .state import RunState, served_ranks


def run_export(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    exporter = stage.component.build()
    for rank in served_ranks(plan):
        where = next((f"serve.models.{a}" for a, r in plan.recipe.serve.models.items() if this_run_rank(str(r)) == rank), "export")
        model = state.candidate(rank, where)
        # every candidate gets its own folder: exporters write fixed file names
        sub = ctx if rank == 1 else ctx.child(ctx.out_dir / f"this_run-{rank}")
        state.exports[rank] = exporter.export(model, state.splits, sub)
    exported = state.exports[1]
    state.variants = [{"name": stage.component.type, "exported": exported}]
    for i, planned in enumerate(stage.components[1:]):  # ONNX-level compression steps, in order
        sub = ctx.child(ctx.out_dir / f"{i:02d}-{planned.type}")
        exported = planned.build().compress_onnx(exported, state.splits, sub)
        state.variants.append({"name": planned.type, "exported": exported})
    state.exports[1] = state.exported = exported
    for key, value in exported.metrics.items():
        ctx.metric(key, value)
    if len(state.exports) > 1:
        ctx.metric("candidates_exported", len(state.exports))
    if len(state.variants) > 1 or plan.enabled("compress"):
        table = state.variant_table = variant_table(plan, state)
        write_json(ctx.out_dir / "variants.json", table)

        def shown(value: float, fmt: str) -> str:
            return "-" if value != value else format(value, fmt)  # NaN: not measured (the teacher)

        quality = "r2" if state.exported.task == "regression" else "acc"
        ctx.metric("variants", {row["variant"]: f"{quality} {row.get('r2', row.get('accuracy')):.4f}, "
                                f"{shown(row['size_kb'], '.1f')} KB, p50 {shown(row['latency_b1_p50_ms'], '.3f')} ms"
                                for row in table})


def variant_table(plan: Plan, state: RunState) -> list[dict]:
    """Accuracy (a regression: r2 and mae), size and one-thread latency (batch 1 and 64) of every
    variant, the teacher's training metrics and the current champion, all measured on the same
    test rows (fed as each model takes raw rows)."""
    test = state.splits.test
    regression = state.exported.task == "regression"

    def measure(name: str, onnx_bytes: bytes, model: Any) -> dict:
        layout = model.layout
        quality = onnx_quality(onnx_bytes, model.input_name, model.output_name, model.classes, state.splits,
                               layout, model.task)
        b1 = onnx_latency(onnx_bytes, model.input_name, layout.feeds(test.head(1)), 100)
        b64 = onnx_latency(onnx_bytes, model.input_name, layout.feeds(test.head(64)), 30)
        figures = {"r2": quality["r2"], "mae": quality["mae"]} if regression else {"accuracy": quality["accuracy"]}
        return {"variant": name, **figures, "size_kb": len(onnx_bytes) / 1024,
                "latency_b1_p50_ms": b1["latency_p50_ms"], "latency_b64_p50_ms": b64["latency_p50_ms"]}

    rows = [measure(v["name"], Path(v["exported"].path).read_bytes(), v["exported"]) for v in state.variants]
    teacher = state.trained.details.get("teacher_metrics")
    if teacher:
        figures = ({"r2": teacher.get("test_r2", float("nan")), "mae": teacher.get("test_mae", float("nan"))} if regression
                   else {"accuracy": teacher.get("test_accuracy", float("nan"))})
        rows.insert(0, {"variant": "teacher (before compression)", **figures,
                        "size_kb": float("nan"), "latency_b1_p50_ms": float("nan"), "latency_b64_p50_ms": float("nan")})
    try:
        champion = load_registered_model(state.registry, f"{plan.recipe.register.model_name}@prod")
    except StoreError:  # no champion yet
        champion = None
    if champion is not None and champion.task == state.exported.task:
        rows.append(measure(f"champion {champion.ref}", champion.onnx_bytes, champion))
    return rows
