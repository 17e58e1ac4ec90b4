"""Simulated users for the traffic stage: requests with a sticky user id, late and out-of-order
feedback, and the strategy's promotions and rollbacks acted on (registry aliases, hooks)."""
from __future__ import annotations

import threading
import time
from typing import Any

from ..artifacts import write_json
from ..components import DataSplits, Decision, Verdict, raw_instances
from ..context import RunStageContext
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


class SimulatedUsers:
    """Request bodies and the feedback a user would give, drawn from a held-out split."""

    def __init__(self, plan: Plan, splits: DataSplits):
        import numpy as np

        cfg = plan.recipe.traffic
        self.cfg = cfg
        self.rng = np.random.default_rng(cfg.seed if cfg.seed is not None else plan.recipe.seed)
        self.frame = getattr(splits, cfg.source) if not cfg.path else _rows_file(cfg.path, splits)
        self.features = list(splits.dataset.features)
        self.target = splits.dataset.target
        classes = list(splits.dataset.classes or [None])  # a regression has none
        self.relevant = classes[-1]  # ranking: items of the last class are the ones users click

    def request(self, i: int) -> tuple[dict, dict, Any]:
        """(body, headers, truth) of request ``i``."""
        n = 1 if self.cfg.endpoint == "predict" else self.cfg.rank_size
        rows = self.frame.iloc[self.rng.integers(0, len(self.frame), size=n)]
        instances = raw_instances(rows, self.features)  # raw values: strings, nulls
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


def _rows_file(path: str, splits: DataSplits) -> Any:
    """``traffic.path``: rows of a CSV file with the data's feature and target columns."""
    from pathlib import Path

    import pandas as pd

    from ..errors import StageError

    if not Path(path).is_file():
        raise StageError(f"traffic.path: no file {path} (relative to {Path.cwd()})")
    frame = pd.read_csv(path)
    wanted = [*splits.dataset.features, splits.dataset.target]
    missing = [c for c in wanted if c not in frame.columns]
    if missing:
        raise StageError(f"traffic.path: {path} lacks the column(s) {', '.join(missing)} the model's data has")
    if not len(frame):
        raise StageError(f"traffic.path: {path} has no rows")
    return frame


def run_traffic(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Simulated users: requests with a sticky key, late feedback, and the strategy's decisions acted on."""
    arms = {arm: state.registry_ref(str(ref), f"serve.models.{arm}") for arm, ref in plan.recipe.serve.models.items()}
    drive_traffic(plan, state, ctx, components, arms, plan.stage("serve").component.type)


def drive_traffic(plan: Plan, state: RunState, ctx: RunStageContext, components: Components, arms: dict[str, str],
                  strategy_name: str, requests: int | None = None) -> dict:
    """``requests`` (default ``traffic.requests``) simulated requests to the app serving ``arms``
    (arm -> registry ref); a promotion moves ``prod`` to the promoted arm's version. Returns
    what ``traffic.json`` holds."""
    import collections
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    from ..serving import fetch_events

    cfg = plan.recipe.traffic
    total = cfg.requests if requests is None else int(requests)
    users = SimulatedUsers(plan, state.splits)
    url = state.app.url.rstrip("/") + "/" + cfg.endpoint
    feedback_url = state.app.url.rstrip("/") + "/feedback"
    progress = ctx.progress(total=total, description=f"simulated requests ({strategy_name})")
    per_arm: collections.Counter = collections.Counter()
    statuses: collections.Counter = collections.Counter()
    pending: collections.deque = collections.deque()
    decisions: list[dict] = []
    seen_events = 0
    clients = [httpx.Client(timeout=30.0) for _ in range(cfg.concurrency)]

    def send(job: tuple[int, dict, dict, Any]) -> tuple[int, Any, Any]:
        i, body, headers, truth = job
        resp = clients[i % len(clients)].post(url, json=body, headers={**headers, **state.app.client_headers()})
        return resp.status_code, (resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}), truth

    def act_on_events() -> bool:
        nonlocal seen_events
        events = fetch_events(state.app, since=seen_events)
        seen_events += len(events)
        finished = False
        for event in events:
            verdict = Verdict(event["verdict"])
            decision = Decision(verdict, event.get("reason", ""), event.get("weights"), event.get("decision_arm"))
            record = {"after_requests": sent, **event}
            if verdict is Verdict.PROMOTE:
                arm = promoted_arm(event)
                if arm in arms:
                    version = state.registry.get(arms[arm])
                    state.registry.set_alias("model", version.name, "prod", version.id)
                    record["prod"] = f"{version.name}:{version.id}"
                    ctx.logger.info("promoted arm %s: %s is now %s@prod", arm, record["prod"], version.name)
            decisions.append(record)
            components.hooks.rollout_decided(decision, strategy_name)
            finished = finished or verdict in (Verdict.PROMOTE, Verdict.ROLLBACK)
        return finished

    sent = 0
    started_at = time.time()
    stopped_early = False
    with ThreadPoolExecutor(cfg.concurrency) as pool:
        try:
            while sent < total:
                batch = [(sent + k, *users.request(sent + k)) for k in range(min(cfg.concurrency * 5, total - sent))]
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
                    clients[0].post(feedback_url, json={"feedback": late}, headers=state.app.client_headers())
                if act_on_events() and cfg.stop_on_decision:
                    stopped_early = sent < total
                    break
            if cfg.feedback and pending:
                clients[0].post(feedback_url, json={"feedback": list(pending)}, headers=state.app.client_headers())
            act_on_events()
            strategy_state = clients[0].get(state.app.url.rstrip("/") + "/-/strategy",
                                            headers=state.app.admin_headers()).json()
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
    ctx.metric("started_at", started_at)
    out = {"started_at": started_at, "requests": sent, "statuses": dict(statuses), "per_arm": dict(per_arm), "decisions": decisions,
           "strategy": strategy_state}
    write_json(ctx.out_dir / "traffic.json", out)
    return out


def promoted_arm(event: dict) -> str | None:
    """The arm a PROMOTE event left answering everything: the host records it as ``arm`` (the
    decision's own arm, or the strategy's candidate); events of older hosts only carry weights."""
    if event.get("arm"):
        return event["arm"]
    weights = event.get("weights") or {}
    return max(weights, key=weights.get) if weights else None


class BackgroundUsers:
    """One simulated user sending requests (no feedback) to the app's URL from a thread, until
    stopped: what the app answered while something else happened (a retrain, a redeploy)."""

    def __init__(self, plan: Plan, state: RunState):
        import collections

        self.users = SimulatedUsers(plan, state.splits)
        self.url = state.app.url.rstrip("/") + "/" + plan.recipe.traffic.endpoint
        self.headers = state.app.client_headers()
        self.statuses: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="background-users", daemon=True)

    def _run(self) -> None:
        import httpx

        with httpx.Client(timeout=30.0) as client:
            i = 0
            while not self._stop.is_set():
                body, headers, _ = self.users.request(i)
                try:
                    status = client.post(self.url, json=body, headers={**headers, **self.headers}).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__  # refused, reset, timed out: a failed request too
                self.statuses[str(status)] += 1
                i += 1
                self._stop.wait(0.02)

    def __enter__(self) -> "BackgroundUsers":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=35.0)

    def summary(self) -> dict:
        return {"requests": sum(self.statuses.values()), "statuses": dict(self.statuses),
                "errors": sum(n for code, n in self.statuses.items() if code != "200")}
