"""Execute a Plan: each stage through its plugin component, into a run directory.

The run directory holds ``recipe.yaml`` (the resolved recipe), ``plan.json``, ``run.log``, one
folder per stage (its artifacts and ``metrics.json``) and ``summary.json``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .components import DataSplits, ExportedModel, InputSchema, ServedWindow
from .context import RunStageContext
from .errors import FrameworkError, RecipeError, StageError
from .plan import Plan, PlannedStage, this_run_rank
from .plugins import Components

log = logging.getLogger("framework.run")


@dataclass
class RunState:
    """What earlier stages hand to later ones."""

    dataset: Any = None
    splits: DataSplits | None = None
    data_version: Any = None
    trained: Any = None
    exported: ExportedModel | None = None
    model_version: Any = None
    exports: dict[int, ExportedModel] = field(default_factory=dict)  # candidate rank -> export
    model_versions: dict[int, Any] = field(default_factory=dict)  # candidate rank -> version
    app: Any = None
    registry: Any = None


@dataclass
class StageResult:
    stage: str
    component: str
    status: str  # ok | failed | skipped
    seconds: float = 0.0
    metrics: dict = field(default_factory=dict)
    note: str = ""


@dataclass
class RunResult:
    run_dir: Path
    status: str
    stages: list[StageResult]
    summary: dict
    state: RunState


class Reporter:
    """Console output of a run: stage lines, progress of long stages, the summary table."""

    def __init__(self, quiet: bool = False):
        from rich.console import Console

        self.console = Console(stderr=False, quiet=quiet, highlight=False)

    def stage_started(self, stage: PlannedStage) -> None:
        self.console.print(f"[bold cyan]▶ {stage.name}[/] [dim]({stage.label()})[/]")

    def progress(self, description: str, total: int) -> Callable[[int, int, str], None]:
        shown = {"quarter": -1}

        def show(done: int, total_: int, note: str) -> None:
            # at most one line per quarter of the work, so long stages stay readable
            quarter = (4 * done) // max(total_, 1)
            if quarter > shown["quarter"] or done == total_:
                shown["quarter"] = quarter
                self.console.print(f"    {description}: {done}/{total_} {note}".rstrip())

        return show

    def stage_finished(self, result: StageResult) -> None:
        colour = {"ok": "green", "failed": "red", "skipped": "yellow"}[result.status]
        self.console.print(f"  [{colour}]{result.status}[/] {result.stage} in {result.seconds:.1f}s {result.note}".rstrip())

    def summary(self, result: "RunResult") -> None:
        from rich.table import Table

        table = Table(title=f"run {result.run_dir.name}: {result.status}")
        for col in ("stage", "component", "status", "seconds"):
            table.add_column(col, no_wrap=True)
        table.add_column("key metrics", overflow="fold")
        for r in result.stages:
            colour = {"ok": "green", "failed": "red", "skipped": "yellow"}[r.status]
            shown = "\n".join(f"{k}={_fmt(v)}" for k, v in list(_headline(r).items())[:4])
            table.add_row(r.stage, r.component, f"[{colour}]{r.status}[/]", f"{r.seconds:.1f}", shown or r.note)
        self.console.print(table)
        self.console.print(f"run directory: {result.run_dir}")


_HEADLINE_KEYS = (
    "rows", "features", "classes", "checks_passed", "data_version", "test_accuracy", "val_accuracy",
    "trials", "max_abs_diff", "onnx_bytes", "model_version", "url", "rows_sent", "served_accuracy",
    "agreement", "latency_p50_ms", "columns_drifted", "alerts", "requests", "share", "decision", "reason",
)


def _headline(result: StageResult) -> dict:
    return {k: result.metrics[k] for k in _HEADLINE_KEYS if k in result.metrics}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _code_revision() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True, text=True, timeout=5)
        if rev.returncode == 0:
            return rev.stdout.strip()[:12] + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, sort_keys=False))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------
def _stage_data(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    dataset = stage.component.build().load(ctx)
    if dataset.target not in dataset.frame.columns:
        raise StageError(f"data ({stage.component.type}): target column '{dataset.target}' is not in the frame")
    if dataset.classes is None:
        dataset.classes = sorted(dataset.frame[dataset.target].unique().tolist())
    state.dataset = dataset
    ctx.metric("rows", int(len(dataset.frame)))
    ctx.metric("features", len(dataset.features))
    ctx.metric("classes", len(dataset.classes))


def _stage_checks(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    passed = 0
    reports = []
    for planned in stage.components:
        report = planned.build().check(state.dataset, ctx)
        reports.append(dataclasses.asdict(report))
        if report.passed:
            passed += 1
        else:
            ctx.logger.warning("non-blocking check %s failed: %s", planned.key, report.failures)
    _write_json(ctx.out_dir / "reports.json", reports)
    ctx.metric("checks_passed", f"{passed}/{len(stage.components)}")


def _split(plan: Plan, dataset: Any) -> DataSplits:
    from sklearn.model_selection import train_test_split

    cfg = plan.recipe.split
    frame = dataset.frame
    strat = frame[dataset.target] if cfg.stratify and dataset.task == "classification" else None
    rest, test = train_test_split(frame, test_size=cfg.test, random_state=plan.recipe.seed, stratify=strat)
    strat_rest = rest[dataset.target] if strat is not None else None
    train, val = train_test_split(
        rest, test_size=cfg.val / (1.0 - cfg.test), random_state=plan.recipe.seed + 1, stratify=strat_rest
    )
    return DataSplits(dataset=dataset, train=train, val=val, test=test)


def _stage_version(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    dataset = state.dataset
    schema = {
        "features": list(dataset.features),
        "target": dataset.target,
        "classes": list(dataset.classes),
        "dtypes": {c: str(t) for c, t in dataset.frame.dtypes.items()},
    }
    version = state.registry.put_data(
        dataset.name, dataset.frame, schema=schema, meta={"description": dataset.description, "recipe": plan.recipe.name}
    )
    components.notify("on_data_versioned", version=version)
    state.data_version = version
    state.splits = _split(plan, dataset)
    split_index = {p: [str(i) for i in getattr(state.splits, p).index] for p in ("train", "val", "test")}
    _write_json(ctx.out_dir / "split.json", {"seed": plan.recipe.seed, **split_index})
    ctx.metric("data_version", version.ref)
    ctx.metric("train_rows", len(state.splits.train))
    ctx.metric("val_rows", len(state.splits.val))
    ctx.metric("test_rows", len(state.splits.test))


def _stage_label(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    state.dataset = stage.component.build().label(state.dataset, ctx)
    state.splits = _split(plan, state.dataset)
    ctx.metric("rows", len(state.dataset.frame))


def _stage_train(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    trained = stage.component.build().fit(state.splits, ctx)
    state.trained = trained
    for key, value in trained.metrics.items():
        ctx.metric(key, value)
    _write_json(ctx.out_dir / "hyperparameters.json", trained.hyperparameters)


def _stage_compress(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    for planned in stage.components:
        state.trained = planned.build().compress(state.trained, state.splits, ctx)
    for key, value in state.trained.metrics.items():
        ctx.metric(key, value)


def _served_ranks(plan: Plan) -> list[int]:
    """Which candidates of this run the recipe serves: 1 is the best, 2 the runner-up ..."""
    return sorted({1} | {r for r in map(this_run_rank, map(str, plan.recipe.serve.models.values())) if r})


def _candidate(state: RunState, rank: int, where: str) -> Any:
    if rank == 1:
        return state.trained
    runners_up = state.trained.runners_up
    if rank - 2 >= len(runners_up):
        raise StageError(f"{where}: this_run#{rank} asked for, but training produced {len(runners_up) + 1} candidate(s)")
    return runners_up[rank - 2]


def _stage_export(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    exporter = stage.component.build()
    for rank in _served_ranks(plan):
        where = next((f"serve.models.{a}" for a, r in plan.recipe.serve.models.items() if this_run_rank(str(r)) == rank), "export")
        model = _candidate(state, rank, where)
        # every candidate gets its own folder: exporters write fixed file names
        sub = ctx if rank == 1 else RunStageContext(stage.name, ctx.out_dir / f"this_run-{rank}", ctx.seed, ctx.logger)
        state.exports[rank] = exporter.export(model, state.splits, sub)
    state.exported = state.exports[1]
    for key, value in state.exported.metrics.items():
        ctx.metric(key, value)
    if len(state.exports) > 1:
        ctx.metric("candidates_exported", len(state.exports))


def _register_candidate(plan: Plan, state: RunState, rank: int, components: Components) -> Any:
    exported = state.exports[rank]
    trained = _candidate(state, rank, "register")
    manifest = {
        "format": exported.format,
        "input_name": exported.input_name,
        "output_name": exported.output_name,
        "classes": list(exported.classes),
        "schema": exported.schema.to_dict(),
    }
    files = {
        "model.onnx": Path(exported.path).read_bytes(),
        "serving.json": json.dumps(manifest, sort_keys=True).encode(),
    }
    lineage = {
        "recipe": plan.recipe.name,
        "recipe_hash": plan.recipe_hash,
        "data_version": state.data_version.id if state.data_version else None,
        "code_revision": _code_revision(),
        "trainer": plan.stage("train").component.type,
        "hyperparameters": trained.hyperparameters,
        "candidate_rank": rank,
        "seed": plan.recipe.seed,
    }
    registry = state.registry
    name = plan.recipe.register.model_name
    hashes = {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}
    existing = next((v for v in registry.list(kind="model", name=name) if v.files == hashes), None)
    if existing is not None:  # an identical re-run reuses its version
        version = existing
    else:
        previous = registry.list(kind="model", name=name)
        parent = previous[0].id if previous else None
        version = registry.put_model(name, files=files, metrics={**trained.metrics, **exported.metrics},
                                     lineage=lineage, parent=parent)
    if rank == 1:
        for alias in plan.recipe.register.aliases:
            registry.set_alias("model", name, alias, version.id)
    version = registry.get(f"{name}:{version.id}")
    components.notify("on_model_registered", version=version)
    return version


def _stage_register(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    # runners-up first, so the best candidate is the newest version of the name
    for rank in sorted(state.exports, reverse=True):
        state.model_versions[rank] = _register_candidate(plan, state, rank, components)
    state.model_version = state.model_versions[1]
    ctx.metric("model_version", state.model_version.ref)
    ctx.metric("aliases", ",".join(state.model_version.aliases))
    if len(state.model_versions) > 1:
        ctx.metric("candidates", {f"this_run#{r}": v.ref for r, v in sorted(state.model_versions.items())})


def _registry_ref(state: RunState, ref: str, where: str) -> str:
    """A recipe's model reference as a registry reference (``this_run#k`` -> NAME:ID)."""
    rank = this_run_rank(ref)
    if rank is None:
        return ref
    version = state.model_versions.get(rank)
    if version is None:
        raise StageError(f"{where}: '{ref}' but this run registered no such model")
    return f"{version.name}:{version.id}"


def served_model_from_registry(registry: Any, ref: str, arm: str) -> Any:
    """A ServedModel for ``arm`` from a registered version (reads only ONNX and JSON)."""
    from .serving import ServedModel

    version = registry.get(ref, kind="model")
    manifest = json.loads(registry.read_file(version, "serving.json"))
    return ServedModel(
        arm=arm,
        version=version.ref,
        onnx_bytes=registry.read_file(version, "model.onnx"),
        schema=InputSchema.from_dict(manifest["schema"]),
        classes=manifest["classes"],
        input_name=manifest["input_name"],
        output_name=manifest["output_name"],
    )


def _stage_serve(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from .serving import deploy

    serve_cfg = plan.recipe.serve
    models = [
        served_model_from_registry(state.registry, _registry_ref(state, str(ref), f"serve.models.{arm}"), arm)
        for arm, ref in serve_cfg.models.items()
    ]
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
        admin_token=serve_cfg.admin_token,
        **({"faults": dict(serve_cfg.faults)} if serve_cfg.faults else {}),
    )
    ctx.metric("url", state.app.predict_url)
    ctx.metric("arms", {m.arm: m.version for m in models})
    _write_json(ctx.out_dir / "endpoint.json", {"predict_url": state.app.predict_url, "models": {m.arm: m.version for m in models}})


def _stage_online_eval(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Send a held-out slice over HTTP; compare every answer with the offline ONNX prediction of
    the arm that gave it (a strategy may route a row to any arm)."""
    import httpx
    import numpy as np
    import onnxruntime as ort

    cfg = plan.recipe.online_eval
    splits = state.splits
    rows = splits.test.head(cfg.rows)
    features = splits.dataset.features
    x = rows[features].to_numpy(dtype=np.float32)
    offline: dict[str, np.ndarray] = {}
    classes: dict[str, list] = {}
    for arm, ref in plan.recipe.serve.models.items():
        model = served_model_from_registry(state.registry, _registry_ref(state, str(ref), f"serve.models.{arm}"), arm)
        session = ort.InferenceSession(model.onnx_bytes, providers=["CPUExecutionProvider"])
        offline[arm] = session.run([model.output_name], {model.input_name: x})[0]
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
            resp = client.post(state.app.predict_url, json=body)
            latencies.append((time.perf_counter() - t0) * 1000.0)
            progress.advance(len(chunk))
            if resp.status_code == 503 and "injected fault" in resp.text and plan.recipe.serve.faults:
                injected += 1  # the recipe asked for these failures (serve.faults)
                continue
            if resp.status_code != 200:
                raise StageError(f"online_eval: {state.app.predict_url} answered {resp.status_code}: {resp.text[:300]}")
            answer = resp.json()
            arm = answer["arm"]
            expected = offline[arm][start:start + len(chunk)]
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
    _write_json(
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


class _SimulatedUsers:
    """Request bodies and the feedback a user would give, drawn from a held-out split."""

    def __init__(self, plan: Plan, splits: DataSplits):
        import numpy as np

        cfg = plan.recipe.traffic
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed if cfg.seed is not None else plan.recipe.seed)
        self.frame = getattr(splits, cfg.source)
        self.features = list(splits.dataset.features)
        self.target = splits.dataset.target
        classes = list(splits.dataset.classes)
        self.relevant = classes[-1]  # ranking: items of the last class are the ones users click

    def request(self, i: int) -> tuple[dict, dict, Any]:
        """(body, headers, truth) of request ``i``."""
        n = 1 if self.cfg.endpoint == "predict" else self.cfg.rank_size
        rows = self.frame.iloc[self.rng.integers(0, len(self.frame), size=n)]
        instances = [{f: float(v) for f, v in zip(self.features, r)} for r in rows[self.features].to_numpy()]
        headers = {"X-User-Id": f"user-{int(self.rng.integers(0, self.cfg.users))}"}
        if self.cfg.endpoint == "predict":
            return {"instances": instances}, headers, rows[self.target].iloc[0]
        item_ids = [f"item-{i}-{k}" for k in range(n)]
        truth = {iid for iid, t in zip(item_ids, rows[self.target]) if t == self.relevant}
        return {"instances": instances, "item_ids": item_ids}, headers, truth

    def feedback(self, request_id: str, answer: dict, truth: Any) -> dict:
        if self.cfg.endpoint == "predict":
            label = truth.item() if hasattr(truth, "item") else truth
            return {"request_id": request_id, "label": label}
        # position-biased clicks: a relevant item at position p is clicked with prob 1/(1+p)^0.5
        clicks = [iid for p, iid in enumerate(answer.get("ranking", []))
                  if iid in truth and self.rng.random() < 1.0 / (1.0 + p) ** 0.5]
        return {"request_id": request_id, "clicks": clicks}


def _stage_traffic(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Simulated users: requests with a sticky key, late feedback, and the strategy's decisions acted on."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from .components import Decision, Verdict
    from .serving import fetch_events

    cfg = plan.recipe.traffic
    users = _SimulatedUsers(plan, state.splits)
    url = state.app.url.rstrip("/") + "/" + cfg.endpoint
    feedback_url = state.app.url.rstrip("/") + "/feedback"
    strategy_name = plan.stage("serve").component.type
    arms = {arm: _registry_ref(state, str(ref), f"serve.models.{arm}") for arm, ref in plan.recipe.serve.models.items()}
    progress = ctx.progress(total=cfg.requests, description=f"simulated requests ({strategy_name})")
    per_arm: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    pending: collections.deque = collections.deque()
    decisions: list[dict] = []
    seen_events = 0
    clients = [httpx.Client(timeout=30.0) for _ in range(cfg.concurrency)]

    def send(job: tuple[int, dict, dict, Any]) -> tuple[int, Any, Any]:
        i, body, headers, truth = job
        resp = clients[i % len(clients)].post(url, json=body, headers=headers)
        return resp.status_code, (resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}), truth

    def act_on_events() -> bool:
        nonlocal seen_events
        events = fetch_events(state.app, since=seen_events)
        seen_events += len(events)
        finished = False
        for event in events:
            verdict = Verdict(event["verdict"])
            decision = Decision(verdict, event.get("reason", ""), event.get("weights"), event.get("arm"))
            record = {"after_requests": sent, **event}
            if verdict is Verdict.PROMOTE:
                arm = decision.arm or (max(decision.weights, key=decision.weights.get) if decision.weights else None)
                if arm in arms:
                    version = state.registry.get(arms[arm])
                    state.registry.set_alias("model", version.name, "prod", version.id)
                    record["prod"] = f"{version.name}:{version.id}"
                    ctx.logger.info("promoted arm %s: %s is now %s@prod", arm, record["prod"], version.name)
            decisions.append(record)
            components.notify("on_rollout_decided", decision=decision, strategy=strategy_name)
            finished = finished or verdict in (Verdict.PROMOTE, Verdict.ROLLBACK)
        return finished

    sent = 0
    stopped_early = False
    with ThreadPoolExecutor(cfg.concurrency) as pool:
        try:
            while sent < cfg.requests:
                batch = [(sent + k, *users.request(sent + k)) for k in range(min(cfg.concurrency * 5, cfg.requests - sent))]
                for status, answer, truth in pool.map(send, batch):
                    statuses[status] += 1
                    if status == 200:
                        per_arm[answer.get("arm", "?")] += 1
                        if cfg.feedback:
                            pending.append(users.feedback(answer["request_id"], answer, truth))
                sent += len(batch)
                progress.advance(len(batch))
                if cfg.feedback and len(pending) > cfg.feedback_lag:
                    late = [pending.popleft() for _ in range(len(pending) - cfg.feedback_lag)]
                    users.rng.shuffle(late)  # out of order, as real feedback arrives
                    clients[0].post(feedback_url, json={"feedback": late})
                if act_on_events() and cfg.stop_on_decision:
                    stopped_early = sent < cfg.requests
                    break
            if cfg.feedback and pending:
                clients[0].post(feedback_url, json={"feedback": list(pending)})
            act_on_events()
            strategy_state = clients[0].get(state.app.url.rstrip("/") + "/-/strategy",
                                            headers={"X-Admin-Token": plan.recipe.serve.admin_token or ""}).json()
        finally:
            for c in clients:
                c.close()
    ctx.metric("requests", sent)
    ctx.metric("errors", sum(n for code, n in statuses.items() if code != 200))
    ctx.metric("share", {arm: round(n / max(sum(per_arm.values()), 1), 3) for arm, n in sorted(per_arm.items())})
    ctx.metric("decision", decisions[-1]["verdict"] if decisions else "hold")
    if decisions:
        ctx.metric("reason", decisions[-1].get("reason", ""))
    ctx.metric("stopped_early", stopped_early)
    _write_json(ctx.out_dir / "traffic.json", {
        "requests": sent, "statuses": dict(statuses), "per_arm": dict(per_arm), "decisions": decisions,
        "strategy": strategy_state,
    })


def _stage_batch(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    predictions = stage.component.build().predict(state.exported, state.splits.test, ctx)
    ctx.metric("rows", len(predictions))


def _stage_monitor(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    from .serving import fetch_records

    frame = fetch_records(state.app)
    served = ServedWindow(frame=frame, features=list(state.splits.dataset.features))
    alerts: list[str] = []
    reports = []
    for planned in stage.components:
        report = planned.build().evaluate(served, state.splits, ctx)
        reports.append(dataclasses.asdict(report))
        for alert in report.alerts:
            alerts.append(f"{planned.type}: {alert}")
            components.notify("on_alert_raised", monitor=planned.type, alert=alert)
        for key, value in report.metrics.items():
            ctx.metric(key, value)
    ctx.metric("alerts", len(alerts))
    _write_json(ctx.out_dir / "reports.json", reports)


RUNNERS: dict[str, Callable[..., None]] = {
    "data": _stage_data,
    "checks": _stage_checks,
    "version": _stage_version,
    "label": _stage_label,
    "train": _stage_train,
    "compress": _stage_compress,
    "export": _stage_export,
    "register": _stage_register,
    "serve": _stage_serve,
    "online_eval": _stage_online_eval,
    "traffic": _stage_traffic,
    "batch": _stage_batch,
    "monitor": _stage_monitor,
}

RAY_STAGES = {"train", "compress", "serve", "batch"}


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def new_run_dir(plan: Plan) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(plan.recipe.runs_dir).expanduser().resolve()
    run_dir = base / f"{stamp}-{plan.recipe.name}"
    n = 1
    while run_dir.exists():
        n += 1
        run_dir = base / f"{stamp}-{plan.recipe.name}-{n}"
    run_dir.mkdir(parents=True)
    return run_dir


def _attach_log(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    root = logging.getLogger("framework")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def execute(plan: Plan, components: Components, reporter: Reporter | None = None, keep_serving: bool | None = None) -> RunResult:
    """Run every enabled stage in order. Raises the stage's FrameworkError after writing the summary."""
    from omegaconf import OmegaConf

    from .registry import Registry

    reporter = reporter or Reporter()
    run_dir = new_run_dir(plan)
    (run_dir / "recipe.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plan.resolved)))
    _write_json(run_dir / "plan.json", plan.describe())
    handler = _attach_log(run_dir)
    state = RunState(registry=Registry(plan.recipe.store.uri))
    results: list[StageResult] = []
    failure: BaseException | None = None
    started = time.perf_counter()
    log.info("run %s of recipe %s (%s)", run_dir.name, plan.recipe.name, plan.recipe_path)
    try:
        ray_started = False
        for index, stage in enumerate(plan.stages):
            if not stage.enabled:
                results.append(StageResult(stage.name, stage.label(), "skipped", note=stage.note or "not in recipe"))
                continue
            if stage.name in RAY_STAGES and not ray_started:  # late: a failed check never pays for Ray
                from .engine import start_ray

                t0 = time.perf_counter()
                info = start_ray(plan.recipe.ray.address, plan.recipe.ray.num_cpus, plan.recipe.ray.namespace)
                results.append(StageResult("ray", "engine", "ok", time.perf_counter() - t0, {"address": info["address"]}))
                ray_started = True
            ctx = RunStageContext(
                stage=stage.name,
                out_dir=run_dir / "stages" / f"{index:02d}-{stage.name}",
                seed=plan.recipe.seed,
                logger=logging.getLogger(f"framework.stage.{stage.name}"),
                progress_factory=reporter.progress,
            )
            reporter.stage_started(stage)
            components.notify("on_stage_started", stage=stage.name, component=stage.label())
            t0 = time.perf_counter()
            try:
                RUNNERS[stage.name](plan, stage, state, ctx, components)
            except FrameworkError as exc:
                result = StageResult(stage.name, stage.label(), "failed", time.perf_counter() - t0, dict(ctx.metrics), str(exc))
                raise
            except Exception as exc:  # a plugin bug: name the stage and component
                result = StageResult(stage.name, stage.label(), "failed", time.perf_counter() - t0, dict(ctx.metrics), repr(exc))
                raise StageError(f"stage '{stage.name}' ({stage.label()}) failed: {exc!r}") from exc
            else:
                result = StageResult(stage.name, stage.label(), "ok", time.perf_counter() - t0, dict(ctx.metrics))
            finally:
                results.append(result)
                _write_json(ctx.out_dir / "metrics.json", result.metrics)
                reporter.stage_finished(result)
                components.notify(
                    "on_stage_finished", stage=stage.name, component=stage.label(), status=result.status,
                    seconds=result.seconds, metrics=result.metrics,
                )
    except BaseException as exc:  # includes KeyboardInterrupt: still write the summary
        failure = exc
    status = "failed" if failure else "ok"
    summary = {
        "recipe": plan.recipe.name,
        "recipe_hash": plan.recipe_hash,
        "status": status,
        "error": str(failure) if failure else None,
        "seconds": round(time.perf_counter() - started, 3),
        "data_version": state.data_version.ref if state.data_version else None,
        "model_version": state.model_version.ref if state.model_version else None,
        "endpoint": state.app.predict_url if state.app else None,
        "stages": [dataclasses.asdict(r) for r in results],
    }
    _write_json(run_dir / "summary.json", summary)
    result = RunResult(run_dir, status, results, summary, state)
    reporter.summary(result)
    try:
        components.notify("on_run_finished", run_dir=str(run_dir), summary=summary)
        keep = plan.recipe.serve.keep_serving if keep_serving is None else keep_serving
        if state.app is not None and failure is None and keep:
            _serve_until_interrupted(state.app, reporter)
    finally:
        if state.app is not None:
            from .serving import shutdown_app

            shutdown_app(state.app)
        logging.getLogger("framework").removeHandler(handler)
        handler.close()
    if failure is not None:
        raise failure
    return result


def _serve_until_interrupted(app: Any, reporter: Reporter) -> None:
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # Ray Tune leaves its own SIGINT handler installed after a search; Ctrl-C and SIGTERM must
    # stop serving cleanly whatever ran before.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    reporter.console.print(f"[bold]serving at {app.predict_url}[/] (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        reporter.console.print("stopping")


def plan_recipe(overrides: list[str], components: Components | None = None) -> Plan:
    """Compose and validate a recipe into a Plan (the lifecycle hook ``on_plan_created`` fires)."""
    from .plugins import default_components
    from .plan import build_plan
    from .recipe import compose

    components = components or default_components()
    cfg, path = compose(overrides)
    plan = build_plan(cfg, path, components)
    components.notify("on_plan_created", plan=plan)
    return plan


__all__ = ["execute", "plan_recipe", "RunResult", "Reporter", "RecipeError"]
