"""Traffic strategy ``shadow``: the primary answers; other arms get a mirrored copy of requests.

Shadowing never moves traffic: ``decide()`` always holds. It measures, per completed window of
``window_requests`` primary answers, how often each shadow agrees with the primary on the same
request, and their latency and error rates, so an operator can PROMOTE (the first shadow becomes
the primary) or ROLLBACK (stop mirroring) through the admin endpoint after reading the record.

Which requests are mirrored is a pure function of the request id (blake2b hash below
``fraction``), so a retried request is mirrored or not the same way, and ``observe`` can tell
without remembering every route. Predictions are paired by request id in a small bounded map:
answers arrive in any order, and a pair whose other half never comes is evicted.
"""
from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Mapping, Optional, Sequence

from framework.components import Decision, Outcome, Route, RouteRequest, TrafficStrategy, Verdict
from framework.errors import RecipeError
from framework.strategy_tools import nearest_rank_percentile as _percentile
from framework.strategy_tools import same_prediction as _same
from framework.hookspecs import hookimpl

#: latency samples kept per arm (overall and per window): enough for a stable p99, cheap to sort
LATENCY_WINDOW = 2048
#: requests whose answers are still waiting for their pair (older ones are evicted)
PENDING_MAX = 4096
#: window records kept in state()["windows"]
WINDOWS_KEPT = 100

class _Sentinel:
    """A marker that keeps its identity through pickle (the host ships strategies to replicas)."""

    def __init__(self, name: str):
        self.name = name

    def __reduce__(self):
        return self.name  # pickled as a reference to the module global of that name

    def __repr__(self) -> str:
        return self.name


_UNSET = _Sentinel("_UNSET")  # the primary has not answered this request yet
_ERROR = _Sentinel("_ERROR")  # the arm failed on this request: nothing to compare


@dataclass
class ShadowConfig:
    #: the arm that answers clients; None: "primary" or "champion" if declared, else the first arm
    primary: Optional[str] = None
    #: share of requests mirrored to every other arm, chosen by hashing the request id
    fraction: float = 1.0
    #: primary answers per comparison window
    window_requests: int = 200


class _ArmStats:
    """Counters of one arm, overall and for the current window."""

    __slots__ = ("requests", "errors", "latencies", "w_requests", "w_errors", "w_latencies")

    def __init__(self) -> None:
        self.requests = self.errors = self.w_requests = self.w_errors = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)
        self.w_latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)

    def new_window(self) -> None:
        self.w_requests = self.w_errors = 0
        self.w_latencies.clear()


class ShadowStrategy(TrafficStrategy):
    name = "shadow"
    Config = ShadowConfig
    summary = "primary answers; other arms get mirrored requests; records agreement, latency, errors"
    sticky = True  # the primary never depends on the request

    def __init__(self, config: ShadowConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        self.primary = self.routable[0]  # incumbent() by default
        self._candidates = tuple(self.routable[1:])
        self.shadow_arms: tuple[str, ...] = self._candidates
        # the fraction threshold on a 64-bit hash: integer compare, no float division per request
        self._threshold = int(min(max(self.config.fraction, 0.0), 1.0) * 2**64)
        self._stats = {arm: _ArmStats() for arm in self.arms}
        self._pending: OrderedDict[str, list] = OrderedDict()
        # per shadow: [compared, agreed] overall and in the current window
        self._agree = {arm: [0, 0] for arm in self._candidates}
        self._w_agree = {arm: [0, 0] for arm in self._candidates}
        self._w_mirrored = 0
        self.window = 1
        self.windows: deque[dict] = deque(maxlen=WINDOWS_KEPT)
        self.finished: str | None = None  # reason, once an operator applied PROMOTE / ROLLBACK
        self._build_routes()
        self._progress_cache: tuple[int, Decision] | None = None
        self._hold = Decision(Verdict.HOLD, f"window 1: 0/{self.config.window_requests} requests", self._weights)

    # -- plan-time validation --------------------------------------------------------------
    @classmethod
    def check_config(cls, config: ShadowConfig, key: str, refs: Mapping[str, type] | None = None) -> None:
        if not 0.0 <= config.fraction <= 1.0:
            raise RecipeError(f"{key}.fraction: share of mirrored requests must be in [0, 1], got {config.fraction}")
        if config.window_requests < 1:
            raise RecipeError(f"{key}.window_requests: must be >= 1, got {config.window_requests}")

    @classmethod
    def arm_names(cls, config: ShadowConfig | None, arms: Mapping[str, str]) -> Sequence[str]:
        """The primary first, then the shadows in declaration order."""
        declared = list(arms)
        if len(declared) < 2:
            raise RecipeError(
                f"serve.models: strategy 'shadow' mirrors requests to other arms, but serve.models declares "
                f"{len(declared)} arm(s) ({', '.join(declared) or 'none'}). Declare a primary and at least one "
                f"shadow, e.g. serve.models={{primary: this_run, shadow: NAME@champion}}."
            )
        primary = getattr(config, "primary", None)
        if primary is None:
            primary = next((a for a in ("primary", "champion") if a in arms), declared[0])
        elif primary not in arms:
            raise RecipeError(
                f"strategy.primary: '{primary}' is not an arm of serve.models "
                f"(declared: {', '.join(declared)}). Set strategy.primary to one of them."
            )
        return [primary] + [a for a in declared if a != primary]

    # -- roles for apply() -----------------------------------------------------------------
    def candidate(self) -> str:
        """The first shadow (the default, the last arm, differs with several shadows)."""
        return self._candidates[0]

    # -- hot path --------------------------------------------------------------------------
    def _build_routes(self) -> None:
        self._plain = Route(self.primary)
        self._mirrored = Route(self.primary, self.shadow_arms) if self.shadow_arms else self._plain
        self._all = self._threshold >= 2**64
        self._none = self._threshold <= 0 or not self.shadow_arms
        self._weights = {arm: 1.0 if arm == self.primary else 0.0 for arm in self.arms}  # who answers clients

    def _is_mirrored(self, request_id: str) -> bool:
        if self._all:
            return True
        if self._none:
            return False
        return int.from_bytes(blake2b(request_id.encode(), digest_size=8).digest(), "big") < self._threshold

    def choose(self, request: RouteRequest) -> Route:
        return self._mirrored if self._is_mirrored(request.request_id) else self._plain

    def observe(self, outcome: Outcome) -> None:
        stats = self._stats.get(outcome.arm)
        if stats is None:  # not an arm of ours
            return
        stats.requests += 1
        stats.w_requests += 1
        if outcome.error:
            stats.errors += 1
            stats.w_errors += 1
        else:
            stats.latencies.append(outcome.latency_ms)
            stats.w_latencies.append(outcome.latency_ms)
        if not self.shadow_arms:
            return
        value = _ERROR if outcome.error else outcome.prediction
        if outcome.arm == self.primary:
            if self._is_mirrored(outcome.request_id):
                self._w_mirrored += 1
                self._primary_answer(outcome.request_id, value)
        elif outcome.arm in self._w_agree:
            self._shadow_answer(outcome.request_id, outcome.arm, value)

    def _primary_answer(self, rid: str, value: Any) -> None:
        entry = self._pending.get(rid)
        if entry is None:
            self._remember(rid, [value, {}, set()])
            return
        if entry[0] is not _UNSET:
            return  # duplicate primary answer: the first one counts
        entry[0] = value
        for arm, shadow_value in entry[1].items():
            self._compare(arm, value, shadow_value)
            entry[2].add(arm)
        entry[1].clear()
        if len(entry[2]) >= len(self.shadow_arms):
            del self._pending[rid]

    def _shadow_answer(self, rid: str, arm: str, value: Any) -> None:
        entry = self._pending.get(rid)
        if entry is None:
            self._remember(rid, [_UNSET, {arm: value}, set()])
        elif entry[0] is _UNSET:
            entry[1][arm] = value  # waits for the primary
        elif arm not in entry[2]:
            self._compare(arm, entry[0], value)
            entry[2].add(arm)
            if len(entry[2]) >= len(self.shadow_arms):
                del self._pending[rid]

    def _remember(self, rid: str, entry: list) -> None:
        self._pending[rid] = entry
        if len(self._pending) > PENDING_MAX:
            self._pending.popitem(last=False)  # the oldest pair never completed

    def _compare(self, arm: str, primary_value: Any, shadow_value: Any) -> None:
        if primary_value is _ERROR or shadow_value is _ERROR:
            return  # a failed answer agrees with nothing; it is counted as an error instead
        agreed = _same(primary_value, shadow_value)
        for counters in (self._agree[arm], self._w_agree[arm]):
            counters[0] += 1
            counters[1] += agreed

    # -- decisions -------------------------------------------------------------------------
    def decide(self) -> Decision:
        if self.finished is not None:
            return self._hold
        requests = self._stats[self.primary].w_requests
        if requests < self.config.window_requests:
            return self._hold if requests == 0 else self._progress(requests)
        record = self._close_window()
        reason = f"window {record['window']} ({record['requests']} requests): " + "; ".join(
            _summary(arm, rec) for arm, rec in record["shadows"].items()
        )
        self._hold = Decision(Verdict.HOLD, reason, self._weights)
        return self._hold

    def _progress(self, requests: int) -> Decision:
        cached = self._progress_cache
        if cached is not None and cached[0] == requests:
            return cached[1]  # e.g. decide() after a shadow's answer: nothing moved
        last = f"; last {self.windows[-1]['summary']}" if self.windows else ""
        decision = Decision(
            Verdict.HOLD, f"window {self.window}: {requests}/{self.config.window_requests} requests{last}", self._weights
        )
        self._progress_cache = (requests, decision)
        return decision

    def _close_window(self) -> dict:
        p = self._stats[self.primary]
        p_lat = sorted(p.w_latencies)
        shadows = {}
        for arm in self.shadow_arms:
            s = self._stats[arm]
            s_lat = sorted(s.w_latencies)
            compared, agreed = self._w_agree[arm]
            shadows[arm] = {
                "mirrored": s.w_requests,
                "compared": compared,
                "agreement": (agreed / compared) if compared else None,
                "latency_ms": {
                    "primary": {"p50": _percentile(p_lat, 50), "p99": _percentile(p_lat, 99)},
                    "shadow": {"p50": _percentile(s_lat, 50), "p99": _percentile(s_lat, 99)},
                },
                "error_rate": {"primary": _rate(p.w_errors, p.w_requests), "shadow": _rate(s.w_errors, s.w_requests)},
            }
        record = {"window": self.window, "requests": p.w_requests, "mirrored_requests": self._w_mirrored, "shadows": shadows}
        record["summary"] = f"window {self.window}: " + "; ".join(_summary(a, r) for a, r in shadows.items())
        self.windows.append(record)
        self.window += 1
        for stats in self._stats.values():
            stats.new_window()
        for counters in self._w_agree.values():
            counters[0] = counters[1] = 0
        self._w_mirrored = 0
        return record

    def apply(self, decision: Decision) -> None:
        super().apply(decision)  # PROMOTE: decision.arm or the first shadow; ROLLBACK: the first primary
        if decision.verdict is Verdict.HOLD:
            return
        self.primary = self.final
        if decision.verdict is Verdict.PROMOTE:
            self.finished = f"{self.primary} promoted to primary ({decision.reason or 'operator'})"
        else:
            self.finished = f"mirroring stopped, {self.primary} stays primary ({decision.reason or 'operator'})"
        self.shadow_arms = ()  # the comparison is over: nothing is mirrored any more
        self._pending.clear()
        self._build_routes()
        self._hold = Decision(Verdict.HOLD, f"shadowing finished: {self.finished}", self._weights)

    def state(self) -> dict:
        arms = {}
        for arm, s in self._stats.items():
            lat = sorted(s.latencies)
            arms[arm] = {
                "model_version": self.arms[arm],
                "requests": s.requests,
                "errors": s.errors,
                "error_rate": _rate(s.errors, s.requests),
                "latency_ms": {"window": len(lat), "p50": _percentile(lat, 50), "p99": _percentile(lat, 99)},
            }
        return {
            "strategy": self.name,
            "primary": self.primary,
            "shadows": list(self.shadow_arms),
            "fraction": self.config.fraction,
            "window": self.window,
            "window_progress": {"requests": self._stats[self.primary].w_requests, "target": self.config.window_requests},
            "arms": arms,
            "agreement": {
                arm: {"compared": c, "agreed": a, "rate": (a / c) if c else None} for arm, (c, a) in self._agree.items()
            },
            "pending_pairs": len(self._pending),
            "windows": list(self.windows),
            "finished": self.finished,
        }


def _rate(part: int, whole: int) -> float:
    return (part / whole) if whole else 0.0


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _summary(arm: str, rec: dict) -> str:
    agreement = "n/a" if rec["agreement"] is None else f"{rec['agreement']:.1%}"
    lat = rec["latency_ms"]
    err = rec["error_rate"]
    return (
        f"{arm} agrees {agreement} ({rec['compared']} compared), "
        f"p50 {_ms(lat['shadow']['p50'])} vs {_ms(lat['primary']['p50'])} ms, "
        f"p99 {_ms(lat['shadow']['p99'])} vs {_ms(lat['primary']['p99'])} ms, "
        f"errors {err['shadow']:.1%} vs {err['primary']:.1%} (shadow vs primary)"
    )


@hookimpl
def register_traffic_strategies():
    return [ShadowStrategy]
