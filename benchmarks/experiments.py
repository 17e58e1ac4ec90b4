"""Anytime-valid experiments: A/A false decisions, power against a fixed horizon, bandit regret.

1. **A/A** (every arm the same) under continuous monitoring: the share of runs that end in a false
   verdict (PROMOTE or ROLLBACK; for the canary, ROLLBACK: promoting an equal challenger is
   right), with ``decide()`` after every batch of ``--batch`` feedback, for ``ab``, ``canary``,
   ``bandit`` (each algorithm) and ``interleaving`` with their default alpha (0.05):

   * at an accuracy of 80%: the real strategy classes, ``--seeds`` runs each (canary: both arms
     exactly at its tolerances: 1% errors with ``error_rate_max`` 0.01, accuracy gate at 0);
   * at a click-through rate of 0.5%, where a run needs hundreds of thousands of requests: the
     strategies' decision rules on counts vectorised over seeds with numpy, using the very mixtures
     (``framework.sequential``) the classes hold (checked against the scalar code first), and a
     cross-check of the real bandit class on ``--cross-seeds`` shorter runs;
   * for contrast, the rule the strategies used before: a two-proportion z-test repeated at every
     batch (what "peeking" does to a fixed-sample test).
2. **Power** of the A/B test: requests until a correct decision for relative effects of 5%, 10%
   and 20% (at 80% accuracy and at 0.5% CTR), against a fixed-horizon z-test of the same alpha and
   80% power run to its planned size: the sequential test's power by 4x that size, its median
   requests, and the requests by which 80% of runs had decided (what the fixed horizon needs).
   * on real logged clicks: the Open Bandit Dataset's uniform-random log (10,000 impressions,
     0.38% clicks, shipped in the obp wheel) dealt at random to two identical arms, the strategy
     replayed on it (``--real-log-runs`` runs), as the issue measured the strategies before.
3. **Bandit regret** at CTR 0.5% over three arms (0.4% / 0.5% / 0.6%): each algorithm against a
   uniform split and the oracle (always the best arm: regret 0), rewards in batches of 100.

    python benchmarks/experiments.py [--seeds 1000] [--cross-seeds 100] [--workers 2]

Exits 1 unless every A/A false-decision rate is compatible with alpha (one-sided binomial
p >= 0.001 at the declared 0.05).
"""
from __future__ import annotations

import argparse
import math
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.special import gammaln, logsumexp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from framework import sequential as sq  # noqa: E402
from framework.components import Feedback, Outcome, RouteRequest, Verdict  # noqa: E402
from plugins.strategy_ab import ABConfig, ABStrategy  # noqa: E402
from plugins.strategy_bandit import BanditConfig, BanditStrategy, kl_ucb_index, simulate  # noqa: E402
from plugins.strategy_canary import CanaryConfig, CanaryStrategy, Gates  # noqa: E402
from plugins.strategy_interleaving import InterleavingConfig, InterleavingStrategy  # noqa: E402

ALPHA = 0.05
ALGORITHMS = ("thompson", "kl_ucb", "ucb1", "epsilon_greedy")
TWO = {"champion": "m@1", "challenger": "m@2"}


# ---------------------------------------------------------------------------------------------
# Real strategy classes, batched feedback
# ---------------------------------------------------------------------------------------------
def aa_real(kind: str, seed: int, horizon: int, batch: int, rate: float = 0.8) -> tuple[str, int]:
    """One A/A run of a real strategy; (verdict or "hold", requests when it came)."""
    rng = random.Random(seed)
    if kind == "interleaving":
        return _aa_interleaving(seed, horizon, batch, rate)
    clicks = rate < 0.5
    if kind == "ab":
        s = ABStrategy(ABConfig(auto_promote=True, metric="clicks" if clicks else "accuracy"), TWO)
        error = 0.01
    elif kind == "canary":
        s = CanaryStrategy(CanaryConfig(gates=Gates(error_rate_max=0.01, accuracy_delta_min=0.0)), TWO)
        error = 0.01
    else:
        s = BanditStrategy(BanditConfig(algorithm=kind, seed=seed, reward="clicks" if clicks else "accuracy"), TWO)
        error = 0.0
    false = (Verdict.ROLLBACK,) if kind == "canary" else (Verdict.PROMOTE, Verdict.ROLLBACK)
    pending: list[Feedback] = []
    for i in range(horizon):
        rid = f"s{seed}-{i}"
        route = s.route(RouteRequest(rid))
        arm = route.primary
        failed = rng.random() < error
        label = rng.getrandbits(1)
        good = rng.random() < rate
        prediction = None if failed else (label if good else 1 - label)
        s.observe(Outcome(rid, arm, 5.0, failed, prediction))
        if not failed:
            if clicks:
                pending.append(Feedback(rid, arm, clicks=("i",) if good else ()))
            else:
                pending.append(Feedback(rid, arm, label=label, prediction=prediction))
        if len(pending) >= batch or i + 1 == horizon:
            for fb in pending:
                s.feedback(fb)
            pending.clear()
            d = s.decide()
            if d.verdict is not Verdict.HOLD:
                return (d.verdict.value if d.verdict in false else "right"), i + 1
    return "hold", horizon


def _aa_interleaving(seed: int, horizon: int, batch: int, rate: float) -> tuple[str, int]:
    rng = random.Random(seed)
    s = InterleavingStrategy(InterleavingConfig(), {"a": "r@1", "b": "r@2"})
    pending = []
    for q in range(horizon):
        rid = f"s{seed}-{q}"
        route = s.route(RouteRequest(rid))
        # each ranker puts the relevant item first with the same probability; users click it
        answers = {arm: ([f"rel{q}"] if rng.random() < rate else []) + [f"{arm}{q}-{j}" for j in range(9)]
                   for arm in ("a", "b")}
        shown = s.merge(RouteRequest(rid), answers)["ranking"]
        pending.append(Feedback(rid, route.primary, clicks=tuple(i for i in shown if i == f"rel{q}")))
        if len(pending) >= batch or q + 1 == horizon:
            for fb in pending:
                s.feedback(fb)
            pending.clear()
            d = s.decide()
            if d.verdict is not Verdict.HOLD:
                return d.verdict.value, q + 1
    return "hold", horizon


def _aa_chunk(args: tuple) -> list[tuple[str, int]]:
    kind, seeds, horizon, batch, rate = args
    return [aa_real(kind, seed, horizon, batch, rate) for seed in seeds]


def run_real(pool, kind: str, seeds: int, horizon: int, batch: int, rate: float, workers: int) -> list[tuple[str, int]]:
    chunks = [(kind, range(w, seeds, workers), horizon, batch, rate) for w in range(workers)]
    return [r for part in pool.map(_aa_chunk, chunks) for r in part]


# ---------------------------------------------------------------------------------------------
# The same decision rules on counts, vectorised over seeds (numpy), for the long CTR runs
# ---------------------------------------------------------------------------------------------
def log_e_np(mixture: sq.BetaMixture, s, n, p0):
    """``BetaMixture.log_e`` on arrays."""
    terms = [lw + (gammaln(a + s) + gammaln(b + n - s) - gammaln(a + b + n)) - (gammaln(a) + gammaln(b) - gammaln(a + b))
             for (a, b), lw in zip(mixture.priors, mixture.log_weights)]
    marginal = logsumexp(np.stack(terms), axis=0)
    return marginal - s * np.log(p0) - (n - s) * np.log1p(-p0)


def combine_np(log_s, log_f):
    """``sequential.combine_two_streams`` on arrays."""
    return np.logaddexp(np.logaddexp(log_s, log_f), log_s + log_f) - math.log(3)


def bounds_np(mixture: sq.BetaMixture, s, n, alpha):
    """``BetaMixture.bounds`` on arrays: (lower, upper)."""
    s = np.asarray(s, float)
    n = np.asarray(n, float)
    terms = [lw + (gammaln(a + s) + gammaln(b + n - s) - gammaln(a + b + n)) - (gammaln(a) + gammaln(b) - gammaln(a + b))
             for (a, b), lw in zip(mixture.priors, mixture.log_weights)]
    c = logsumexp(np.stack(terms), axis=0) - math.log(1 / alpha)
    return _root_np(s, n - s, c), 1.0 - _root_np(n - s, s, c)


def _root_np(k, m, c):
    """Vectorised ``framework.sequential._root`` (0 where k == 0)."""
    out = np.zeros_like(k, dtype=float)
    live = k > 0
    if not live.any():
        return out
    kk, mm, cc = k[live], m[live], c[live]
    only = mm <= 0
    u = np.log(kk / (kk + mm))
    back = np.ones_like(u)
    with np.errstate(divide="ignore", invalid="ignore"):
        for _ in range(80):
            g = kk * u + mm * np.log1p(-np.exp(u)) - cc
            high = (g >= 0) & ~only
            if not high.any():
                break
            u = np.where(high, u - back, u)
            back = np.where(high, back * 2, back)
        for _ in range(60):
            p = np.exp(u)
            g = kk * u + mm * np.log1p(-p) - cc
            dg = kk - mm * p / (1 - p)
            u = u - g / dg
        result = np.where(only, np.exp(np.minimum(cc / kk, 0.0)), np.exp(u))
    out[live] = result
    return out


def self_check() -> None:
    """The vectorised rules agree with the scalar code the strategies run."""
    mix = sq.two_arm_mixture(0.5, 0.05)
    for s, n in [(3, 10), (480, 1000), (7, 2000)]:
        assert abs(log_e_np(mix, np.array([s]), np.array([n]), 0.5)[0] - mix.log_e(s, n, 0.5)) < 1e-9
        both = sq.two_arm_bernoulli_log_e(n - s, 40, s, 50, 0.5, mix)
        assert abs(combine_np(log_e_np(mix, np.array([s]), np.array([n]), 0.5), log_e_np(mix, np.array([50]), np.array([90]), 0.5))[0] - both) < 1e-9
        lo, hi = bounds_np(sq.BetaMixture.jeffreys(), np.array([s]), np.array([n]), 0.025)
        cs = sq.BetaMixture.jeffreys().bounds(s, n, 0.025)
        assert abs(lo[0] - cs.lower) < 1e-9 and abs(hi[0] - cs.upper) < 1e-9


def aa_ab_counts(rng, seeds: int, rate: float, requests: int, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The A/B rule (exact conditional e-value, min_samples_per_arm 100) on an equal split: per
    seed, whether it ever named a winner, and the same for a z-test repeated at every batch."""
    cfg = ABConfig()
    mix = sq.two_arm_mixture(0.5, cfg.minimum_effect)
    looks = requests // batch
    nb = rng.binomial(batch, 0.5, size=(seeds, looks))
    na = batch - nb
    sa, sb = rng.binomial(na, rate), rng.binomial(nb, rate)
    SA, SB, NA, NB = (np.cumsum(x, axis=1) for x in (sa, sb, na, nb))
    log_e = combine_np(log_e_np(mix, SB, SA + SB, 0.5), log_e_np(mix, NB - SB, NA - SA + NB - SB, 0.5))
    ready = np.minimum(NA, NB) >= cfg.min_samples_per_arm
    sequential = ((log_e >= math.log(1 / cfg.alpha)) & ready).any(axis=1)
    pooled = (SA + SB) / (NA + NB)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.abs(SA / NA - SB / NB) / np.sqrt(pooled * (1 - pooled) * (1 / NA + 1 / NB))
    naive = ((z > 1.959963984540054) & ready).any(axis=1)
    return sequential, naive


def aa_interleaving_counts(rng, seeds: int, ctr: float, queries: int, batch: int) -> np.ndarray:
    """The interleaving rule: decisive queries at the click rate, each won by b with chance 1/2."""
    cfg = InterleavingConfig()
    mix = sq.BetaMixture.centred(0.5, cfg.minimum_effect, scales=(1.0, 4.0))
    looks = queries // batch
    decisive = rng.binomial(batch, ctr, size=(seeds, looks))
    wins_b = rng.binomial(decisive, 0.5)
    D, WB = np.cumsum(decisive, axis=1), np.cumsum(wins_b, axis=1)
    log_e = log_e_np(mix, WB, D, 0.5)
    return ((log_e >= math.log(1 / cfg.alpha)) & (D >= cfg.min_impressions) & (WB > D - WB)).any(axis=1)


def aa_canary_counts(rng, seeds: int, error: float, requests: int, batch: int) -> np.ndarray:
    """The canary's error-rate gate with a challenger exactly at ``error_rate_max`` = ``error``,
    its challenger share stepping 5/25/50/100% as windows of 500 requests pass."""
    from plugins.strategy_canary import _rate_mixture

    cfg = CanaryConfig(gates=Gates(error_rate_max=error))
    mix = _rate_mixture(error)
    steps = cfg.steps
    looks = requests // batch
    share = np.array([steps[min(int(i * batch / cfg.window_requests), len(steps) - 1)] / 100 for i in range(looks)])
    n = rng.binomial(batch, share, size=(seeds, looks))
    errs = rng.binomial(n, error)
    N, E = np.cumsum(n, axis=1), np.cumsum(errs, axis=1)
    lower, _ = bounds_np(mix, E.ravel(), N.ravel().astype(float), cfg.gates.alpha)
    lower = lower.reshape(N.shape)
    return ((lower > error) & (N >= cfg.min_challenger_requests)).any(axis=1)


def aa_bandit_counts(rng, algorithm: str, seeds: int, rate: float, requests: int, batch: int, k: int = 2) -> np.ndarray:
    """The bandit's burn-in, allocation and promotion rule on counts, arms all at ``rate``."""
    cfg = BanditConfig(algorithm=algorithm)
    m, alpha_each = cfg.min_rewards_per_arm, cfg.alpha / k
    mix = sq.BetaMixture.jeffreys()
    n = np.zeros((seeds, k))
    s = np.zeros((seeds, k))
    promoted = np.zeros(seeds, bool)
    rows = np.arange(seeds)
    for _ in range(requests // batch):
        alloc = np.zeros((seeds, k))
        burn = (n < m).any(axis=1)
        if burn.any():  # round robin over the arms still short of rewards
            short = (n[burn] < m).astype(float)
            alloc[burn] = rng.multinomial(batch, short / short.sum(axis=1, keepdims=True))
        free = ~burn
        if free.any():
            nf, sf = n[free], s[free]
            if algorithm == "thompson":
                mean = (sf.sum(1) + cfg.prior_alpha) / (nf.sum(1) + cfg.prior_alpha + cfg.prior_beta)
                p_hat = sf / nf
                between = ((p_hat - mean[:, None]) ** 2).sum(1) / (k - 1)
                noise = (mean * (1 - mean))[:, None] / nf
                excess = between - noise.mean(1)
                strength = np.where(excess > 0, np.clip(mean * (1 - mean) / np.where(excess > 0, excess, 1) - 1, 2, m), m)
                a, b = mean * strength, (1 - mean) * strength
                # P(each arm's draw is the largest) from 64 joint draws, then the batch by it
                draws = rng.beta(a[:, None, None] + sf[:, None, :], b[:, None, None] + (nf - sf)[:, None, :],
                                 size=(len(nf), 64, k))
                p_best = np.stack([(draws.argmax(2) == j).mean(1) for j in range(k)], axis=1)
                alloc[free] = rng.multinomial(batch, p_best)
            else:
                t = nf.sum(1)
                if algorithm == "ucb1":
                    index = sf / nf + np.sqrt(2 * np.log(np.maximum(t, 2))[:, None] / nf)
                elif algorithm == "kl_ucb":
                    index = np.array([[kl_ucb_index(x / y, int(y), math.log(max(tt, 2))) for x, y in zip(srow, nrow)]
                                      for srow, nrow, tt in zip(sf, nf, t)])
                else:
                    index = sf / nf
                index = index + rng.random(index.shape) * 1e-12  # random ties
                best = index.argmax(1)
                if algorithm == "epsilon_greedy":  # a uniform arm with chance epsilon, else the best mean
                    explore = rng.binomial(batch, cfg.epsilon, size=len(nf))
                    sub = rng.multinomial(explore, [1 / k] * k).astype(float)
                    sub[np.arange(len(nf)), best] += batch - explore
                else:  # an index fixed until the next batch of rewards: the whole batch to its argmax
                    sub = np.zeros((len(nf), k))
                    sub[np.arange(len(nf)), best] = batch
                alloc[free] = sub
        rewards = rng.binomial(alloc.astype(int), rate)
        n += alloc
        s += rewards
        ready = (n >= m).all(axis=1) & ~promoted
        if ready.any():
            lo, hi = bounds_np(mix, s[ready].ravel(), n[ready].ravel(), alpha_each)
            lo, hi = lo.reshape(-1, k), hi.reshape(-1, k)
            top = lo.argmax(1)
            others = np.where(np.eye(k, dtype=bool)[top], -np.inf, hi).max(1)
            promoted[rows[ready]] = lo[np.arange(len(top)), top] > others
    return promoted


# ---------------------------------------------------------------------------------------------
# Power of the A/B test against a fixed horizon
# ---------------------------------------------------------------------------------------------
def power_ab(rng, rate: float, effect: float, seeds: int, looks: int = 400) -> dict:
    cfg = ABConfig()
    n_fixed = sq.sample_size_two_proportions(rate, rate * (1 + effect), cfg.alpha, 0.8)
    total_fixed = 2 * n_fixed
    cap = 4 * total_fixed
    batch = max(cap // looks, 1)
    mix = sq.two_arm_mixture(0.5, cfg.minimum_effect)
    threshold = math.log(1 / cfg.alpha)
    stop = np.full(seeds, np.inf)
    correct = np.zeros(seeds, bool)
    SA = SB = NA = NB = np.zeros(seeds)
    for look in range(looks):
        nb = rng.binomial(batch, 0.5, size=seeds)
        na = batch - nb
        SA, SB = SA + rng.binomial(na, rate), SB + rng.binomial(nb, rate * (1 + effect))
        NA, NB = NA + na, NB + nb
        log_e = combine_np(log_e_np(mix, SB, SA + SB, 0.5), log_e_np(mix, NB - SB, NA - SA + NB - SB, 0.5))
        hit = (log_e >= threshold) & np.isinf(stop) & (np.minimum(NA, NB) >= cfg.min_samples_per_arm)
        stop[hit] = (look + 1) * batch
        correct[hit] = SB[hit] / NB[hit] > SA[hit] / NA[hit]
    decided = np.isfinite(stop)
    # the fixed-horizon test run to its planned size, on fresh data
    a = rng.binomial(n_fixed, rate, size=seeds)
    b = rng.binomial(n_fixed, rate * (1 + effect), size=seeds)
    pooled = (a + b) / (2 * n_fixed)
    z = (b - a) / n_fixed / np.sqrt(pooled * (1 - pooled) * 2 / n_fixed)
    fixed_power = float((z > 1.959963984540054).mean())
    stops = np.where(decided & correct, stop, np.inf)
    p80 = float(np.quantile(stops, 0.8)) if (decided & correct).mean() >= 0.8 else math.inf
    return {
        "fixed_total": total_fixed, "fixed_power": fixed_power,
        "power": float((decided & correct).mean()), "wrong": int((decided & ~correct).sum()),
        "median": float(np.median(stop[decided & correct])) if (decided & correct).any() else math.inf,
        "p80": p80, "mean_capped": float(np.minimum(stop, cap).mean()),
    }


# ---------------------------------------------------------------------------------------------
# A/A on real logged clicks: the Open Bandit Dataset's uniform log split into two identical arms
# ---------------------------------------------------------------------------------------------
def aa_real_log(make, runs: int) -> tuple[int, int]:
    """Each run shuffles the 10,000 logged impressions (0.38% clicks) and deals them at random to
    two arms, so both arms have exactly the same click distribution; the strategy is replayed on
    that uniform two-arm log (framework.offline_eval). (false promotions, runs)"""
    import pandas as pd

    from framework.offline_eval import evaluate, log_from_frame, read_log

    clicks = np.asarray(read_log("obd:random").reward)
    false = 0
    for run in range(runs):
        rng = np.random.default_rng(10_000 + run)
        order = rng.permutation(len(clicks))
        frame = pd.DataFrame({"arm": np.where(rng.random(len(clicks)) < 0.5, "a", "b"),
                              "reward": clicks[order], "propensity": 0.5})
        report = evaluate(lambda arms, run=run: make(arms, run), log_from_frame(frame), ["replay"])
        false += any(d["verdict"] in ("promote", "rollback") for d in report.decisions)
    return false, runs


# ---------------------------------------------------------------------------------------------
def binomial_tail(k: int, n: int, p: float) -> float:
    from scipy.stats import binom

    return float(binom.sf(k - 1, n, p))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--cross-seeds", type=int, default=100)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--real-log-runs", type=int, default=100,
                        help="A/A runs on the Open Bandit Dataset's real clicks (needs obp; 0: skip)")
    parser.add_argument("--sections", default="aa,real-log,power,regret",
                        help="comma-separated: aa (simulated A/A), real-log, power, regret")
    args = parser.parse_args()
    started = time.perf_counter()
    self_check()
    rng = np.random.default_rng(0)
    ok = True
    rows = []

    def row(strategy: str, regime: str, how: str, false: int, runs: int, note: str = "") -> None:
        nonlocal ok
        tail = binomial_tail(false, runs, ALPHA)
        ok &= tail >= 0.001 or "z-test" in how
        rows.append(f"| {strategy} | {regime} | {how} | {false}/{runs} = {false / runs:.3f} | {tail:.2g} | {note} |")

    sections = set(args.sections.split(","))
    with ProcessPoolExecutor(args.workers) as pool:
        real = {} if "aa" not in sections else {
            "ab": (4000, "2 arms, 4,000 requests, 1% errors on both (error-rate guardrail on)"),
            "canary": (6000, "steps 5/25/50/100%, windows of 500; both arms at 1% errors = error_rate_max, accuracy gate at 0"),
            **{a: (4000, "2 arms, 4,000 requests") for a in ALGORITHMS},
            "interleaving": (2000, "2,000 queries, relevant item ranked first 80% of the time by both"),
        }
        for kind, (horizon, note) in real.items():
            t0 = time.perf_counter()
            results = run_real(pool, kind, args.seeds, horizon, args.batch, 0.8, args.workers)
            false = sum(v in ("promote", "rollback") for v, _ in results)
            right = sum(v == "right" for v, _ in results)
            name = f"bandit ({kind})" if kind in ALGORITHMS else kind
            extra = f"; canary promoted {right}" if kind == "canary" else ""
            row(name, "accuracy 80%", "real class", false, len(results), f"{note}{extra} ({time.perf_counter() - t0:.0f} s)")
        # the real bandit class at CTR 0.5%, shorter runs (a cross-check of the vectorised rule)
        for algorithm in ALGORITHMS if "aa" in sections else ():
            t0 = time.perf_counter()
            results = run_real(pool, algorithm, args.cross_seeds, 20_000, 200, 0.005, args.workers)
            false = sum(v in ("promote", "rollback") for v, _ in results)
            row(f"bandit ({algorithm})", "CTR 0.5%", "real class", false, len(results),
                f"2 arms, 20,000 requests, rewards in batches of 200 ({time.perf_counter() - t0:.0f} s)")
        if "aa" in sections:
            t0 = time.perf_counter()
            results = run_real(pool, "ab", args.cross_seeds, 40_000, 200, 0.005, args.workers)
            row("ab", "CTR 0.5%", "real class", sum(v in ("promote", "rollback") for v, _ in results), len(results),
                f"metric clicks, 40,000 requests ({time.perf_counter() - t0:.0f} s)")

    if args.real_log_runs and "real-log" in sections:
        import importlib.util

        if importlib.util.find_spec("obp") is None:
            print("(obp not installed: the A/A on real logged clicks is skipped)")
        else:
            for algorithm in ALGORITHMS:
                t0 = time.perf_counter()
                false, runs = aa_real_log(lambda arms, run, a=algorithm: BanditStrategy(
                    BanditConfig(algorithm=a, reward="clicks", seed=run), arms), args.real_log_runs)
                row(f"bandit ({algorithm})", "real clicks 0.38%", "replay of the OBD uniform log", false, runs,
                    f"10,000 logged impressions dealt to 2 identical arms ({time.perf_counter() - t0:.0f} s)")
            t0 = time.perf_counter()
            false, runs = aa_real_log(lambda arms, run: ABStrategy(ABConfig(metric="clicks", auto_promote=True,
                                                                            seed=run), arms), args.real_log_runs)
            row("ab", "real clicks 0.38%", "replay of the OBD uniform log", false, runs,
                f"metric clicks, the same logs ({time.perf_counter() - t0:.0f} s)")

    t0 = time.perf_counter()
    if "aa" in sections:
        vectorised_aa(rng, args, row)
    vector_time = time.perf_counter() - t0

    if rows:
        print(f"# Anytime-valid experiments (alpha {ALPHA}, decision after every batch of feedback)\n")
        print("## A/A: false promotions (canary: false rollbacks)\n")
        print("| strategy | regime | how | false decisions | binomial p vs alpha | setup |")
        print("|---|---|---|---:|---:|---|")
        print("\n".join(rows))
        print(f"\n(vectorised rules: {vector_time:.0f} s)\n")
    if "power" in sections:
        print_power(rng, args)
    if "regret" in sections:
        print_regret()
    print(f"\n{'PASS' if ok else 'FAIL'}: every A/A false-decision rate compatible with alpha {ALPHA} "
          f"(one-sided binomial p >= 0.001) ({time.perf_counter() - started:.0f} s)")
    return 0 if ok else 1


def vectorised_aa(rng, args, row) -> None:
    sequential, naive = aa_ab_counts(rng, args.seeds, 0.005, 2_000_000, 10_000)
    row("ab", "CTR 0.5%", "rule on counts", int(sequential.sum()), args.seeds, "2,000,000 requests, a look every 10,000")
    row("ab, before", "CTR 0.5%", "z-test repeated at every look", int(naive.sum()), args.seeds, "the same runs: peeking")
    sequential, naive = aa_ab_counts(rng, args.seeds, 0.8, 20_000, args.batch)
    row("ab, before", "accuracy 80%", "z-test repeated at every look", int(naive.sum()), args.seeds,
        f"20,000 requests, a look every {args.batch}: peeking")
    row("canary", "CTR-like 0.5%", "rule on counts", int(aa_canary_counts(rng, args.seeds, 0.005, 200_000, 1000).sum()),
        args.seeds, "error gate, both arms at 0.5% errors = error_rate_max, 200,000 requests")
    row("interleaving", "CTR 0.5%", "rule on counts", int(aa_interleaving_counts(rng, args.seeds, 0.005, 2_000_000, 10_000).sum()),
        args.seeds, "2,000,000 queries, 0.5% with a click")
    for algorithm in ALGORITHMS:
        promoted = aa_bandit_counts(rng, algorithm, args.seeds if algorithm != "kl_ucb" else args.seeds // 4,
                                    0.005, 400_000, 2000)
        row(f"bandit ({algorithm})", "CTR 0.5%", "rule on counts", int(promoted.sum()), len(promoted),
            "2 arms, 400,000 requests, rewards in batches of 2,000")


def print_power(rng, args) -> None:
    print("## Power of the A/B test: requests (both arms) until a correct decision\n")
    print("| baseline | relative effect | fixed horizon: planned requests | its power | sequential: power by 4x | median | 80% decided by | mean (capped) | 80%-point / fixed | wrong |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for rate, seeds in ((0.8, args.seeds), (0.005, args.seeds)):
        for effect in (0.05, 0.10, 0.20):
            if rate * (1 + effect) >= 1:
                continue
            r = power_ab(rng, rate, effect, seeds)
            ratio = r["p80"] / r["fixed_total"]
            print(f"| {'accuracy' if rate > 0.5 else 'CTR'} {rate:g} | {effect:.0%} | {r['fixed_total']:,} | {r['fixed_power']:.3f} "
                  f"| {r['power']:.3f} | {r['median']:,.0f} | {r['p80']:,.0f} | {r['mean_capped']:,.0f} | {ratio:.2f}x | {r['wrong']} |")


def print_regret() -> None:
    print("\n## Bandit regret at CTR 0.5%: three arms 0.4% / 0.5% / 0.6%, 100,000 requests, rewards in batches of 100\n")
    means = (0.004, 0.005, 0.006)
    seeds = 10
    print("| policy | regret (mean ± sd) | / uniform | best-arm share (last 1000) | promoted (seeds, correct) |")
    print("|---|---:|---:|---:|---|")
    uniform = [simulate(BanditConfig(seed=s), means, 100_000, env_seed=s, weights={f"arm{i}": 1 for i in range(3)},
                        batch=100)["regret"] for s in range(seeds)]
    u = statistics.mean(uniform)
    for algorithm in ALGORITHMS:
        runs = [simulate(BanditConfig(algorithm=algorithm, seed=s), means, 100_000, env_seed=s, batch=100) for s in range(seeds)]
        regret = [r["regret"] for r in runs]
        promoted = [r["promoted"] for r in runs if r["promoted"]]
        print(f"| {algorithm} | {statistics.mean(regret):.1f} ± {statistics.stdev(regret):.1f} | {statistics.mean(regret) / u:.2f} "
              f"| {statistics.mean(r['best_share'] for r in runs):.3f} | {len(promoted)}/{seeds}, {sum(a == 'arm2' for _, a in promoted)} |")
    print(f"| uniform | {u:.1f} ± {statistics.stdev(uniform):.1f} | 1.00 | 0.333 | - |")
    print("| oracle (always arm2) | 0.0 | 0.00 | 1.000 | - |")


if __name__ == "__main__":
    sys.exit(main())
