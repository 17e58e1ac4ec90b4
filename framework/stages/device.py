"""``target: device``: measure every variant (size, one-thread p95 latency, RAM, accuracy), take
the most accurate within the budgets, write a bundle and run it in a clean process."""
from __future__ import annotations

from pathlib import Path

from ..artifacts import write_json
from ..context import RunStageContext
from ..device import measure_variant, pick_variant, verify_bundle, write_bundle
from ..evaluation import onnx_session
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_device(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from ..components import raw_instances

    cfg = plan.recipe.device
    budget = {k: getattr(cfg, k) for k in ("max_size_mb", "max_p95_latency_ms", "max_ram_mb")}
    test = state.splits.test
    dataset = state.splits.dataset
    regression = state.exported.task == "regression"
    if regression:
        y_test = test[dataset.target].to_numpy(dtype="float64")
    else:
        index = {c: i for i, c in enumerate(dataset.classes or [])}
        y_test = [index[v] for v in test[dataset.target]]
    candidates = []
    for variant in state.variants:
        exported = variant["exported"]
        # the raw test rows fed as each variant takes them (a float matrix, or typed inputs)
        feeds = exported.layout.feeds(test)
        x = feeds if exported.inputs is not None else feeds[exported.input_name]
        figures = measure_variant(Path(exported.path).read_bytes(), exported.input_name, x, y_test, task=exported.task)
        candidates.append({"name": variant["name"], "exported": exported,
                           "version": variant.get("version") or state.model_version.ref, **figures})
    write_json(ctx.out_dir / "candidates.json", [{k: v for k, v in c.items() if k != "exported"} for c in candidates])
    chosen = pick_variant(candidates, budget)
    quality = ("r2", "mae") if regression else ("accuracy",)
    measured = {k: chosen[k] for k in ("size_mb", "latency_p50_ms", "latency_p95_ms", "ram_mb", *quality)}
    out_dir = Path(cfg.bundle_dir).expanduser().resolve() if cfg.bundle_dir else ctx.out_dir / "bundle"
    bundle = write_bundle(chosen["exported"], out_dir, {
        "model_version": chosen["version"], "variant": chosen["name"], "budget": budget, "measured": measured,
        "recipe": plan.recipe.name, "data_version": state.data_ref,
    })
    exported = chosen["exported"]
    session = onnx_session(Path(exported.path).read_bytes())
    out = session.run([exported.output_name], exported.layout.feeds(test))[0]
    expected = [float(v) for v in out[:, 0]] if regression else [exported.classes[i] for i in out.argmax(axis=1)]
    rows = raw_instances(test, exported.schema.names)  # raw rows, as a device's caller sends them
    check = verify_bundle(bundle, rows, expected, tolerance=1e-5 if regression else None)
    ctx.metric("variant", chosen["name"])
    ctx.metric("model_version", chosen["version"])
    for key, value in measured.items():
        ctx.metric(key, value)
    ctx.metric("bundle", str(bundle))
    ctx.metric("bundle_agreement", check["agreement"])
    ctx.metric("bundle_modules", ",".join(check["modules_loaded"]) or "onnxruntime, numpy only")
