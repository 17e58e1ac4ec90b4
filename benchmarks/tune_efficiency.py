"""Ray Tune efficiency of the ``tune`` trainer with the ``mlp`` model (plugins/train_tune.py), on 2 CPUs.

(1) Parallel efficiency: 16 short trials (breast cancer, max_epochs 5, cpus_per_trial 1,
    2 concurrent) -- wall time of the search (``Tuner.fit``) vs the ideal parallel time, the sum of
    the trials' own times (their last reported ``time_total_s``) / 2. Target: ratio <= 1.25.
(2) ASHA vs FIFO on the same 16-config search (same run seed, so the same sampled configs): best
    val accuracy, test accuracy of the chosen model, trial-epochs trained. Target: ASHA's best val
    accuracy within 1 point of FIFO's with <= 50% of its trial-epochs.

    python benchmarks/tune_efficiency.py [--samples 16] [--epochs 30] [--seed 0]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

RATIO_TARGET = 1.25
ACC_POINTS, EPOCH_SHARE = 1.0, 0.5


def run(root: Path, name: str, seed: int, **options):
    from framework.context import RunStageContext
    from framework.testing.data import breast_cancer_splits
    from plugins.train_tune import TuneTrainer

    ctx = RunStageContext(stage=name, out_dir=root / name, seed=seed)
    model = TuneTrainer(TuneTrainer.Config(**options)).fit(breast_cancer_splits(), ctx)
    return model, ctx


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30, help="max_epochs for the ASHA vs FIFO part")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from framework.engine import start_ray, stop_ray

    start_ray(num_cpus=2)
    common = dict(num_samples=args.samples, cpus_per_trial=1.0, max_concurrent_trials=2, resume=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run(root, "warmup", args.seed, **{**common, "num_samples": 2, "max_epochs": 1})  # worker imports

        model, _ = run(root, "parallel", args.seed, max_epochs=5, **common)
        trials = model.details["trials"]
        own = sum(float(r["seconds"] or 0.0) for r in trials)
        wall = model.details["search_seconds"]
        ideal = own / 2
        ratio = wall / ideal if ideal else float("inf")

        fifo, _ = run(root, "fifo", args.seed, max_epochs=args.epochs, scheduler="fifo", **common)
        asha, _ = run(root, "asha", args.seed, max_epochs=args.epochs, scheduler="asha",
                      grace_period=2, reduction_factor=3, **common)
    stop_ray()

    def best_val(m):
        return max(r["best_val_accuracy"] for r in m.details["trials"] if r["best_val_accuracy"] is not None)

    same_configs = [r["config"] for r in fifo.details["trials"]] == [r["config"] for r in asha.details["trials"]]
    fe, ae = fifo.details["trial_epochs_total"], asha.details["trial_epochs_total"]
    gap = 100 * (best_val(fifo) - best_val(asha))
    share = ae / fe
    ok_ratio = ratio <= RATIO_TARGET
    ok_asha = gap <= ACC_POINTS and share <= EPOCH_SHARE

    print(f"## tune (mlp) efficiency ({args.samples} trials, 2 CPUs, cpus_per_trial 1)\n")
    print("| measure | value |")
    print("|---|---|")
    print(f"| (1) trials x epochs | {len(trials)} x <= 5 ({model.details['trial_epochs_total']} trial-epochs) |")
    print(f"| (1) search wall time | {wall:.2f} s |")
    print(f"| (1) sum of trials' own time_total_s / 2 (ideal) | {ideal:.2f} s (sum {own:.2f} s) |")
    print(f"| (1) wall / ideal | {ratio:.2f} (target <= {RATIO_TARGET}: {'MET' if ok_ratio else 'NOT MET'}) |")
    print()
    print(f"| (2) max_epochs {args.epochs}, seed {args.seed} | FIFO | ASHA (grace 2, rf 3) |")
    print("|---|---|---|")
    print(f"| best val accuracy (over trials) | {best_val(fifo):.4f} | {best_val(asha):.4f} |")
    print(f"| chosen model val / test accuracy | {fifo.metrics['val_accuracy']:.4f} / {fifo.metrics['test_accuracy']:.4f}"
          f" | {asha.metrics['val_accuracy']:.4f} / {asha.metrics['test_accuracy']:.4f} |")
    print(f"| trial-epochs | {fe} | {ae} ({100 * share:.0f}% of FIFO) |")
    print(f"| search wall time | {fifo.details['search_seconds']:.1f} s | {asha.details['search_seconds']:.1f} s |")
    print()
    print(f"same 16 sampled configs in both searches: {same_configs}")
    print(f"target (1) wall/ideal <= {RATIO_TARGET}: {'MET' if ok_ratio else 'NOT MET'} ({ratio:.2f})")
    print(f"target (2) ASHA within {ACC_POINTS:g} point of FIFO's best val accuracy ({gap:+.2f} points) with "
          f"<= {100 * EPOCH_SHARE:.0f}% of its trial-epochs ({100 * share:.0f}%): {'MET' if ok_asha else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
