"""Traffic strategy ``interleaving``: compare two rankers on the same queries (team-draft).

Both rankers answer every request (``Route(merge=True)``); ``merge`` builds the list the user sees
by team-draft interleaving (Radlinski, Kurup & Joachims, CIKM 2008): per round a coin flip, seeded
and deterministic per request id, decides which team picks first, and each team adds its
highest-ranked item not yet in the list. As in the paper, merging stops when either ranking has
no new item left, so the two teams never differ by more than one item in any prefix (an unequal
tail would bias the credit).

Clicks (``Feedback.clicks``: clicked item ids) are credited to the team that contributed the
item; per query the team with more credited clicks wins (equal non-zero: a tie; no credited
click: not informative). Between equal rankers, by the symmetry of team-draft, each decisive
query is won by b with probability exactly 1/2.

**What the user declares**: ``alpha`` (the chance of promoting arm_b when the rankers are
equally good, however long it runs and however often ``decide`` looks: it looks after every
feedback) and ``minimum_effect`` (the smallest win share above 1/2 worth detecting: 0.05 means
b wins 55% of decisive queries). ``decide`` keeps an e-value of H0 "win share = 1/2" (a Beta
mixture centred on 1/2, spread = ``minimum_effect``: ``framework.sequential.BetaMixture``) over
the decisive queries; once it reaches 1/alpha (its always-valid p-value falls below alpha) and
``min_impressions`` informative queries were seen: PROMOTE arm_b if the challenger leads; if the
incumbent arm_a leads, HOLD saying so (nothing to change). Every reason and ``state()`` give the
leader, its win share, the always-valid p-value and the preference score delta =
(wins_b - wins_a) / (wins_a + wins_b + ties); a verdict's ``Decision.evidence`` carries the
e-value, a confidence sequence on b's win share, the counts, alpha and the minimum effect.

Pure Python: ``choose`` returns a prebuilt Route, ``merge`` is O(list_length) plus one seeded
``random.Random`` per request; per-request memory is bounded (last ``MEMORY`` merged requests).
"""
from __future__ import annotations

import dataclasses
import math
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Optional, Sequence

from framework import sequential as sq
from framework.components import (
    Decision,
    Feedback,
    Outcome,
    Route,
    RouteRequest,
    TrafficStrategy,
    Verdict,
)
from framework.errors import RecipeError
from framework.hookspecs import hookimpl

#: merged requests remembered for click credit (older ones count as unknown)
MEMORY = 100_000
_MISSING = object()


@dataclass
class InterleavingConfig:
    #: the incumbent ranker (a key of serve.models); None: the first declared arm
    arm_a: Optional[str] = None
    #: the challenger ranker; None: the other declared arm
    arm_b: Optional[str] = None
    #: seeds the per-request coin flips (with the request id)
    seed: int = 0
    #: queries with at least one credited click before any verdict
    min_impressions: int = 100
    #: chance of promoting arm_b between equally good rankers, under continuous monitoring
    alpha: float = 0.05
    #: smallest win share above 1/2 worth detecting (0.05: b wins 55% of decisive queries)
    minimum_effect: float = 0.05
    #: length of the merged list served to the user
    list_length: int = 10


def team_draft(
    ranking_a: Sequence[Hashable], ranking_b: Sequence[Hashable], length: int, rng: random.Random
) -> tuple[list, list[str]]:
    """Team-draft interleaving of two rankings: (merged list, "a"/"b" team of each position)."""
    merged: list = []
    teams: list[str] = []
    seen: set = set()
    ia = ib = picks_a = picks_b = 0
    len_a, len_b = len(ranking_a), len(ranking_b)
    while len(merged) < length:
        while ia < len_a and ranking_a[ia] in seen:
            ia += 1
        while ib < len_b and ranking_b[ib] in seen:
            ib += 1
        if ia >= len_a or ib >= len_b:
            break
        # The team with fewer picks goes next; a coin flip decides who starts each round.
        if picks_a < picks_b or (picks_a == picks_b and rng.getrandbits(1)):
            item, ia, picks_a = ranking_a[ia], ia + 1, picks_a + 1
            teams.append("a")
        else:
            item, ib, picks_b = ranking_b[ib], ib + 1, picks_b + 1
            teams.append("b")
        merged.append(item)
        seen.add(item)
    return merged, teams


def _ranking(answer: Any) -> Optional[list]:
    """An arm's answer as a list of item ids; None when the arm gave no answer (it failed)."""
    if answer is None:
        return None
    if isinstance(answer, Mapping):
        for key in ("ranking", "items"):
            if key in answer:
                return list(answer[key])
        raise TypeError(f"interleaving: a dict answer needs a 'ranking' or 'items' key, got keys {sorted(answer)}")
    if isinstance(answer, (str, bytes)):
        raise TypeError(f"interleaving: expected a ranked list of item ids, got {type(answer).__name__}")
    return list(answer)


class InterleavingStrategy(TrafficStrategy):
    name = "interleaving"
    Config = InterleavingConfig
    summary = "team-draft interleaving of two rankers; promotes the challenger when users prefer it"
    sticky = True  # trivially: arm_a is the primary of every interleaved request

    def __init__(self, config: InterleavingConfig | None, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, arms, refs)
        self.arm_a, self.arm_b = self.routable  # incumbent() and candidate() by default
        self._interleave = Route(primary=self.arm_a, shadows=(self.arm_b,), merge=True)
        self.mode = "interleaving"  # | "promoted" | "rolled_back"
        self.merged = 0
        self.degraded = 0  # merges where one ranker had no answer
        self.wins_a = self.wins_b = self.ties = 0
        self.no_click = 0
        self.clicks_a = self.clicks_b = 0
        self.duplicates = self.unknown = 0
        self.outcomes = {self.arm_a: 0, self.arm_b: 0}
        self.errors = {self.arm_a: 0, self.arm_b: 0}
        # request id -> (merged ranking, teams as "abba..."), or None once its clicks were credited
        self._memory: OrderedDict[str, Optional[tuple[tuple, str]]] = OrderedDict()
        self._cached: Optional[tuple[tuple, Decision, dict]] = None
        self._mixture = sq.BetaMixture.centred(0.5, self.config.minimum_effect, scales=(1.0, 4.0))
        self._current_log_e = 0.0
        self._max_log_e = 0.0  # largest e-value so far (log): the always-valid p-value is its inverse
        self._log_e_at: tuple[int, int] = (0, 0)

    # -- plan-time validation --------------------------------------------------------------------
    @classmethod
    def arm_names(cls, config: InterleavingConfig | None, arms: Mapping[str, str]) -> Sequence[str]:
        declared = list(arms)
        arm_a = getattr(config, "arm_a", None)
        arm_b = getattr(config, "arm_b", None)
        for key, arm in (("arm_a", arm_a), ("arm_b", arm_b)):
            if arm is not None and arm not in arms:
                raise RecipeError(
                    f"strategy.{key}: '{arm}' is not an arm of serve.models "
                    f"(declared: {', '.join(declared) or 'none'}). Set strategy.{key} to one of them."
                )
        if arm_a is not None and arm_a == arm_b:
            raise RecipeError(f"strategy.arm_b: interleaving compares two different rankers, "
                              f"but arm_a and arm_b are both '{arm_a}'.")
        if arm_a is None or arm_b is None:
            if len(declared) != 2:
                raise RecipeError(
                    f"serve.models: strategy 'interleaving' compares exactly two rankers, but serve.models "
                    f"declares {len(declared)} arm(s) ({', '.join(declared) or 'none'}). Declare exactly two "
                    f"arms (incumbent first), or name both with strategy.arm_a and strategy.arm_b."
                )
            if arm_a is None and arm_b is None:
                arm_a, arm_b = declared
            elif arm_a is None:
                arm_a = next(a for a in declared if a != arm_b)
            else:
                arm_b = next(a for a in declared if a != arm_a)
        return [arm_a, arm_b]

    @classmethod
    def check_config(cls, config: InterleavingConfig, key: str, refs: Mapping[str, type] | None = None) -> None:
        if not 0.0 < config.alpha < 1.0:
            raise RecipeError(f"{key}.alpha: {config.alpha} is not in (0, 1); e.g. 0.05")
        if not 0.0 < config.minimum_effect < 0.5:
            raise RecipeError(f"{key}.minimum_effect: {config.minimum_effect} is not a win share above 1/2 in (0, 0.5); e.g. 0.05")
        if config.min_impressions < 1:
            raise RecipeError(f"{key}.min_impressions: {config.min_impressions} must be at least 1")
        if config.list_length < 1:
            raise RecipeError(f"{key}.list_length: {config.list_length} must be at least 1")

    # -- request path ----------------------------------------------------------------------------
    def choose(self, request: RouteRequest) -> Route:
        return self._interleave

    def merge(self, request: RouteRequest, answers: Mapping[str, Any]) -> dict:
        ranking_a = _ranking(answers.get(self.arm_a))
        ranking_b = _ranking(answers.get(self.arm_b))
        length = self.config.list_length
        if ranking_a is None or ranking_b is None:
            # One ranker failed: serve the other one alone; the query credits nobody (not remembered).
            self.degraded += 1
            only, team = (ranking_a, "a") if ranking_a is not None else (ranking_b or [], "b")
            ranking = list(dict.fromkeys(only))[:length]
            return {"ranking": ranking, "teams": [team] * len(ranking)}
        rng = random.Random(f"{self.config.seed}/{request.request_id}")  # str seed: stable across processes
        merged, teams = team_draft(ranking_a, ranking_b, length, rng)
        memory = self._memory
        rid = request.request_id
        if rid not in memory and len(memory) >= MEMORY:
            memory.popitem(last=False)
        memory[rid] = (tuple(merged), "".join(teams))
        self.merged += 1
        return {"ranking": merged, "teams": teams}

    def observe(self, outcome: Outcome) -> None:
        if outcome.arm in self.outcomes:
            self.outcomes[outcome.arm] += 1
            if outcome.error:
                self.errors[outcome.arm] += 1

    def feedback(self, feedback: Feedback) -> None:
        entry = self._memory.get(feedback.request_id, _MISSING)
        if entry is _MISSING:  # never merged here, degraded, or forgotten
            self.unknown += 1
            return
        if entry is None:
            self.duplicates += 1
            return
        self._memory[feedback.request_id] = None
        ranking, teams = entry
        credit = {"a": 0, "b": 0}
        counted: list = []
        for item in feedback.clicks:
            if item in counted:  # the same item clicked twice counts once
                continue
            counted.append(item)
            try:
                credit[teams[ranking.index(item)]] += 1
            except ValueError:  # a click on something we did not show
                continue
        a, b = credit["a"], credit["b"]
        self.clicks_a += a
        self.clicks_b += b
        if a == b == 0:
            self.no_click += 1
        elif a > b:
            self.wins_a += 1
        elif b > a:
            self.wins_b += 1
        else:
            self.ties += 1

    # -- decisions -------------------------------------------------------------------------------
    def _log_e(self) -> float:
        """log e-value of H0 "b wins half the decisive queries", updated as wins come in."""
        key = (self.wins_a, self.wins_b)
        if key != self._log_e_at:
            self._log_e_at = key
            self._current_log_e = self._mixture.log_e(self.wins_b, self.wins_a + self.wins_b, 0.5)
            self._max_log_e = max(self._max_log_e, self._current_log_e)
        return self._max_log_e

    def _evaluate(self) -> tuple[Decision, dict]:
        """Decision and statistics for the current counts (cached: decide runs after every event)."""
        key = (self.wins_a, self.wins_b, self.ties, self.mode)
        if self._cached is not None and self._cached[0] == key:
            return self._cached[1], self._cached[2]
        cfg: InterleavingConfig = self.config
        wa, wb, ties = self.wins_a, self.wins_b, self.ties
        impressions = wa + wb + ties
        decisive = wa + wb
        max_log_e = self._log_e()
        p_value = sq.p_value(max_log_e)
        winner = self.arm_a if wa > wb else self.arm_b if wb > wa else None
        win_share = max(wa, wb) / decisive if decisive else None
        delta = (wb - wa) / impressions if impressions else 0.0
        significant = impressions >= cfg.min_impressions and winner is not None and max_log_e >= math.log(1.0 / cfg.alpha)
        stats = {
            "impressions": impressions,
            "wins": {self.arm_a: wa, self.arm_b: wb},
            "ties": ties,
            "winner": winner,
            "win_share": win_share,
            "e_value": math.exp(min(max_log_e, 700.0)),
            "p_value": p_value,
            "delta": delta,
            "significant": significant,
        }
        lead = (f"{winner} leads, win share {win_share:.3f}" if winner else "no leader") + \
               f", always-valid p={p_value:.4g}, delta={delta:+.3f} ({wa} a / {wb} b / {ties} ties)"
        if self.mode != "interleaving":
            decision = Decision(Verdict.HOLD, f"{self.mode}: '{self.final}' answers every request; {lead}")
        elif impressions < cfg.min_impressions:
            decision = Decision(Verdict.HOLD, f"collecting: {impressions}/{cfg.min_impressions} informative queries; {lead}")
        elif not significant:
            decision = Decision(Verdict.HOLD, f"no significant winner at alpha {cfg.alpha:g}: {lead}")
        elif winner == self.arm_b:
            decision = Decision(Verdict.PROMOTE, f"arm_b '{self.arm_b}' wins: {lead}",
                                weights={self.arm_a: 0.0, self.arm_b: 1.0}, arm=self.arm_b, evidence=self._evidence(stats))
        else:
            decision = Decision(Verdict.HOLD, f"arm_a '{self.arm_a}' wins (incumbent stays): {lead}",
                                evidence=self._evidence(stats))
        self._cached = (key, decision, stats)
        return decision, stats

    def _evidence(self, stats: dict) -> dict:
        cs = self._mixture.bounds(self.wins_b, self.wins_a + self.wins_b, self.config.alpha)
        return {
            "method": "e-value of win share = 1/2 (Beta mixture over decisive queries), team-draft interleaving",
            "statistic": stats["e_value"],
            "p_value": stats["p_value"],
            "bound": {"win_share_b": cs.as_list()},
            "samples": {self.arm_a: self.wins_a, self.arm_b: self.wins_b, "ties": self.ties},
            "alpha": self.config.alpha,
            "minimum_effect": self.config.minimum_effect,
        }

    def decide(self) -> Decision:
        return self._evaluate()[0]

    def apply(self, decision: Decision) -> None:
        """PROMOTE: ``decision.arm``, else arm_b (the challenger) unless the decision weights arm_a
        higher; ROLLBACK: arm_a. HOLD (an operator's): interleave again."""
        if decision.verdict is Verdict.PROMOTE and decision.arm is None and decision.weights:
            weights = decision.weights
            if weights.get(self.arm_a, 0) > weights.get(self.arm_b, 0):
                decision = dataclasses.replace(decision, arm=self.arm_a)
        super().apply(decision)
        if decision.verdict is Verdict.PROMOTE:
            self.mode = "promoted"
        elif decision.verdict is Verdict.ROLLBACK:
            self.mode = "rolled_back"
        else:
            self.reopen()
            self.mode = "interleaving"

    def state(self) -> dict:
        decision, stats = self._evaluate()
        return {
            "strategy": self.name,
            "arm_a": self.arm_a,
            "arm_b": self.arm_b,
            "model_versions": {self.arm_a: self.arms.get(self.arm_a), self.arm_b: self.arms.get(self.arm_b)},
            "mode": self.mode,
            "serving": self.final,
            **stats,
            "clicks": {self.arm_a: self.clicks_a, self.arm_b: self.clicks_b},
            "queries": {"merged": self.merged, "degraded": self.degraded, "no_click": self.no_click,
                        "remembered": len(self._memory)},
            "feedback_ignored": {"duplicate": self.duplicates, "unknown": self.unknown},
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "verdict": decision.verdict.value,
            "reason": decision.reason,
        }


@hookimpl
def register_traffic_strategies():
    return [InterleavingStrategy]
