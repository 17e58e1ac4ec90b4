"""Labeling: weak supervision against full supervision, active learning against random batches,
and the share of a table a class split queues for relabeling.

1. **Weak supervision** (vega_datasets' cars, the `weak_supervision` recipe's labeling functions):
   (a) the accuracy of the label model's labels on the hidden train rows, generative (Dawid-Skene)
   and majority vote, and their coverage; (b) the recipe's model (the `mlp`, tuned by Ray Tune)
   trained on those labels against the same recipe with every true label (`~label`), test
   accuracy on the same test rows, over ``--seeds`` recipe seeds (each seed a different split).
2. **Active learning** (scikit-learn's digits): a pool of 70% of the rows, 30% held out. Start
   with 20 random labels, add batches of ``--batch`` rows; the curve's point after each batch is
   the scoring learner's (logistic regression) accuracy on the held-out rows. Labels needed to
   reach 95% of the accuracy with every pool label, per strategy, over ``--seeds`` seeds; the
   ratio is uncertainty's mean over random's (goal <= 0.6). The person is played by the true
   labels directly here; the recipe and tests play it through Label Studio files.
3. **Migration** (vega_datasets' seattle-weather as the `label_migration` recipe has it, rain and
   drizzle once merged into `wet`; and cars with imports once one class): rows a split queues
   for relabeling against the rows of the table.

    python benchmarks/labels.py [--seeds 5] [--batch 10] [--skip-training]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from framework.labels import ABSTAIN, Migration  # noqa: E402
from framework.labels.active import Learner, Loop, labels_to_reach  # noqa: E402
from framework.labels.functions import apply_functions, parse_functions  # noqa: E402
from framework.labels.model import combine  # noqa: E402

GOAL_RATIO = 0.6
import plugins.label_callables  # noqa: E402,F401  (car_make_typos on the allow-list)


def vega(name: str) -> pd.DataFrame:
    import importlib.resources

    path = importlib.resources.files("vega_datasets") / "_data" / name
    return pd.DataFrame(json.loads(path.read_text())) if name.endswith(".json") else pd.read_csv(path)


def recipe_functions() -> list:
    import yaml

    recipe = yaml.safe_load((HERE.parent / "recipes" / "weak_supervision.yaml").read_text())
    return recipe["label"]["functions"]


def weak_label_models() -> dict:
    cars = vega("cars.json")
    classes = ["Europe", "Japan", "USA"]
    functions = parse_functions(recipe_functions(), "label.functions", classes)
    matrix = apply_functions(functions, cars, classes)
    truth = cars["Origin"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    out = {}
    for model in ("majority", "generative"):
        probs, _ = combine(matrix, len(classes), model)
        covered = ~np.isnan(probs).any(axis=1)
        out[model] = {"coverage": float(covered.mean()),
                      "accuracy": float((probs[covered].argmax(axis=1) == truth[covered]).mean())}
    out["rows"] = len(cars)
    out["functions"] = len(functions)
    out["any_vote"] = float((matrix != ABSTAIN).any(axis=1).mean())
    return out


def weak_vs_full(seeds: list[int]) -> list[dict]:
    """The recipe twice per seed: weak labels, then every true label (``~label``)."""
    from framework.plugins import default_components
    from framework.run import Reporter, execute, plan_recipe

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in seeds:
            row = {"seed": seed}
            for mode, extra in (("weak", []), ("full", ["~label"])):
                plan = plan_recipe(["+recipe=weak_supervision", f"seed={seed}", f"store.uri={tmp}/store",
                                    f"runs_dir={tmp}/runs", *extra])
                result = execute(plan, default_components(), Reporter(quiet=True))
                stages = {s.stage: s.metrics for s in result.stages}
                row[f"{mode}_test_accuracy"] = stages["train"]["test_accuracy"]
                if mode == "weak":
                    row["label_accuracy"] = stages["label"]["label_accuracy_hidden"]
                    row["train_rows_weak"] = stages["label"]["train_rows"]
                else:
                    row["train_rows_full"] = stages["version"]["train_rows"]
            print(f"  seed {seed}: {row}", flush=True)
            rows.append(row)
    return rows


def active_learning(seeds: list[int], batch: int, start: int = 20, max_labels: int = 700) -> dict:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    strategies = [("margin", True), ("margin", False), ("entropy", False), ("least_confidence", False), ("random", False)]
    needed: dict[str, list] = {f"{s}{'+diverse' if d else ''}": [] for s, d in strategies}
    full_accuracy, pool = [], 0
    for seed in seeds:
        x_pool, x_test, y_pool, y_test = train_test_split(x, y, test_size=0.3, random_state=seed, stratify=y)
        full = Learner(10, seed).fit(x_pool, y_pool).accuracy(x_test, y_test)
        full_accuracy.append(full)
        pool = len(x_pool)
        begin = {int(i): int(y_pool[i]) for i in np.random.default_rng(seed).choice(len(x_pool), start, replace=False)}
        for strategy, diverse in strategies:
            loop = Loop(x_pool, 10, strategy, batch, diverse, seed=seed, labels=dict(begin))
            target = 0.95 * full
            curve = [(len(loop.labels), loop.learner().accuracy(x_test, y_test))]
            while curve[-1][1] < target and len(loop.labels) < max_labels:
                picked = loop.next_batch()
                loop.labels.update({int(i): int(y_pool[i]) for i in picked})
                curve.append((len(loop.labels), loop.learner().accuracy(x_test, y_test)))
            needed[f"{strategy}{'+diverse' if diverse else ''}"].append(labels_to_reach(curve, target))
        print(f"  seed {seed}: full {full:.4f}; " + ", ".join(f"{k} {v[-1]}" for k, v in needed.items()), flush=True)
    return {"full_accuracy": full_accuracy, "needed": needed, "pool": pool}


def migrations() -> list[dict]:
    weather = vega("seattle-weather.csv")
    coarse = weather["weather"].replace({"rain": "wet", "drizzle": "wet"})
    cars = vega("cars.json")
    imports = cars["Origin"].replace({"Europe": "import", "Japan": "import"})
    out = []
    for name, labels, split in (("seattle-weather", coarse, {"wet": ["rain", "drizzle"]}),
                                ("cars", imports, {"import": ["Europe", "Japan"]})):
        _, queued, counts = Migration.parse({"split": split}, "split").apply(labels)
        out.append({"dataset": name, "split": split, "rows": len(labels), "queued": len(queued),
                    "share": len(queued) / len(labels)})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--skip-training", action="store_true", help="no recipe runs (no Ray): label models only")
    args = parser.parse_args()
    seeds = list(range(args.seeds))
    t0 = time.perf_counter()

    print("1. weak supervision: label models on cars (406 rows, the recipe's functions)")
    lm = weak_label_models()
    for model in ("majority", "generative"):
        print(f"   {model:10s}  coverage {lm[model]['coverage']:.1%}  accuracy {lm[model]['accuracy']:.1%}")
    if not args.skip_training:
        rows = weak_vs_full(seeds)
        weak = np.array([r["weak_test_accuracy"] for r in rows])
        full = np.array([r["full_test_accuracy"] for r in rows])
        labels = np.array([r["label_accuracy"] for r in rows])
        print(f"   label model's labels on the hidden train rows: {labels.mean():.1%} (min {labels.min():.1%})")
        print(f"   model test accuracy: weak {weak.mean():.4f} +- {weak.std():.4f}, full {full.mean():.4f} +- {full.std():.4f}, "
              f"difference {100 * (weak - full).mean():+.1f} points (per seed: {', '.join(f'{100 * d:+.1f}' for d in weak - full)})")

    print(f"2. active learning on digits: labels to reach 95% of full supervision, batches of {args.batch}, {args.seeds} seeds")
    al = active_learning(seeds, args.batch)
    random = np.mean([n if n is not None else np.nan for n in al["needed"]["random"]])
    for name, values in al["needed"].items():
        mean = np.mean([v if v is not None else np.nan for v in values])
        ratio = mean / random
        print(f"   {name:18s} {mean:6.1f} labels  ratio {ratio:.2f}{'  (goal <= 0.6 met)' if name != 'random' and ratio <= GOAL_RATIO else ''}"
              f"   per seed {values}")
    print(f"   full supervision ({al['pool']} pool labels): accuracy {np.mean(al['full_accuracy']):.4f}")

    print("3. migration: rows a split queues for relabeling")
    for m in migrations():
        print(f"   {m['dataset']:16s} split {m['split']}: {m['queued']} of {m['rows']} rows ({m['share']:.1%})")
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
