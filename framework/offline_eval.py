"""Offline evaluation of a traffic strategy on a logged file of requests, arms and rewards.

A log row is one served request: the arm the *logging* policy chose, the reward it got (a click,
a label's correctness, revenue) and, when known, the probability the logging policy had of
choosing that arm (its propensity). The question answered: what reward per request would
*this* strategy have earned, had it been serving instead? Estimators:

* ``replay`` (Li, Chu, Langford & Wang 2011, "Unbiased offline evaluation of contextual-bandit-based
  news article recommendation algorithms"): for a log whose arms were chosen uniformly at random.
  Walk the log in order; where the strategy would have chosen the logged arm, it "served" that
  request: it sees the reward (``routed`` + ``feedback``) and the reward counts; other rows are
  skipped. The mean counted reward is unbiased for the strategy's value, learning included;
  only about 1/arms of the rows count.
* ``ips`` (inverse propensity scoring, Horvitz & Thompson 1952): every row counts, weighted by
  pi(logged arm) / propensity, where pi is the strategy's probability of that arm at that point
  (estimated by asking ``choose`` ``policy_samples`` times with derived request ids: ``choose`` is
  pure, so this changes nothing); ``snips``: the self-normalised version (Swaminathan & Joachims
  2015), a little biased, far less variable; ``dr`` (doubly robust, Dudík, Langford & Li 2011): a
  reward model (each arm's mean reward in the log) plus the IPS correction of its residuals.
  These need propensities, and work for any logging policy that gave every arm a chance.
  The strategy keeps learning, as in replay, from the rows where its own choice matches the log.

The strategy is driven only through its public contract: ``choose`` (pure), and for a row it
"served" ``routed`` and ``feedback``, then ``decide``; a PROMOTE or ROLLBACK is applied as the
host would, after which the strategy's answering arm is its policy. Every estimate comes with a
standard error and a normal 95% interval, and with the baselines on the same log: the logging
policy's own mean reward, a uniform random policy, and each single arm played always.

Pure Python + numpy; pandas only reads the file (:func:`read_log`). No Ray.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from .components import Decision, Feedback, Route, RouteRequest, TrafficStrategy, Verdict
from .errors import RecipeError

METHODS = ("replay", "ips", "snips", "dr")
#: candidate column names, in order, when the caller names none
ARM_COLUMNS = ("arm", "action", "item_id")
REWARD_COLUMNS = ("reward", "click", "clicked")
PROPENSITY_COLUMNS = ("propensity", "propensity_score", "pscore")
REQUEST_COLUMNS = ("request_id",)
#: the Open Bandit Dataset sample shipped inside the ``obp`` wheel (read as files, never imported)
OBD_POLICIES = ("random", "bts")
_Z95 = 1.959963984540054


@dataclass
class LoggedData:
    """A log, normalised: arm index, reward and propensity (or None) per row, in log order."""

    arms: list[str]
    arm: list[int]
    reward: list[float]
    propensity: list[float] | None
    request_ids: list[str]
    source: str = ""

    def __len__(self) -> int:
        return len(self.arm)

    @property
    def uniform(self) -> bool:
        """True when every propensity is 1/arms (a uniform random log), or none is given."""
        if self.propensity is None:
            return True
        k = len(self.arms)
        return all(abs(p * k - 1.0) < 1e-6 for p in self.propensity)


@dataclass
class Estimate:
    method: str
    value: float
    stderr: float
    ci: tuple[float, float]
    #: rows that counted (replay: the matched ones; IPS and the like: every row)
    events: int
    #: the effective sample size of the weights, (sum w)^2 / sum w^2 (replay: events)
    effective_n: float


@dataclass
class OfflineReport:
    strategy: str
    config: dict
    log: dict
    estimates: dict[str, Estimate]
    baselines: dict[str, Any]
    decisions: list[dict] = field(default_factory=list)
    #: share of the rows each arm would have answered (policy averaged over the log)
    allocation: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["estimates"] = {k: asdict(v) for k, v in self.estimates.items()}
        return out


# ---------------------------------------------------------------------------------------------
# Reading a log
# ---------------------------------------------------------------------------------------------
def obd_sample_path(policy: str = "random") -> Path:
    """The Open Bandit Dataset sample (``all.csv``, 10,000 logged impressions of ZOZOTOWN's
    fashion recommendations; ``random``: a uniform random logging policy, ``bts``: Bernoulli
    Thompson sampling) inside the installed ``obp`` wheel. The package is located, not imported
    (its imports may not work with this stack)."""
    import importlib.util

    if policy not in OBD_POLICIES:
        raise RecipeError(f"log=obd:{policy}: the Open Bandit Dataset sample has the policies {', '.join(OBD_POLICIES)}")
    spec = importlib.util.find_spec("obp")
    if spec is None or not spec.submodule_search_locations:
        raise RecipeError("log=obd:...: the Open Bandit Dataset sample ships in the 'obp' package: pip install 'obp>=0.4.1' "
                          "(part of the test extra: pip install -e '.[test]')")
    path = Path(list(spec.submodule_search_locations)[0]) / "dataset" / "obd" / policy / "all" / "all.csv"
    if not path.is_file():
        raise RecipeError(f"log=obd:{policy}: {path} is missing from the installed obp package")
    return path


def read_log(
    location: str | Path,
    arm_column: str | None = None,
    reward_column: str | None = None,
    propensity_column: str | None = None,
    arms: Sequence[str] | None = None,
    max_rows: int | None = None,
) -> LoggedData:
    """Read a CSV or Parquet log (or ``obd:random`` / ``obd:bts``, the packaged real sample).

    Columns are found by name (``arm``/``action``/``item_id``, ``reward``/``click``,
    ``propensity``/``propensity_score``) unless given. ``arms``: keep only rows whose logged arm is
    one of these (only for a uniform log: the rows left are still uniform over them, so replay
    stays unbiased; a log with varying propensities is refused)."""
    import pandas as pd

    text = str(location)
    if text.startswith("obd:"):
        path = obd_sample_path(text.split(":", 1)[1] or "random")
    else:
        path = Path(text).expanduser()
    if not path.is_file():
        raise RecipeError(f"log={text}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        frame = pd.read_parquet(path)
    elif suffix in (".csv", ".txt", ".gz"):
        frame = pd.read_csv(path)
    else:
        raise RecipeError(f"log={text}: expected a .csv or .parquet file, got '{suffix or path.name}'")
    return log_from_frame(frame, arm_column, reward_column, propensity_column, arms, max_rows, source=str(path))


def log_from_frame(
    frame: Any,
    arm_column: str | None = None,
    reward_column: str | None = None,
    propensity_column: str | None = None,
    arms: Sequence[str] | None = None,
    max_rows: int | None = None,
    source: str = "",
) -> LoggedData:
    """A LoggedData from a pandas DataFrame (see :func:`read_log`)."""
    columns = list(frame.columns)

    def pick(given: str | None, candidates: Sequence[str], what: str, required: bool = True) -> str | None:
        if given is not None:
            if given not in columns:
                raise RecipeError(f"{what}_column={given}: no such column in the log (columns: {', '.join(map(str, columns[:20]))})")
            return given
        found = next((c for c in candidates if c in columns), None)
        if found is None and required:
            raise RecipeError(f"the log has no {what} column ({' / '.join(candidates)}); name it with {what}_column=NAME")
        return found

    arm_col = pick(arm_column, ARM_COLUMNS, "arm")
    reward_col = pick(reward_column, REWARD_COLUMNS, "reward")
    prop_col = pick(propensity_column, PROPENSITY_COLUMNS, "propensity", required=False)
    req_col = next((c for c in REQUEST_COLUMNS if c in columns), None)
    if max_rows is not None:
        frame = frame.iloc[: int(max_rows)]
    logged = [str(a) for a in frame[arm_col].tolist()]
    rewards = [float(r) for r in frame[reward_col].tolist()]
    props = [float(p) for p in frame[prop_col].tolist()] if prop_col is not None else None
    ids = [str(r) for r in frame[req_col].tolist()] if req_col is not None else [f"row{i}" for i in range(len(logged))]
    all_arms = sorted(set(logged), key=_natural)
    if arms:
        wanted = [str(a) for a in arms]
        missing = [a for a in wanted if a not in set(all_arms)]
        if missing:
            raise RecipeError(f"arms={','.join(wanted)}: {', '.join(missing)} never logged (logged arms: {', '.join(all_arms[:30])})")
        keep = [i for i, a in enumerate(logged) if a in set(wanted)]
        was_uniform = props is None or all(abs(p * len(all_arms) - 1.0) < 1e-6 for p in props)
        if not was_uniform:
            # the rows left would need the logging policy's whole distribution to be reweighted
            raise RecipeError(f"arms={','.join(wanted)}: only a uniformly random log can be restricted to some arms "
                              "(this one's propensities vary); evaluate on every arm with ips, snips or dr")
        logged = [logged[i] for i in keep]
        rewards = [rewards[i] for i in keep]
        ids = [ids[i] for i in keep]
        if props is not None:  # a uniform log restricted to some arms is uniform over them
            props = [1.0 / len(wanted)] * len(keep)
        all_arms = wanted
    if any(not math.isfinite(r) for r in rewards):
        raise RecipeError(f"the log's {reward_col} column has missing or infinite values")
    if props is not None and any(not (0.0 < p <= 1.0) for p in props):
        raise RecipeError(f"the log's {prop_col} column must be probabilities in (0, 1]")
    index = {a: i for i, a in enumerate(all_arms)}
    return LoggedData(all_arms, [index[a] for a in logged], rewards, props, ids, source)


def _natural(text: str) -> tuple:
    return (0, int(text), "") if text.lstrip("-").isdigit() else (1, 0, text)


def arm_names(log: LoggedData, prefix: str = "arm") -> dict[str, str]:
    """Strategy arm name -> the logged arm it stands for (names a recipe can use)."""
    return {f"{prefix}{a}" if a[:1].isdigit() else a: a for a in log.arms}


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def evaluate(
    make_strategy: Callable[[Mapping[str, str]], TrafficStrategy],
    log: LoggedData,
    methods: Sequence[str] | None = None,
    policy_samples: int = 32,
) -> OfflineReport:
    """Estimate the reward per request of the strategy ``make_strategy(arms)`` builds (arms:
    strategy arm name -> logged arm) on ``log``, by each of ``methods`` (default: ``replay`` for a
    uniform log, and ``ips``, ``snips``, ``dr`` when the log has propensities).

    Each method runs on a fresh strategy (they learn differently)."""
    if not len(log):
        raise RecipeError("the log has no rows to evaluate on")
    names = arm_names(log)
    methods = list(methods or default_methods(log))
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise RecipeError(f"method={','.join(unknown)}: not an estimator; choose among {', '.join(METHODS)}")
    if any(m != "replay" for m in methods) and log.propensity is None:
        raise RecipeError("methods ips, snips and dr need the logging policy's propensities (a propensity column)")
    if "replay" in methods and not log.uniform:
        raise RecipeError("method replay needs a uniformly random log (its propensities differ): use ips, snips or dr")
    estimates: dict[str, Estimate] = {}
    decisions: list[dict] = []
    allocation: dict[str, float] = {}
    strategy_name, config = "", {}
    for method in methods:
        strategy = make_strategy(names)
        strategy_name = strategy.name
        config = _plain_config(strategy.config)
        if method == "replay":
            estimate, made, shares = _replay(strategy, log, names)
        else:
            estimate, made, shares = _weighted(strategy, log, names, method, policy_samples)
        estimates[method] = estimate
        if not decisions:
            decisions, allocation = made, shares
    return OfflineReport(
        strategy=strategy_name,
        config=config,
        log={"source": log.source, "rows": len(log), "arms": len(log.arms), "uniform": log.uniform,
             "propensities": log.propensity is not None, "mean_reward": sum(log.reward) / len(log)},
        estimates=estimates,
        baselines=baselines(log, names),
        decisions=decisions,
        allocation=allocation,
    )


def default_methods(log: LoggedData) -> list[str]:
    if log.propensity is None:
        return ["replay"]
    return (["replay"] if log.uniform else []) + ["ips", "snips", "dr"]


def baselines(log: LoggedData, names: Mapping[str, str]) -> dict[str, Any]:
    """The logging policy's own mean reward, a uniform random policy's (IPS when the log is not
    uniform) and each arm's, played always (IPS; for a uniform log: its mean reward)."""
    k = len(log.arms)
    n = len(log)
    counts, sums = [0] * k, [0.0] * k
    for a, r in zip(log.arm, log.reward):
        counts[a] += 1
        sums[a] += r
    per_arm: dict[str, dict] = {}
    for name, logged in names.items():
        i = log.arms.index(logged)
        if log.propensity is None or log.uniform:
            value = sums[i] / counts[i] if counts[i] else float("nan")
            se = math.sqrt(value * (1 - value) / counts[i]) if counts[i] and 0 <= value <= 1 else float("nan")
        else:
            terms = [r / p if a == i else 0.0 for a, r, p in zip(log.arm, log.reward, log.propensity)]
            value, se = _mean_se(terms)
        per_arm[name] = {"value": value, "stderr": se, "rows": counts[i]}
    best = max(per_arm, key=lambda a: per_arm[a]["value"] if math.isfinite(per_arm[a]["value"]) else -math.inf)
    if log.propensity is None or log.uniform:
        uniform = sum(log.reward) / n
    else:
        uniform = sum(r / (k * p) for r, p in zip(log.reward, log.propensity)) / n
    return {"logging_policy": sum(log.reward) / n, "uniform": uniform, "best_arm": best,
            "best_arm_value": per_arm[best]["value"], "arms": per_arm}


def _serve(strategy: TrafficStrategy, request: RouteRequest, route: Route, arm: str, reward: float,
           i: int, decisions: list[dict]) -> None:
    """The strategy served ``request`` with ``arm`` and got ``reward``: what the host would do."""
    strategy.routed(request, route)
    strategy.feedback(Feedback(request.request_id, arm, reward=reward, clicks=("clicked",) if reward > 0 else (),
                               label=None, prediction=None))
    decision = strategy.decide()
    if decision.verdict is not Verdict.HOLD:
        _act(strategy, decision, i, decisions)


def _act(strategy: TrafficStrategy, decision: Decision, i: int, decisions: list[dict]) -> None:
    strategy.apply(decision)
    decisions.append({"row": i, "verdict": decision.verdict.value, "arm": strategy.answering_arm(),
                      "reason": decision.reason, "evidence": dict(decision.evidence) if decision.evidence else None})


def _route(strategy: TrafficStrategy, request: RouteRequest) -> Route:
    final = strategy.answering_arm()
    return Route(final) if final is not None else strategy.choose(request)


def _replay(strategy: TrafficStrategy, log: LoggedData, names: Mapping[str, str]) -> tuple[Estimate, list[dict], dict]:
    to_name = {logged: name for name, logged in names.items()}
    counted: list[float] = []
    decisions: list[dict] = []
    chosen = dict.fromkeys(names, 0)
    for i, (a, r, rid) in enumerate(zip(log.arm, log.reward, log.request_ids)):
        request = RouteRequest(rid)
        route = _route(strategy, request)
        chosen[route.primary] = chosen.get(route.primary, 0) + 1
        logged = to_name[log.arms[a]]
        if route.primary != logged:
            continue  # the strategy would have served another arm: this row says nothing about it
        counted.append(r)
        _serve(strategy, request, route, logged, r, i, decisions)
    value, se = _mean_se(counted)
    n = len(counted)
    estimate = Estimate("replay", value, se, (value - _Z95 * se, value + _Z95 * se), n, float(n))
    return estimate, decisions, {k: v / len(log) for k, v in chosen.items()}


def policy_probabilities(strategy: TrafficStrategy, request: RouteRequest, names: Sequence[str], samples: int) -> dict[str, float]:
    """The strategy's probability of each arm for ``request`` now: ``choose`` asked ``samples``
    times with derived request ids (pure: nothing changes). After a verdict: its arm, surely."""
    final = strategy.answering_arm()
    if final is not None:
        return {a: 1.0 if a == final else 0.0 for a in names}
    counts = dict.fromkeys(names, 0)
    for j in range(samples):
        primary = strategy.choose(RouteRequest(f"{request.request_id}#{j}", request.key)).primary
        counts[primary] = counts.get(primary, 0) + 1
    return {a: c / samples for a, c in counts.items()}


def _weighted(strategy: TrafficStrategy, log: LoggedData, names: Mapping[str, str], method: str,
              samples: int) -> tuple[Estimate, list[dict], dict]:
    to_name = {logged: name for name, logged in names.items()}
    arm_list = list(names)
    # the reward model of DR: each arm's mean reward in the log, by IPS when the log is not uniform
    model = {}
    for name, logged in names.items():
        i = log.arms.index(logged)
        num = sum(r / p for a, r, p in zip(log.arm, log.reward, log.propensity) if a == i)
        den = sum(1.0 / p for a, p in zip(log.arm, log.propensity) if a == i)
        model[name] = num / den if den else 0.0
    weights, terms, dr_terms = [], [], []
    decisions: list[dict] = []
    share = dict.fromkeys(arm_list, 0.0)
    for i, (a, r, p, rid) in enumerate(zip(log.arm, log.reward, log.propensity, log.request_ids)):
        request = RouteRequest(rid)
        pi = policy_probabilities(strategy, request, arm_list, samples)
        for name, q in pi.items():
            share[name] += q
        logged = to_name[log.arms[a]]
        w = pi.get(logged, 0.0) / p
        weights.append(w)
        terms.append(w * r)
        dr_terms.append(sum(q * model[name] for name, q in pi.items()) + w * (r - model[logged]))
        route = _route(strategy, request)
        if route.primary == logged:  # the strategy's own choice was served in the log: it learns
            _serve(strategy, request, route, logged, r, i, decisions)
    n = len(log)
    sum_w = sum(weights)
    ess = sum_w**2 / sum(w * w for w in weights) if any(weights) else 0.0
    if method == "ips":
        value, se = _mean_se(terms)
    elif method == "dr":
        value, se = _mean_se(dr_terms)
    else:  # snips: ratio estimator, delta-method standard error
        value = sum(terms) / sum_w if sum_w > 0 else float("nan")
        if sum_w > 0:
            mean_w = sum_w / n
            resid = [(t - value * w) / mean_w for t, w in zip(terms, weights)]
            se = math.sqrt(sum(x * x for x in resid) / (n * max(n - 1, 1)))
        else:
            se = float("nan")
    estimate = Estimate(method, value, se, (value - _Z95 * se, value + _Z95 * se), n, ess)
    return estimate, decisions, {name: s / n for name, s in share.items()}


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


def _plain_config(config: Any) -> dict:
    import dataclasses

    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(getattr(config, "__dict__", {}))


def format_report(report: OfflineReport) -> str:
    """A short text table of the report, for the command line."""
    log = report.log
    lines = [
        f"strategy '{report.strategy}' on {log['source'] or 'the log'}: {log['rows']} rows, {log['arms']} arms, "
        f"logged mean reward {log['mean_reward']:.5f} ({'uniform random log' if log['uniform'] else 'propensities vary'})",
        "",
        f"{'method':<8} {'reward/request':>15} {'95% interval':>25} {'rows used':>10} {'eff. n':>9}",
    ]
    for est in report.estimates.values():
        lines.append(f"{est.method:<8} {est.value:>15.5f} {f'[{est.ci[0]:.5f}, {est.ci[1]:.5f}]':>25} "
                     f"{est.events:>10} {est.effective_n:>9.0f}")
    b = report.baselines
    lines += [
        "",
        f"baselines on the same log: logging policy {b['logging_policy']:.5f}, uniform random {b['uniform']:.5f}, "
        f"best single arm in hindsight {b['best_arm']} {b['best_arm_value']:.5f}",
    ]
    top = sorted(report.allocation.items(), key=lambda kv: -kv[1])[:5]
    if top:
        lines.append("the strategy's traffic share over the log (top 5): " + ", ".join(f"{a} {s:.3f}" for a, s in top))
    if report.decisions:
        for d in report.decisions[:5]:
            lines.append(f"verdict at row {d['row']}: {d['verdict']} -> {d['arm']}: {d['reason']}")
    else:
        lines.append("verdict: none (the strategy held throughout)")
    return "\n".join(lines)
