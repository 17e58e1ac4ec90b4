"""Knowledge distillation: small students taught by a large teacher vs the same students trained on labels.

A teacher MLP (30 -> 256 -> 256 -> 2, standardization inside, the trainer's TabularMLP) is trained
on breast cancer (framework.testing's splits; best validation epoch kept). Students 30 -> H -> 2
with H in 8 / 16 / 32 are then

- distilled by the ``distill`` compressor (plugins/compress_distill.py): a Ray Tune job, one trial,
  T = 4, alpha = 0.7, 40 epochs, best validation epoch kept;
- trained from the labels only: the very same loop, seed and epochs with alpha = 0 (plain
  cross-entropy), run in-process.

Each variant runs for every seed in ``--seeds`` and the test accuracies are averaged (the test split
has 86 rows: one row is 1.16 points).

    python benchmarks/distillation.py [--seeds 0 1 2] [--teacher-epochs 60]

Target (issue): a distilled student with <= 40% of the teacher's parameters keeps >= 97% of its
test accuracy.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

STUDENTS = (8, 16, 32)
RATIO_TARGET, RETENTION_TARGET = 0.40, 0.97
TEMPERATURE, ALPHA, EPOCHS = 4.0, 0.7, 40


def train_teacher(splits, epochs: int, seed: int = 0):
    """30 -> 256 -> 256 -> 2, mini-batch Adam, best validation epoch (accuracy, then loss) kept."""
    import copy

    import torch

    from plugins.model_mlp import build_mlp as build_module
    from plugins.nets import evaluate as _evaluate

    torch.manual_seed(seed)
    x, y = splits.arrays("train")
    xv, yv = splits.arrays("val")
    std = np.where(x.std(0) > 1e-12, x.std(0), 1.0)
    module = build_module({"hidden": 256, "layers": 2, "lr": 1e-3, "dropout": 0.1}, x.shape[1], 2, x.mean(0), std)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x), torch.tensor(y)
    generator = torch.Generator().manual_seed(seed)
    best, best_state = None, None
    for _ in range(epochs):
        module.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), 32):
            idx = order[start:start + 32]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(module(xt[idx]), yt[idx]).backward()
            optimizer.step()
        acc, loss, _ = _evaluate(module, xv, yv)
        if best is None or (acc, -loss) > best:
            best, best_state = (acc, -loss), copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    return module.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-epochs", type=int, default=60)
    args = parser.parse_args(argv)

    from framework.components import FeatureSpec, InputSchema, TrainedModel
    from framework.context import RunStageContext
    from framework.engine import start_ray, stop_ray
    from framework.testing.data import breast_cancer_splits
    from plugins.compress_distill import DistillCompressor, DistillConfig, student_hp, teacher_logits, train_student
    from plugins.model_mlp import MLPModel
    from plugins.compress_prune import count_parameters, evaluate

    splits = breast_cancer_splits()
    classes = list(splits.dataset.classes)
    schema = InputSchema([FeatureSpec(n, "float") for n in splits.dataset.features])
    module = train_teacher(splits, args.teacher_epochs)
    t_eval = evaluate(module, splits, classes)
    teacher = TrainedModel(module, schema, classes, {k: v for k, v in t_eval.items() if k != "val_loss"},
                           hyperparameters={"hidden": 256, "layers": 2, "dropout": 0.1})
    t_acc, t_params = t_eval["test_accuracy"], count_parameters(module)

    x, y = splits.arrays("train")
    xv, yv = splits.arrays("val")
    std = np.where(x.std(0) > 1e-12, x.std(0), 1.0).astype(np.float32)
    start_ray(num_cpus=2)
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for hidden in STUDENTS:
                distilled, labels_only, params = [], [], None
                for seed in args.seeds:
                    config = DistillConfig(student={"hidden": hidden}, temperature=TEMPERATURE, alpha=ALPHA, epochs=EPOCHS)
                    ctx = RunStageContext("compress", Path(tmp) / f"h{hidden}_s{seed}", seed=seed)
                    out = DistillCompressor(config).compress(teacher, splits, ctx)
                    distilled.append(out.metrics["test_accuracy"])
                    params = out.metrics["student_parameters"]
                    # same loop, seed (trial 0 of the Tune job: run seed + 0) and epochs; alpha = 0
                    data = {"x_train": x, "y_train": y, "x_val": xv, "y_val": yv,
                            "teacher_train": teacher_logits(module, x), "mean": x.mean(0).astype(np.float32),
                            "std": std, "n_classes": len(classes), "student_model": MLPModel,
                            "settings": {"epochs": EPOCHS, "lr": config.lr, "batch_size": config.batch_size,
                                         "student_hp": student_hp(MLPModel, {"hidden": hidden}, config.lr)}}
                    student, _, _ = train_student(data, TEMPERATURE, 0.0, seed)
                    labels_only.append(evaluate(student, splits, classes)["test_accuracy"])
                rows.append((hidden, params, statistics.mean(distilled), statistics.mean(labels_only),
                             min(distilled)))
    finally:
        stop_ray()

    print(f"Teacher 30 -> 256 -> 256 -> 2: {t_params} parameters, test accuracy {t_acc:.4f} "
          f"(breast cancer, 86 test rows; students: mean over seeds {args.seeds}; T={TEMPERATURE}, alpha={ALPHA}, "
          f"{EPOCHS} epochs)\n")
    print("| student | parameters | ratio to teacher | distilled test acc | retention | labels-only test acc | retention | worst-seed distilled retention |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    met = []
    for hidden, params, d_acc, l_acc, d_min in rows:
        ratio = params / t_params
        met.append(ratio <= RATIO_TARGET and d_acc / t_acc >= RETENTION_TARGET)
        print(f"| 30 -> {hidden} -> 2 | {params} | {100 * ratio:.2f}% | {d_acc:.4f} | {d_acc / t_acc:.3f} | "
              f"{l_acc:.4f} | {l_acc / t_acc:.3f} | {d_min / t_acc:.3f} |")
    ok = all(met)
    print(f"\nTarget (<= {RATIO_TARGET:.0%} of the teacher's parameters, >= {RETENTION_TARGET:.0%} of its test "
          f"accuracy, mean over seeds): {'MET' if ok else 'NOT MET'} for "
          f"{sum(met)}/{len(met)} students")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
