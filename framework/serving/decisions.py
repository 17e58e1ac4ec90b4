"""One decision state for all ingress replicas of an app.

With one ingress replica the strategy lives in it (``StrategyHost``). With several, each replica
holding its own strategy would split an A/B test's counts, a canary's windows and every admin
command across replicas. Here instead:

* ``DecisionState`` (a Ray actor, one per app, created by ``deploy``) holds the one strategy that
  decides: every route, outcome and feedback of every replica reaches it, it asks for verdicts,
  applies admin commands and keeps the events;
* each replica's ``SharedStrategyHost`` routes locally from its copy of that strategy (routing
  stays in microseconds and never waits on the network), queues what happened and, every
  ``SYNC_INTERVAL_S``, sends the queue in one call and gets the current strategy back. A verdict
  or an admin command therefore reaches every replica within one interval; sticky routing
  (a hash of the user key over the weights) agrees across replicas because their copies agree.

Delivery is at least once per sync call: a call that fails is retried with the next one (the
queue is bounded: past ``MAX_PENDING`` the oldest events are dropped and counted). A replica that
starts (or restarts) takes the current strategy from the actor before its first request.
Feedback is still checked against the ledger of the replica that answered (the balancer sends a
user's feedback there when requests carry ``X-User-Id``).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Mapping

from ..components import Decision, Feedback, Outcome, Route, RouteRequest
from .host import StrategyHost

log = logging.getLogger("ray.serve")

#: how often a replica sends what it saw and takes the current strategy back
SYNC_INTERVAL_S = 0.05
#: events a replica keeps for the state holder while it cannot reach it
MAX_PENDING = 100_000


def actor_name(app_name: str) -> str:
    return f"{app_name}--decision-state"


class DecisionState:
    """The app's one strategy (run as a Ray actor: see the module docstring)."""

    def __init__(self, strategy_cls: type, strategy_config: Any, arms: Mapping[str, str]):
        self.host = StrategyHost(strategy_cls(strategy_config, arms=dict(arms)), arms)
        #: bumped by every change; a replica whose copy is this version gets no new copy
        self.version = 0
        self.received = {"routed": 0, "observe": 0, "feedback": 0}

    def sync(self, events: list[tuple], known_version: int) -> dict:
        """Apply a replica's queued ``(kind, item, route)`` events in order; the current view."""
        strategy = self.host.strategy
        for kind, item, route in events:
            self.received[kind] = self.received.get(kind, 0) + 1
            if kind == "routed":
                try:
                    strategy.routed(item, route)
                except Exception:
                    log.exception("strategy %s routed() failed", self.host.name)
            elif kind == "observe":
                self.host.observe(item)
            elif kind == "feedback":
                self.host.feedback(item)
        if events:
            self.version += 1
        return self.view(known_version)

    def view(self, known_version: int = -1) -> dict:
        return {
            "version": self.version,
            "strategy": None if known_version == self.version else self.host.strategy,
            "decision": self.host.decision,
            "event_count": self.host.event_count,
        }

    def apply(self, decision: Decision, source: str) -> tuple[dict, dict]:
        event = self.host.apply(decision, source)  # ValueError / NotImplementedError: refused
        self.version += 1
        return event, self.view()

    def set_weights(self, weights: Mapping[str, float]) -> dict:
        self.host.set_weights(weights)
        self.version += 1
        return self.view()

    def snapshot(self) -> dict:
        return {**self.host.snapshot(), "shared": {"version": self.version, "received": dict(self.received)}}

    def state(self) -> dict:
        return self.host.state()

    def events_since(self, since: int) -> tuple[list[dict], int]:
        return self.host.events_since(since), self.host.event_count


class SharedStrategyHost(StrategyHost):
    """A replica's host when the app's strategy is a ``DecisionState`` actor: routes from a local
    copy, queues the rest for the actor, never decides itself."""

    def __init__(self, strategy: Any, arms: Mapping[str, str], state: Any):
        super().__init__(strategy, arms)
        self._state = state
        self._pending: list[tuple] = []
        self._version = -1
        self._task: asyncio.Task | None = None
        self.dropped = 0
        import ray

        # before the first request: a new or restarted replica routes as the others do
        self._install(ray.get(state.view.remote(-1), timeout=60))

    # -- the request path: local, then queued ---------------------------------------------------
    def route(self, request_id: str, key: str | None) -> tuple[RouteRequest, Route]:
        self._keep_syncing()
        route_request, route = super().route(request_id, key)
        self._queue(("routed", route_request, route))
        return route_request, route

    def observe(self, outcome: Outcome) -> None:
        self._queue(("observe", outcome, None))

    def feedback(self, feedback: Feedback) -> None:
        self._keep_syncing()
        self._queue(("feedback", feedback, None))

    def decide(self) -> Decision | None:
        return self.decision  # the state holder's latest verdict

    def set_weights(self, weights: Mapping[str, float]) -> None:
        raise RuntimeError("with a shared decision state, weights are set through set_weights_async")

    def apply(self, decision: Decision, source: str = "admin") -> dict:
        raise RuntimeError("with a shared decision state, verdicts are applied through apply_async")

    # -- commands and reads go to the state holder --------------------------------------------
    async def apply_async(self, decision: Decision, source: str = "admin") -> dict:
        await self.sync()  # what this replica saw first, in order
        event, view = await self._state.apply.remote(decision, source)
        self._install(view)
        return event

    async def set_weights_async(self, weights: Mapping[str, float]) -> None:
        await self.sync()
        self._install(await self._state.set_weights.remote(dict(weights)))

    async def snapshot_async(self) -> dict:
        await self.sync()
        snapshot = await self._state.snapshot.remote()
        snapshot["shared"].update({"replica_version": self._version, "replica_dropped": self.dropped})
        return snapshot

    async def state_async(self) -> dict:
        return await self._state.state.remote()

    async def events_async(self, since: int) -> tuple[list[dict], int]:
        return await self._state.events_since.remote(since)

    # -- syncing -------------------------------------------------------------------------------
    async def sync(self) -> None:
        """Send the queue in one call; install the strategy the state holder sends back. On a
        failure the events go back to the front of the queue for the next call."""
        batch, self._pending = self._pending, []
        try:
            view = await self._state.sync.remote(batch, self._version)
        except BaseException:
            self._pending = batch + self._pending
            self._trim()
            raise
        self._install(view)

    def _install(self, view: dict) -> None:
        if view["strategy"] is not None:
            self.strategy = view["strategy"]
        self._version = view["version"]
        self.decision = view["decision"]
        self.event_count = view["event_count"]

    def _queue(self, event: tuple) -> None:
        self._pending.append(event)
        self._trim()

    def _trim(self) -> None:
        if len(self._pending) > MAX_PENDING:
            extra = len(self._pending) - MAX_PENDING
            del self._pending[:extra]
            self.dropped += extra

    def _keep_syncing(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._sync_forever())

    async def _sync_forever(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(SYNC_INTERVAL_S)
            try:
                await self.sync()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep answering from the copy; say so once per outage
                failures += 1
                if failures == 1:
                    log.error("decision state unreachable (%s); routing from the last copy, %d events queued",
                              exc, len(self._pending))
