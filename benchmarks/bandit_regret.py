"""Bandit regret: thompson vs kl_ucb vs ucb1 vs epsilon_greedy(0.1) vs a uniform split, simulated.

Three arms with Bernoulli rewards and immediate feedback, ``--requests`` requests per run,
``--seeds`` runs per policy (seed s: strategy seed s and reward streams s, the same for every
policy, so runs are paired). Reported: cumulative pseudo-regret (sum over requests of best mean -
served arm's mean), the best arm's share over the last 1000 routes, and when the strategy's own
decide() first said PROMOTE (the simulation does not act on it; promotion needs an arm's
confidence sequence to clear every other's, see benchmarks/experiments.py for its error rate). Uniform is the bandit with its
weights pinned to 1/3 each (set_weights), i.e. a plain A/B/C split.

    python benchmarks/bandit_regret.py [--requests 10000] [--seeds 20]

Exits 1 unless, in every scenario, Thompson's mean regret is below epsilon-greedy's and below half
of uniform's.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from plugins.strategy_bandit import BanditConfig, simulate  # noqa: E402

SCENARIOS = {
    "click-through (0.05 / 0.07 / 0.09)": (0.05, 0.07, 0.09),
    "accuracy (0.60 / 0.65 / 0.70)": (0.60, 0.65, 0.70),
}
POLICIES = ("thompson", "kl_ucb", "ucb1", "epsilon_greedy", "uniform")


def run_policy(policy: str, means: tuple[float, ...], requests: int, seeds: int) -> list[dict]:
    runs = []
    for seed in range(seeds):
        if policy == "uniform":
            weights = {f"arm{i}": 1.0 for i in range(len(means))}
            runs.append(simulate(BanditConfig(seed=seed), means, requests, env_seed=seed, weights=weights))
        else:
            runs.append(simulate(BanditConfig(algorithm=policy, epsilon=0.1, seed=seed), means, requests, env_seed=seed))
    return runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--seeds", type=int, default=20)
    args = parser.parse_args()
    started = time.perf_counter()
    ok = True
    print(f"# Bandit regret: {args.requests} requests, {args.seeds} seeds, 3 Bernoulli arms\n")
    for title, means in SCENARIOS.items():
        best = f"arm{means.index(max(means))}"
        results = {p: run_policy(p, means, args.requests, args.seeds) for p in POLICIES}
        regret = {p: [r["regret"] for r in runs] for p, runs in results.items()}
        mean = {p: statistics.mean(v) for p, v in regret.items()}
        print(f"## {title}\n")
        print("| policy | cumulative regret (mean ± std) | median | best-arm share (last 1000) | PROMOTE (seeds, median request, correct) |")
        print("|---|---|---|---|---|")
        for p, runs in results.items():
            promoted = [r["promoted"] for r in runs if r["promoted"]]
            when = f"{statistics.median(t for t, _ in promoted):.0f}" if promoted else "-"
            correct = sum(arm == best for _, arm in promoted)
            label = "epsilon_greedy (0.1)" if p == "epsilon_greedy" else p
            print(f"| {label} | {mean[p]:.1f} ± {statistics.stdev(regret[p]):.1f} | {statistics.median(regret[p]):.1f} "
                  f"| {statistics.mean(r['best_share'] for r in runs):.3f} "
                  f"| {len(promoted)}/{len(runs)}, {when}, {correct}/{len(promoted)} |")
        paired = sum(t < e for t, e in zip(regret["thompson"], regret["epsilon_greedy"]))
        te, tu = mean["thompson"] / mean["epsilon_greedy"], mean["thompson"] / mean["uniform"]
        print(f"\nthompson / epsilon_greedy = {te:.2f}; thompson / uniform = {tu:.2f}; "
              f"thompson below epsilon_greedy in {paired}/{args.seeds} paired seeds\n")
        ok &= te < 1.0 and tu < 0.5
    elapsed = time.perf_counter() - started
    print(f"{'PASS' if ok else 'FAIL'}: thompson below epsilon_greedy and below half of uniform in every scenario "
          f"({elapsed:.1f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
