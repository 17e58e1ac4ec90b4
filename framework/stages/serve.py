"""Serving stages: deploy the recipe's arms behind the traffic strategy on Ray Serve, then send
held-out rows over HTTP and compare every answer with the offline ONNX prediction."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from ..artifacts import write_json
from ..context import RunStageContext
from ..errors import StageError
from ..evaluation import onnx_session
from ..plan import Plan, PlannedStage
from ..plugins import Components
from ..registry.models import load_registered_model
from .state import RunState


def served_model(state: RunState, arm: str, ref: str) -> Any:
    """The ServedModel of one arm (``serve.models.ARM: REF``) from the registry."""
    from ..serving import ServedModel

    return ServedModel.from_registered(arm, load_registered_model(state.registry, state.registry_ref(ref, f"serve.models.{arm}")))


def record_log_folder(plan: Plan) -> Path | None:
    """``serve.record_log``: "off", an absolute folder, or one relative to a local store (under
    ``.framework/`` when the store is a URL: an object store cannot append)."""
    setting = str(plan.recipe.serve.record_log)
    if setting == "off":
        return None
    folder = Path(setting).expanduser()
    if folder.is_absolute():
        return folder
    uri = plan.recipe.store.uri
    base = Path(".framework") if "://" in uri else Path(uri).expanduser()
    return (base / folder).resolve()


def run_serve(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from ..serving import deploy

    serve_cfg = plan.recipe.serve
    models = [served_model(state, arm, str(ref)) for arm, ref in serve_cfg.models.items()]
    strategy = stage.component
    state.app = deploy(
        models,
        strategy.cls,
        strategy.config,
        host=serve_cfg.host,
        port=serve_cfg.port,
        route_prefix=serve_cfg.route_prefix,
        app_name=plan.recipe.name,
        placement=serve_cfg.placement,
        replicas=serve_cfg.replicas,
        record_buffer=serve_cfg.record_buffer,
        admin_token=plan.tokens.admin,
        client_token=plan.tokens.client,
        record_log=record_log_folder(plan),
        record_log_fsync=serve_cfg.record_log_fsync,
        **({"faults": dict(serve_cfg.faults)} if serve_cfg.faults else {}),
        autoscaling=dict(serve_cfg.autoscaling or {}),
        batching=dict(serve_cfg.batching or {}),
    )
    ctx.metric("url", state.app.predict_url)
    if state.app.record_log:
        ctx.metric("record_log", state.app.record_log)
    ctx.metric("arms", {m.arm: m.version for m in models})
    write_json(ctx.out_dir / "endpoint.json", {"predict_url": state.app.predict_url, "models": {m.arm: m.version for m in models}})


def run_online_eval(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Send a held-out slice over HTTP; compare every answer with the offline ONNX prediction of
    the arm that gave it (a strategy may route a row to any arm)."""
    import httpx
    import numpy as np

    cfg = plan.recipe.online_eval
    splits = state.splits
    rows = splits.test.head(cfg.rows)
    features = splits.dataset.features
    x = rows[features].to_numpy(dtype=np.float32)
    offline: dict[str, Callable[[int, int], Any]] = {}
    classes: dict[str, list] = {}
    for arm, ref in plan.recipe.serve.models.items():
        model = load_registered_model(state.registry, state.registry_ref(str(ref), f"serve.models.{arm}"))
        session = onnx_session(model.onnx_bytes)
        # offline answers for exactly the rows of each request: a dynamically quantized model's
        # activation scales depend on the batch it sees
        offline[arm] = (lambda a, b, s=session, m=model: s.run([m.output_name], {m.input_name: x[a:b]})[0])
        classes[arm] = model.classes

    served_probs, expected_probs = [], []
    served_labels, offline_labels, truth, arms = [], [], [], []
    latencies: list[float] = []
    injected = 0
    progress = ctx.progress(total=len(rows), description="held-out rows over HTTP")
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(rows), cfg.batch_size):
            chunk = rows.iloc[start:start + cfg.batch_size]
            body = {"instances": [{f: float(v) for f, v in zip(features, r)} for r in chunk[features].to_numpy()]}
            t0 = time.perf_counter()
            resp = client.post(state.app.predict_url, json=body, headers=state.app.client_headers())
            latencies.append((time.perf_counter() - t0) * 1000.0)
            progress.advance(len(chunk))
            if resp.status_code == 503 and "injected fault" in resp.text and plan.recipe.serve.faults:
                injected += 1  # the recipe asked for these failures (serve.faults)
                continue
            if resp.status_code != 200:
                raise StageError(f"online_eval: {state.app.predict_url} answered {resp.status_code}: {resp.text[:300]}")
            answer = resp.json()
            arm = answer["arm"]
            expected = offline[arm](start, start + len(chunk))
            served_probs.extend(answer["probabilities"])
            expected_probs.extend(expected.tolist())
            served_labels.extend(answer["predictions"])
            offline_labels.extend(classes[arm][i] for i in expected.argmax(axis=1))
            truth.extend(chunk[splits.dataset.target].tolist())
            arms.extend([arm] * len(chunk))
    served = np.asarray(served_probs, dtype=np.float64)
    max_abs_diff = float(np.max(np.abs(served - np.asarray(expected_probs)))) if len(served) else 0.0
    agreement = float(np.mean([a == b for a, b in zip(served_labels, offline_labels)])) if served_labels else 0.0
    served_accuracy = float(np.mean([a == b for a, b in zip(served_labels, truth)])) if served_labels else 0.0
    ctx.metric("rows_sent", len(rows))
    ctx.metric("rows_compared", len(served_labels))
    ctx.metric("requests", len(latencies))
    ctx.metric("max_abs_diff", max_abs_diff)
    ctx.metric("agreement", agreement)
    ctx.metric("served_accuracy", served_accuracy)
    ctx.metric("latency_p50_ms", float(np.percentile(latencies, 50)))
    ctx.metric("latency_p99_ms", float(np.percentile(latencies, 99)))
    if injected:
        ctx.metric("injected_faults", injected)
    write_json(
        ctx.out_dir / "comparison.json",
        {"served_predictions": served_labels, "offline_predictions": offline_labels, "truth": truth,
         "arms": arms, "max_abs_diff": max_abs_diff},
    )
    if not served_labels:
        raise StageError("online_eval: no answer to compare (every request failed)")
    if max_abs_diff > cfg.tolerance or agreement < 1.0:
        raise StageError(
            f"online_eval: served answers differ from offline ONNX predictions "
            f"(max |diff| {max_abs_diff:.3g} > tolerance {cfg.tolerance}, agreement {agreement:.3f})"
        )
