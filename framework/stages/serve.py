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
    serve_cfg = plan.recipe.serve
    models = [served_model(state, arm, str(ref)) for arm, ref in serve_cfg.models.items()]
    strategy = stage.component
    state.app = deploy_models(plan, models, strategy.cls, strategy.config)
    ctx.metric("url", state.app.predict_url)
    ctx.metric("ingress", state.app.ingress)
    if state.app.record_log:
        ctx.metric("record_log", state.app.record_log)
    ctx.metric("arms", {m.arm: m.version for m in models})
    write_json(ctx.out_dir / "endpoint.json", {"predict_url": state.app.predict_url, "models": {m.arm: m.version for m in models}})


def deploy_models(plan: Plan, models: list, strategy_cls: type, strategy_config: Any) -> Any:
    """Deploy ``models`` behind the strategy with the recipe's serve settings, as the app of the
    recipe (a second call updates the running app in place: the retrain action's rollout)."""
    from ..serving import deploy

    serve_cfg = plan.recipe.serve
    return deploy(
        models,
        strategy_cls,
        strategy_config,
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
        metrics=serve_cfg.metrics,
        **({"faults": dict(serve_cfg.faults)} if serve_cfg.faults else {}),
        autoscaling=dict(serve_cfg.autoscaling or {}),
        batching=dict(serve_cfg.batching or {}),
        **({"label_mapping": dict(serve_cfg.label_mapping)} if serve_cfg.label_mapping else {}),
        ingress=serve_cfg.ingress,
        balancer_port=serve_cfg.balancer_port,
        shared_decisions=bool(serve_cfg.shared_decisions),
    )


def run_online_eval(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Send a held-out slice over HTTP; compare every answer with the offline ONNX prediction of
    the arm that gave it (a strategy may route a row to any arm)."""
    import httpx
    import numpy as np

    from ..components import raw_instances

    cfg = plan.recipe.online_eval
    splits = state.splits
    rows = splits.test.head(cfg.rows)
    features = splits.dataset.features
    offline: dict[str, Callable[[int, int], Any]] = {}
    classes: dict[str, list] = {}
    regression: set[str] = set()
    for arm, ref in plan.recipe.serve.models.items():
        model = load_registered_model(state.registry, state.registry_ref(str(ref), f"serve.models.{arm}"))
        session = onnx_session(model.onnx_bytes)
        # offline answers for exactly the rows of each request: a dynamically quantized model's
        # activation scales depend on the batch it sees; the feeds from the raw rows as the
        # model's input layout says (the same the server builds from the JSON)
        offline[arm] = (lambda a, b, s=session, m=model: s.run([m.output_name], m.layout.feeds(rows.iloc[a:b]))[0])
        classes[arm] = model.classes
        if model.task == "regression":
            regression.add(arm)

    served_probs, expected_probs = [], []
    served_labels, offline_labels, truth, arms = [], [], [], []
    latencies: list[float] = []
    injected = 0
    progress = ctx.progress(total=len(rows), description="held-out rows over HTTP")
    with httpx.Client(timeout=30.0) as client:
        for start in range(0, len(rows), cfg.batch_size):
            chunk = rows.iloc[start:start + cfg.batch_size]
            body = {"instances": raw_instances(chunk, features)}  # raw values: strings, nulls
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
            if arm in regression:  # numbers: compared as the values they are
                served_probs.extend([p] for p in answer["predictions"])
                expected_probs.extend(expected.tolist())
                served_labels.extend(answer["predictions"])
                offline_labels.extend(float(v) for v in expected[:, 0])
            else:
                served_probs.extend(answer["probabilities"])
                expected_probs.extend(expected.tolist())
                served_labels.extend(answer["predictions"])
                offline_labels.extend(classes[arm][i] for i in expected.argmax(axis=1))
            truth.extend(chunk[splits.dataset.target].tolist())
            arms.extend([arm] * len(chunk))
    # row by row: arms of two label schemas answer with different numbers of classes
    diffs = np.zeros(len(served_probs))
    for i, (got, want) in enumerate(zip(served_probs, expected_probs)):
        got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            diffs[i] = np.inf
        elif regression:  # a value's difference relative to its size (at least 1): float32 in target units
            diffs[i] = float(np.max(np.abs(got - want) / np.maximum(1.0, np.abs(want))))
        else:
            diffs[i] = float(np.max(np.abs(got - want))) if got.size else 0.0
    if regression:
        same = [bool(d <= cfg.tolerance) for d in diffs]
    else:
        same = [a == b for a, b in zip(served_labels, offline_labels)]
    max_abs_diff = float(np.max(diffs)) if len(diffs) else 0.0
    agreement = float(np.mean(same)) if same else 0.0
    if regression and served_labels:
        from ..metrics import regression_metrics

        ctx.metric("served_r2", regression_metrics(truth, served_labels)["r2"])
    served_accuracy = float(np.mean([a == b for a, b in zip(served_labels, truth)])) if served_labels and not regression else None
    ctx.metric("rows_sent", len(rows))
    ctx.metric("rows_compared", len(served_labels))
    ctx.metric("requests", len(latencies))
    ctx.metric("max_abs_diff", max_abs_diff)
    ctx.metric("agreement", agreement)
    if served_accuracy is not None:
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
