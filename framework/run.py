"""Execute a Plan: each stage through its plugin component, into a run directory.

The run directory holds ``recipe.yaml`` (the resolved recipe), ``plan.json``, ``run.log``, one
folder per stage (its artifacts and ``metrics.json``) and ``summary.json``.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from .artifacts import write_json
from .context import RunStageContext
from .errors import FrameworkError, RecipeError, StageError
from .plan import Plan, PlannedStage
from .plugins import Components
from .stages import RunState
from .tokens import RedactingFilter, redact

log = logging.getLogger("framework.run")


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
        variants = next((r.metrics["variants"] for r in result.stages if "variants" in r.metrics), None)
        if variants:  # the compression comparison, measured on the same test rows
            compared = Table(title="model variants (test split, one thread)")
            compared.add_column("variant")
            compared.add_column("accuracy, size, batch-1 latency")
            for name, figures in variants.items():
                compared.add_row(name, str(figures))
            self.console.print(compared)
        self.console.print(f"run directory: {result.run_dir}")


_HEADLINE_KEYS = (
    "rows", "features", "classes", "checks_passed", "quarantined_rows", "readmitted_rows", "data_version",
    "batches", "quarantine_set_rows", "label_version", "labeled_rows",
    "label_accuracy_hidden", "queued_rows", "model", "test_accuracy", "test_auc", "epsilon",
    "val_accuracy",
    "trials", "max_abs_diff", "onnx_bytes", "model_version", "url", "rows_sent", "served_accuracy",
    "agreement", "latency_p50_ms", "columns_drifted", "alerts", "requests", "share", "decision", "reason",
    "variant", "size_mb", "latency_p95_ms", "ram_mb", "bundle_agreement",
    "actions_taken", "actions_failed", "retrain_status", "prod",
    "rows_per_s", "prediction_table", "hit_rate", "stale_share",
)


def _headline(result: StageResult) -> dict:
    return {k: result.metrics[k] for k in _HEADLINE_KEYS if k in result.metrics}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


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


def _attach_log(run_dir: Path, secrets: list[str]) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger("framework")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    return handler


def _check_registry_refs(plan: Plan, registry) -> None:
    """Every registered version a component will read exists: fail now, not after training."""
    for stage in plan.stages:
        for planned in stage.components if stage.enabled else ():
            for key, ref in planned.cls.registry_refs(planned.config).items():
                try:
                    registry.get(ref, kind="model")
                except FrameworkError as exc:
                    raise RecipeError(f"{planned.key}.{key}: {exc}") from None


def execute(plan: Plan, components: Components, reporter: Reporter | None = None, keep_serving: bool | None = None) -> RunResult:
    """Run every enabled stage in order. Raises the stage's FrameworkError after writing the summary."""
    from omegaconf import OmegaConf

    from .registry import Registry

    reporter = reporter or Reporter()
    run_dir = new_run_dir(plan)
    # Tokens are never in the recipe (a literal one is refused at plan time); redacting is the
    # second line of defence, for a token pasted into some other key or an error message.
    secrets = plan.tokens.values()
    (run_dir / "recipe.yaml").write_text(redact(OmegaConf.to_yaml(OmegaConf.create(plan.resolved)), secrets))
    write_json(run_dir / "plan.json", redact_data(plan.describe(), secrets))
    handler = _attach_log(run_dir, secrets)
    state = RunState(registry=Registry(plan.recipe.store.uri))
    results: list[StageResult] = []
    failure: BaseException | None = None
    started = time.perf_counter()
    ray_local = False  # this process started Ray itself (not ray.address, not a test session's)
    log.info("run %s of recipe %s (%s)", run_dir.name, plan.recipe.name, plan.recipe_path)
    try:
        _check_registry_refs(plan, state.registry)
        ray_started = False
        for index, stage in enumerate(plan.stages):
            if not stage.enabled:
                results.append(StageResult(stage.name, stage.label(), "skipped", note=stage.note or "not in recipe"))
                continue
            if stage.spec.needs_ray and not ray_started:  # late: a failed check never pays for Ray
                from .engine import start_ray

                t0 = time.perf_counter()
                info = start_ray(plan.recipe.ray.address, plan.recipe.ray.num_cpus, plan.recipe.ray.namespace)
                ray_local = info["started"]
                results.append(StageResult("ray", "engine", "ok", time.perf_counter() - t0, {"address": info["address"]}))
                ray_started = True
            ctx = RunStageContext(
                stage=stage.name,
                out_dir=run_dir / "stages" / f"{index:02d}-{stage.name}",
                seed=plan.recipe.seed,
                logger=logging.getLogger(f"framework.stage.{stage.name}"),
                progress_factory=reporter.progress,
                registry=state.registry,
            )
            reporter.stage_started(stage)
            components.hooks.stage_started(stage.name, stage.label())
            t0 = time.perf_counter()
            try:
                stage.spec.load_runner()(plan, stage, state, ctx, components)
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
                write_json(ctx.out_dir / "metrics.json", redact_data(result.metrics, secrets))
                reporter.stage_finished(result)
                components.hooks.stage_finished(stage.name, stage.label(), result.status, result.seconds, result.metrics)
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
    summary = redact_data(summary, secrets)
    write_json(run_dir / "summary.json", summary)
    result = RunResult(run_dir, status, results, summary, state)
    reporter.summary(result)
    kept_serving = False
    try:
        components.hooks.run_finished(str(run_dir), summary)
        keep = plan.recipe.serve.keep_serving if keep_serving is None else keep_serving
        if state.app is not None and failure is None and keep:
            kept_serving = True
            from .stages.batch import BatchSchedule

            _serve_until_interrupted(state.app, reporter, BatchSchedule.from_run(plan, state, components, run_dir))
    finally:
        if state.app is not None:
            _stop_serving(state.app, with_ray=ray_local and kept_serving)
        logging.getLogger("framework").removeHandler(handler)
        handler.close()
    if failure is not None:
        raise failure
    return result


def _stop_serving(app: Any, with_ray: bool) -> None:
    """Remove the app. ``with_ray`` (serving until Ctrl-C on a Ray this run started): Ray goes down
    with it, at once; deleting the app first would only wait on Serve's graceful stop of replicas
    that die with Ray anyway."""
    if with_ray:
        from .engine import stop_ray
        from .serving.ingress_modes import stop as stop_following

        stop_following(app.app_name)  # its balancer, if any
        stop_ray()
    else:
        from .serving import shutdown_app

        shutdown_app(app)


def redact_data(data: Any, secrets: list[str]) -> Any:
    """JSON-able ``data`` with every secret replaced inside its strings."""
    if not secrets:
        return data
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return {redact_data(k, secrets): redact_data(v, secrets) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v, secrets) for v in data]
    return data


def _serve_until_interrupted(app: Any, reporter: Reporter, schedule: Any = None) -> None:
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        # the first Ctrl-C stops; more while stopping must not break the stop half-way
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise KeyboardInterrupt

    # Ray Tune leaves its own SIGINT handler installed after a search; Ctrl-C and SIGTERM must
    # stop serving cleanly whatever ran before.
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    reporter.console.print(f"[bold]serving at {app.predict_url}[/] (Ctrl-C to stop)")
    try:
        while True:
            time.sleep(1.0)
            if schedule is not None:  # batch re-runs (batch.schedule): the app keeps answering meanwhile
                try:
                    done = schedule.tick()
                except Exception as exc:  # a failed re-run leaves the served table as it was
                    logging.getLogger("framework").exception("batch re-run failed")
                    reporter.console.print(f"[red]batch re-run failed[/]: {exc}")
                else:
                    if done is not None:
                        reporter.console.print(f"batch re-run ({done['reason']}): {done.get('prediction_table')}, "
                                               f"{done.get('rows')} rows")
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
    components.hooks.plan_created(plan)
    return plan


__all__ = ["execute", "plan_recipe", "RunResult", "Reporter", "RecipeError"]
