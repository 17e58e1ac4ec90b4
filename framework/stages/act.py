"""The act stage: the recipe's actions (``actions: [...]``, each a plugin) on the monitors' alerts.

Every action taken is an event with its evidence (the alert and the monitor's figures), in
``actions.json``, the stage's metrics (so the run's summary) and ``run.log``. An action's
``cooldown_s`` is kept in the store (``actions/<recipe>/<key>.json``), so one incident starts
one retrain however many alerts, windows or runs report it. The core does what needs the
running system (``ActionContext.rollback``, ``ActionContext.retrain``); the plugins decide.
"""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any, Mapping

from ..artifacts import write_json
from ..components import Alert
from ..context import RunStageContext
from ..errors import FrameworkError, StageError
from ..plan import Plan, PlannedComponent, PlannedStage
from ..plugins import Components
from .state import RunState

ACTIONS_FILE = "actions.json"


def run_act(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    events = act_on_alerts(plan, stage.components, state.alerts, CoreActionContext(plan, state, ctx, components), ctx)
    if state.add_actions_to_report is not None:  # the monitoring report shows what was done
        state.add_actions_to_report(events)
    ctx.metric("alerts_seen", len(state.alerts))
    ctx.metric("actions_taken", sum(e["status"] == "done" for e in events))
    ctx.metric("actions_failed", sum(e["status"] == "failed" for e in events))
    ctx.metric("actions", [{k: e[k] for k in ("action", "status", "alert_kind") if k in e} for e in events])
    for event in events:  # what a retrain made of it, for the run's summary
        result = event.get("result") or {}
        if event["status"] == "done" and result.get("model_version"):
            ctx.metric("retrained_model", result["model_version"])
            ctx.metric("retrain_status", result.get("status", ""))
            if result.get("prod"):
                ctx.metric("prod", result["prod"])


def act_on_alerts(plan: Plan, actions: list[PlannedComponent], alerts: list[Alert], actx: Any,
                  ctx: RunStageContext) -> list[dict]:
    """Each action on each alert it is declared ``on``, minding its cooldown; the events, also
    written to ``actions.json``. A failing action is an event too (``failed``, with the error):
    the other actions still run."""
    events: list[dict] = []
    for planned in actions:
        trigger = planned.trigger
        action = planned.build()
        cooldown = _Cooldown(plan, planned.key, planned.type)
        for alert in alerts:
            if trigger is not None and not trigger.matches(alert.kind):
                continue
            event = {"action": planned.type, "key": planned.key, "alert_kind": alert.kind, "monitor": alert.monitor,
                     "alert": alert.message, "alert_time": alert.time, "evidence": alert.evidence,
                     "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            remaining = cooldown.remaining(trigger.cooldown_s if trigger else 0.0)
            if remaining > 0:
                event.update(status="cooldown", note=f"acted {trigger.cooldown_s - remaining:.0f} s ago; cooldown "
                                                     f"{trigger.cooldown_s:g} s")
                events.append(event)
                continue
            t0 = time.perf_counter()
            try:
                result = action.act(alert, actx)
            except Exception as exc:  # an action that fails is an event; the run goes on
                event.update(status="failed", error=str(exc) if isinstance(exc, FrameworkError) else repr(exc))
                ctx.logger.error("action %s (%s) failed on %s alert: %s", planned.type, planned.key, alert.kind,
                                 event["error"])
            else:
                event.update(status="done", result=result if isinstance(result, dict) else {"result": result})
                ctx.logger.info("action %s (%s) on %s alert of %s: %s", planned.type, planned.key, alert.kind,
                                alert.monitor, json.dumps(event["result"], default=str)[:500])
            event["seconds"] = round(time.perf_counter() - t0, 3)
            if trigger is not None and trigger.cooldown_s > 0:
                cooldown.start()
            events.append(event)
    write_json(ctx.out_dir / ACTIONS_FILE, events)
    return events


class _Cooldown:
    """When an action last acted, kept in the store so a later run or ``monitor`` call sees it."""

    def __init__(self, plan: Plan, key: str, name: str):
        uri = plan.recipe.store.uri
        base = Path(".framework") if "://" in uri else Path(uri).expanduser()
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in f"{key}-{name}")
        self.path = base / "actions" / plan.recipe.name / f"{safe}.json"

    def remaining(self, cooldown_s: float) -> float:
        if cooldown_s <= 0 or not self.path.exists():
            return 0.0
        try:
            last = float(json.loads(self.path.read_text())["last"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0
        return max(0.0, last + cooldown_s - time.time())

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, {"last": time.time()})


class CoreActionContext:
    """``components.ActionContext``: what an action may do to this run's running system."""

    def __init__(self, plan: Plan, state: RunState, ctx: RunStageContext, components: Components):
        self.plan, self.state, self.ctx, self.components = plan, state, ctx, components
        self.logger: logging.Logger = ctx.logger
        self.out_dir: Path = ctx.out_dir
        self.retrains = 0

    @property
    def app_url(self) -> str | None:
        return self.state.app.url if self.state.app is not None else None

    def rollback(self, reason: str) -> dict:
        """``POST -/admin/rollback`` with the admin token: the strategy's event (or why it refused)."""
        import httpx

        if self.state.app is None:
            raise StageError("rollback: nothing is served in this run")
        url = self.state.app.url.rstrip("/") + "/-/admin/rollback"
        resp = httpx.post(url, json={"reason": reason[:500]}, headers=self.state.app.admin_headers(), timeout=30.0)
        if resp.status_code == 409:  # the strategy has nothing to roll back (e.g. a single model)
            return {"rolled_back": False, "refused": resp.json().get("error", resp.text)}
        if resp.status_code != 200:
            raise StageError(f"rollback: {url} answered {resp.status_code}: {resp.text[:300]}")
        body = resp.json()
        return {"rolled_back": True, "event": body.get("event"), "weights": body.get("state", {}).get("weights")}

    def retrain(self, alert: Alert, data: Mapping[str, Any], rollout: Any, rollout_config: Any) -> dict:
        self.retrains += 1
        out = self.ctx.out_dir / f"retrain-{self.retrains}"
        return retrain_and_roll_out(self.plan, self.state, self.components, self.ctx, out, alert, dict(data or {}),
                                    rollout, rollout_config)


class RecordLogActionContext:
    """The ``ActionContext`` of ``python -m framework monitor``: it reads a record log, so it acts
    by itself (log, webhook) but does not hold the running app (no rollback) nor a run's state
    (no retrain); those fail as events saying so."""

    def __init__(self, ctx: RunStageContext):
        self.logger: logging.Logger = ctx.logger
        self.out_dir: Path = ctx.out_dir
        self.app_url = None

    def rollback(self, reason: str) -> dict:
        raise StageError("rollback: `python -m framework monitor` reads a record log and does not hold the app; "
                         "declare the rollback in the recipe the service runs (its act stage)")

    def retrain(self, alert: Alert, data: Mapping[str, Any], rollout: Any, rollout_config: Any) -> dict:
        raise StageError("retrain: `python -m framework monitor` does not retrain; the act stage of "
                         "`python -m framework run` does")


# ---------------------------------------------------------------------------------------------
# Retrain: the recipe's own stages on the newest data version, then a canary against prod
# ---------------------------------------------------------------------------------------------
#: the stages a retrain reruns, in the stage table's order
RETRAIN_STAGES = ("data", "checks", "version", "label", "features", "train", "compress", "export", "gate", "register")


def retrain_plan(plan: Plan, components: Components, data: dict) -> Plan:
    """The recipe again, with ``data`` overriding its data section, nothing served or monitored,
    and no ``prod`` alias at registration (the rollout decides that)."""
    from omegaconf import OmegaConf

    from ..plan import build_plan
    from ..recipe import RecipeConfig

    resolved = copy.deepcopy(plan.resolved)
    resolved["data"] = {**(resolved.get("data") or {}), **data}
    aliases = [a for a in resolved.get("register", {}).get("aliases", []) if a != "prod"]
    resolved.setdefault("register", {})["aliases"] = aliases
    resolved.setdefault("serve", {})["enabled"] = False
    resolved["monitor"], resolved["actions"] = [], []
    try:
        cfg = OmegaConf.merge(OmegaConf.structured(RecipeConfig), resolved)
        return build_plan(cfg, plan.recipe_path, components)
    except FrameworkError as exc:
        raise StageError(f"retrain: the recipe with data {data} does not plan: {exc}") from None


def retrain_and_roll_out(plan: Plan, state: RunState, components: Components, ctx: RunStageContext, out: Path,
                         alert: Alert, data: dict, rollout: Any, rollout_config: Any) -> dict:
    """Rerun data ▸ … ▸ register for the newest data version; if it is newer than the served
    model's, canary the new model against ``prod`` with ``rollout`` on the running app and drive
    it with the recipe's simulated users (``traffic``) until the strategy decides."""
    from .traffic import BackgroundUsers

    if state.app is None or not plan.recipe.traffic.enabled:
        return _retrain_and_roll_out(plan, state, components, ctx, out, alert, data, rollout, rollout_config, None)
    # simulated users keep using the app while it retrains and redeploys: what they got is evidence too
    with BackgroundUsers(plan, state) as users:
        return _retrain_and_roll_out(plan, state, components, ctx, out, alert, data, rollout, rollout_config, users)


def _retrain_and_roll_out(plan: Plan, state: RunState, components: Components, ctx: RunStageContext, out: Path,
                          alert: Alert, data: dict, rollout: Any, rollout_config: Any, users: Any) -> dict:
    from .serve import deploy_models, served_model
    from .state import RunState as _State
    from .traffic import drive_traffic

    t0 = time.perf_counter()
    sub = retrain_plan(plan, components, data)
    sub_state = _State(registry=state.registry)
    result: dict[str, Any] = {"trigger": {"monitor": alert.monitor, "kind": alert.kind, "alert": alert.message},
                              "data_overrides": data, "served_data_version": state.data_ref}
    stages = [s for s in sub.stages if s.name in RETRAIN_STAGES and s.enabled]
    for index, stage in enumerate(stages):
        sctx = RunStageContext(stage=stage.name, out_dir=out / f"{index:02d}-{stage.name}", seed=plan.recipe.seed,
                               logger=logging.getLogger(f"framework.stage.retrain.{stage.name}"),
                               progress_factory=ctx.progress_factory, registry=state.registry)
        components.hooks.stage_started(f"retrain.{stage.name}", stage.label())
        s0 = time.perf_counter()
        try:
            stage.spec.load_runner()(sub, stage, sub_state, sctx, components)
        except FrameworkError:
            components.hooks.stage_finished(f"retrain.{stage.name}", stage.label(), "failed", time.perf_counter() - s0,
                                            dict(sctx.metrics))
            raise
        write_json(sctx.out_dir / "metrics.json", sctx.metrics)
        components.hooks.stage_finished(f"retrain.{stage.name}", stage.label(), "ok", time.perf_counter() - s0,
                                        dict(sctx.metrics))
        if stage.name == "version":
            result["data_version"] = sub_state.data_ref
            if sub_state.data_ref == state.data_ref:
                result.update(status="no newer data", seconds=round(time.perf_counter() - t0, 3))
                return result
    new = sub_state.model_version
    result["model_version"] = new.ref
    result["retrain_seconds"] = round(time.perf_counter() - t0, 3)
    if state.app is None:
        result["status"] = "registered (nothing served to roll out to)"
        return result
    # the canary: prod against the new model, on the running app, with the rollout strategy
    model_name = plan.recipe.register.model_name
    try:
        prod = state.registry.get(f"{model_name}@prod", kind="model")
    except FrameworkError as exc:
        raise StageError(f"retrain: registered {new.ref}, but there is no {model_name}@prod to canary it against "
                         f"({exc}); give the served model the alias with register.aliases: [latest, prod]") from None
    champion = getattr(rollout_config, "champion", "champion")
    challenger = getattr(rollout_config, "challenger", "challenger")
    arms = {champion: prod.ref, challenger: new.ref}
    models = [served_model(sub_state, arm, ref) for arm, ref in arms.items()]
    r0 = time.perf_counter()
    state.app = deploy_models(plan, models, rollout, rollout_config)
    result["rollout"] = {"strategy": getattr(rollout, "name", str(rollout)), "arms": arms,
                         "deploy_seconds": round(time.perf_counter() - r0, 3)}
    if not plan.recipe.traffic.enabled:
        result["status"] = "canary running (no simulated traffic in this recipe: live users decide)"
        return result
    tctx = RunStageContext(stage="rollout", out_dir=out / "rollout", seed=plan.recipe.seed,
                           logger=logging.getLogger("framework.stage.retrain.rollout"),
                           progress_factory=ctx.progress_factory, registry=state.registry)
    if users is not None:
        users.stop()
        result["during_retrain_and_deploy"] = users.summary()
    traffic = drive_traffic(plan, state, tctx, components, arms, result["rollout"]["strategy"])
    write_json(tctx.out_dir / "metrics.json", tctx.metrics)
    decisions = traffic["decisions"]
    final = decisions[-1] if decisions else {"verdict": "hold"}
    result["rollout"].update(requests=traffic["requests"], statuses=traffic["statuses"],
                             errors=sum(n for code, n in traffic["statuses"].items() if int(code) != 200),
                             verdict=final.get("verdict"), reason=final.get("reason", ""), prod=final.get("prod"))
    result["prod"] = state.registry.get(f"{model_name}@prod", kind="model").ref
    result["promoted"] = result["prod"] == new.ref
    result["decided_at"] = time.time()
    result["status"] = "promoted" if result["promoted"] else f"not promoted ({final.get('verdict')})"
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result
