"""Compressor ``distill``: knowledge distillation of the trained model into a smaller MLP, as a Ray Tune job.

The teacher is the incoming TrainedModel (the run's best model). Its logits on the train split are
computed once in the driver and handed to the trials as numpy arrays (``tune.with_parameters``), so
a trial never needs the teacher module. Each Tune trial trains a student, the trainer's own
TabularMLP (``plugins.train_tune_mlp.build_module``, the same standardization mean/std as the
training split), with

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

(Hinton et al.: the teacher's softened distribution is the target of the KL term; T^2 keeps the
gradient scale of the soft term independent of T). A trial reports validation accuracy every epoch
and checkpoints its best ``state_dict``; the driver picks the best trial (validation accuracy, then
validation loss), rebuilds the student from that checkpoint (``torch.load(weights_only=True)``) and
evaluates it on the test split. The returned TrainedModel has the same serving contract: raw
float32 features in, logits out, standardization inside.

``num_samples: 1`` runs one trial with ``temperature`` and ``alpha`` as configured; with more,
Tune samples temperature from {2, 4, 8} and alpha uniformly in [0.3, 0.9] (seeded).

Future work: a registry version as teacher (``teacher: NAME@VERSION``). The option exists so a
recipe can name it, but only ``null`` (the incoming model) is supported today: anything else is
rejected by ``check_config``.

Importing this module is cheap: torch and Ray are imported inside functions.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Optional

from framework import Compressor, DataSplits, TrainedModel, hookimpl
from framework.errors import RecipeError, StageError

from plugins.compress_prune import count_parameters, evaluate

CHECKPOINT_FILE = "student.pt"
#: what Tune samples from when num_samples > 1
TEMPERATURES = (2.0, 4.0, 8.0)
ALPHA_RANGE = (0.3, 0.9)


@dataclass
class DistillConfig:
    #: width of every hidden layer of the student
    student_hidden: int = 16
    #: number of hidden layers of the student
    student_layers: int = 1
    #: softmax temperature of the soft targets, > 0
    temperature: float = 4.0
    #: weight of the soft-target (KL) term, 0 < alpha <= 1; 1 - alpha goes to the hard labels
    alpha: float = 0.7
    epochs: int = 40
    lr: float = 0.005
    batch_size: int = 32
    #: Tune trials; with > 1, temperature is sampled from {2, 4, 8} and alpha from uniform(0.3, 0.9)
    num_samples: int = 1
    cpus_per_trial: float = 1.0
    #: a registry version as teacher: future work, must be null (the incoming model teaches)
    teacher: Optional[str] = None


def student_hp(hidden: int, layers: int, lr: float) -> dict:
    """The trainer's hyperparameters of a student (no dropout: distillation regularizes already)."""
    return {"hidden": int(hidden), "layers": int(layers), "lr": float(lr), "dropout": 0.0, "weight_decay": 0.0}


def teacher_logits(module, x):
    """The teacher's logits on ``x`` as a float32 numpy array (computed once, in the driver)."""
    import numpy as np
    import torch

    module.eval()
    with torch.no_grad():
        return module(torch.tensor(np.asarray(x, dtype=np.float32))).numpy().astype(np.float32)


def distillation_loss(student_logits, teacher_logits_, target, temperature: float, alpha: float):
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, target)."""
    import torch.nn.functional as F

    t = float(temperature)
    loss = (1.0 - float(alpha)) * F.cross_entropy(student_logits, target) if alpha < 1.0 else 0.0
    if alpha > 0.0:
        soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits_ / t, dim=1),
                        reduction="batchmean")
        loss = loss + float(alpha) * t * t * soft
    return loss


def train_student(data: dict, temperature: float, alpha: float, seed: int, report=None):
    """Train one student on ``data`` (see ``DistillCompressor.compress``); the best state on the
    validation split (accuracy, then loss) is returned with (best_epoch, best_val_accuracy).

    ``report(metrics, state_dict_or_None)`` is called every epoch (the state only on a new best).
    ``alpha = 0`` trains from the labels only (the benchmark's baseline).
    """
    import torch

    from plugins.train_tune_mlp import _evaluate, build_module

    s = data["settings"]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    soft = torch.tensor(data["teacher_train"])
    x_val, y_val = data["x_val"], data["y_val"]
    hp = student_hp(s["student_hidden"], s["student_layers"], s["lr"])
    module = build_module(hp, xt.shape[1], data["n_classes"], data["mean"], data["std"])
    optimizer = torch.optim.Adam(module.parameters(), lr=float(s["lr"]))
    batch_size = int(s["batch_size"])

    best, best_epoch, best_state = None, 0, None
    for epoch in range(1, int(s["epochs"]) + 1):
        module.train()
        order = torch.randperm(len(xt), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            distillation_loss(module(xt[idx]), soft[idx], yt[idx], temperature, alpha).backward()
            optimizer.step()
        acc, loss, _ = _evaluate(module, x_val, y_val)
        if loss != loss:  # NaN
            raise FloatingPointError(f"validation loss is NaN at epoch {epoch} (lr={s['lr']})")
        improved = best is None or (acc, -loss) > best
        if improved:
            best, best_epoch, best_state = (acc, -loss), epoch, copy.deepcopy(module.state_dict())
        if report is not None:
            report({"epoch": epoch, "val_accuracy": acc, "val_loss": loss, "best_epoch": best_epoch,
                    "best_val_accuracy": best[0], "best_val_loss": -best[1]},
                   best_state if improved else None)
    module.load_state_dict(best_state)
    return module.eval(), best_epoch, best[0]


def distill_trial(config: dict, data: dict) -> None:
    """One Tune trial: a student trained with this trial's temperature and alpha."""
    import tempfile

    import torch
    from ray import tune

    from plugins.train_tune_mlp import _trial_index

    torch.set_num_threads(1)  # trials run side by side on few cores
    seed = int(data["settings"]["seed"]) + _trial_index()

    def report(metrics: dict, state) -> None:
        if state is None:
            tune.report(metrics)
            return
        # only improvements are checkpointed, so the trial's latest checkpoint is its best
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    train_student(data, float(config["temperature"]), float(config["alpha"]), seed, report)


class DistillCompressor(Compressor):
    name = "distill"
    Config = DistillConfig
    level: ClassVar[str] = "model"
    summary = "knowledge distillation (temperature, alpha) of the trained model into a smaller MLP, as a Ray Tune job"
    HEADLINE = ("teacher_parameters", "student_parameters", "parameter_ratio", "teacher_test_accuracy",
                "test_accuracy", "accuracy_retention", "temperature", "alpha")

    def __init__(self, config: Any = None):
        super().__init__(config)
        self.check_config(self.config, "compress")  # constructed directly (tests, notebooks)

    @classmethod
    def check_config(cls, config: Any, key: str) -> None:
        c = config

        def number(field: str, kind=float):
            value = getattr(c, field)
            try:
                if isinstance(value, bool):
                    raise TypeError
                return kind(value)
            except (TypeError, ValueError):
                raise RecipeError(f"{key}.{field}: must be a number, got {value!r}") from None

        for field in ("student_hidden", "student_layers", "epochs", "batch_size", "num_samples"):
            if number(field, int) < 1:
                raise RecipeError(f"{key}.{field}: must be >= 1, got {getattr(c, field)}")
        if not number("temperature") > 0:
            raise RecipeError(f"{key}.temperature: must be > 0, got {c.temperature}")
        if not 0.0 < number("alpha") <= 1.0:
            raise RecipeError(f"{key}.alpha: must be in (0, 1] (the weight of the soft-target term), got {c.alpha}")
        if not number("lr") > 0:
            raise RecipeError(f"{key}.lr: must be > 0, got {c.lr}")
        if not number("cpus_per_trial") > 0:
            raise RecipeError(f"{key}.cpus_per_trial: must be > 0, got {c.cpus_per_trial}")
        if c.teacher is not None:
            raise RecipeError(
                f"{key}.teacher: a registry version as teacher is not supported yet (got {c.teacher!r}); "
                "leave it null: the run's trained model is the teacher"
            )

    def compress(self, model: TrainedModel, splits: DataSplits, ctx) -> TrainedModel:
        import numpy as np
        import ray
        import torch
        from ray import tune

        from framework.engine import start_ray
        from plugins.train_tune_mlp import _first_line, _quiet_tune, build_module

        c = self.config
        where = f"compress ({self.name})"
        for part in ("train", "val", "test"):
            if len(getattr(splits, part)) == 0:
                raise StageError(f"{where}: the {part} split is empty")
        if not isinstance(model.module, torch.nn.Module):
            raise StageError(f"{where}: needs a torch nn.Module as teacher, got {type(model.module).__name__}")
        teacher = copy.deepcopy(model.module).eval()  # the input model stays as it was
        classes = list(model.classes)

        start_ray()  # idempotent: the core normally started Ray already
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        if float(c.cpus_per_trial) > cluster_cpus:
            raise StageError(f"{where}: cpus_per_trial={c.cpus_per_trial} but the Ray cluster has {cluster_cpus:g} CPUs")

        x_train, y_train = splits.arrays("train")
        x_val, y_val = splits.arrays("val")
        x_test = splits.arrays("test")[0]
        mean = x_train.mean(axis=0).astype(np.float32)
        std = x_train.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0).astype(np.float32)
        logits = teacher_logits(teacher, x_train)
        if logits.ndim != 2 or logits.shape[1] != len(classes):
            raise StageError(f"{where}: the teacher gives outputs of shape {logits.shape}, expected [n, {len(classes)}]")
        data = {
            "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "teacher_train": logits, "mean": mean, "std": std, "n_classes": len(classes),
            "settings": {"seed": int(ctx.seed), "epochs": int(c.epochs), "lr": float(c.lr),
                         "batch_size": int(c.batch_size), "student_hidden": int(c.student_hidden),
                         "student_layers": int(c.student_layers)},
        }
        if int(c.num_samples) > 1:
            space = {"temperature": tune.choice(list(TEMPERATURES)), "alpha": tune.uniform(*ALPHA_RANGE)}
        else:
            space = {"temperature": float(c.temperature), "alpha": float(c.alpha)}

        from ray.tune.search.basic_variant import BasicVariantGenerator

        storage = (Path(ctx.out_dir) / "tune").resolve()
        storage.mkdir(parents=True, exist_ok=True)
        experiment = storage / "distill"
        if experiment.exists():
            import shutil

            shutil.rmtree(experiment)  # a rerun replaces its outputs
        trainable = tune.with_resources(tune.with_parameters(distill_trial, data=data), {"cpu": float(c.cpus_per_trial)})
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                num_samples=int(c.num_samples), metric="best_val_accuracy", mode="max",
                search_alg=BasicVariantGenerator(random_state=int(ctx.seed)), reuse_actors=True,
            ),
            run_config=tune.RunConfig(
                name="distill", storage_path=str(storage), verbose=0, log_to_file=True,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
        started = time.perf_counter()
        with _quiet_tune():
            grid = tuner.fit()
        seconds = time.perf_counter() - started

        trials, candidates = [], []
        for result in grid:
            m = result.metrics or {}
            row = {"trial_id": m.get("trial_id") or Path(str(result.path)).name,
                   "temperature": float((result.config or {}).get("temperature", float("nan"))),
                   "alpha": float((result.config or {}).get("alpha", float("nan"))),
                   "best_val_accuracy": m.get("best_val_accuracy"), "best_val_loss": m.get("best_val_loss"),
                   "best_epoch": m.get("best_epoch"), "epochs": m.get("epoch", 0),
                   "error": _first_line(result.error) if result.error else ""}
            trials.append(row)
            if not result.error and result.checkpoint is not None and row["best_val_accuracy"] is not None:
                candidates.append(((row["best_val_accuracy"], -row["best_val_loss"]), row, result))
        trials.sort(key=lambda r: r["trial_id"])
        if not candidates:
            first = next((r for r in trials if r["error"]), None)
            raise StageError(f"{where}: no distillation trial finished"
                             + (f"; first error (trial {first['trial_id']}): {first['error']}" if first else ""))
        _, best_row, best_result = max(candidates, key=lambda t: t[0])

        with best_result.checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, weights_only=True)
        hp = student_hp(c.student_hidden, c.student_layers, c.lr)
        student = build_module(hp, x_train.shape[1], len(classes))
        student.load_state_dict(state)  # also restores the standardization buffers
        student.eval()

        before = evaluate(teacher, splits, classes)
        after = evaluate(student, splits, classes)
        n_teacher, n_student = count_parameters(teacher), count_parameters(student)
        metrics: dict[str, Any] = {k: v for k, v in after.items() if k != "val_loss"}
        metrics.update({
            "teacher_parameters": n_teacher,
            "student_parameters": n_student,
            "parameter_ratio": n_student / n_teacher,  # student / teacher
            "teacher_test_accuracy": before["test_accuracy"],
            "accuracy_retention": after["test_accuracy"] / before["test_accuracy"] if before["test_accuracy"] else 0.0,
            "accuracy_delta": after["test_accuracy"] - before["test_accuracy"],
            "temperature": best_row["temperature"],
            "alpha": best_row["alpha"],
            "trials": len(trials),
            "best_epoch": int(best_row["best_epoch"]),
        })
        for key in self.HEADLINE:
            ctx.metric(f"{self.name}_{key}", metrics[key])
        ctx.logger.info(
            "%s: student %d parameters (%.1f%% of the teacher's %d); test accuracy %.4f (teacher %.4f, "
            "retention %.3f); T=%g alpha=%.3f; %d trial(s) in %.1fs",
            self.name, n_student, 100 * n_student / n_teacher, n_teacher, after["test_accuracy"],
            before["test_accuracy"], metrics["accuracy_retention"], best_row["temperature"], best_row["alpha"],
            len(trials), seconds,
        )
        teacher_hp = {k: v for k, v in model.hyperparameters.items() if k != "hidden_sizes"}
        return TrainedModel(
            module=student,
            schema=model.schema,
            classes=classes,
            metrics=metrics,
            # the student's own architecture: build_module(hyperparameters) + the state_dict reload it
            hyperparameters={**teacher_hp, **hp, self.name: {"type": self.name, **asdict(c),
                                                             "temperature": best_row["temperature"],
                                                             "alpha": best_row["alpha"]}},
            details={"teacher_metrics": dict(model.metrics), "teacher_hyperparameters": dict(model.hyperparameters),
                     "teacher_evaluation": before, "trials": trials, "tune_dir": str(experiment),
                     "best_trial_id": best_row["trial_id"], "checkpoint": str(best_result.checkpoint.path),
                     "search_seconds": round(seconds, 3)},
        )


@hookimpl
def register_compressors():
    return [DistillCompressor]
