"""Compressor ``distill``: knowledge distillation into a smaller student, as a Ray Tune job.

The teacher is the incoming TrainedModel (the run's best model, any torch module), or a registered
version (``teacher: NAME@ALIAS`` or ``NAME:ID``) read as ONNX and run with ONNX Runtime: a teacher
trained by an earlier run, on another machine, even quantized. Its outputs on the train split are
computed once in the driver and handed to the trials as numpy arrays (``tune.with_parameters``),
so a trial never needs the teacher itself. A registered teacher gives class probabilities; their
logarithms are its logits up to a constant per row, which the softmax below ignores.

The student is any model component (``student_model``, default ``mlp``; ``student``: its
hyperparameters, e.g. ``{hidden: 32}``), built with the training split's standardization, and
trained with

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 - alpha) * CE(student, y)

(Hinton et al.: the teacher's softened distribution is the target of the KL term; T^2 keeps the
gradient scale of the soft term independent of T). A trial reports validation accuracy every epoch
and checkpoints its best ``state_dict``; the driver picks the best trial (validation accuracy, then
validation loss), rebuilds the student from that checkpoint (``torch.load(weights_only=True)``) and
evaluates it on the test split. The returned TrainedModel has the same serving contract: raw
float32 features in, logits out, standardization inside.

``num_samples: 1`` runs one trial with ``temperature`` and ``alpha`` as configured; with more,
Tune samples temperature from {2, 4, 8} and alpha uniformly in [0.3, 0.9] (seeded).

Importing this module is cheap: torch and Ray are imported inside functions (with the shared
helpers of ``plugins.nets`` and ``plugins.tune_support``).
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, Mapping, Optional

from framework import Compressor, DataSplits, Model, TrainedModel, hookimpl, is_registry_ref
from framework.errors import RecipeError, StageError

CHECKPOINT_FILE = "student.pt"
#: what Tune samples from when num_samples > 1
TEMPERATURES = (2.0, 4.0, 8.0)
ALPHA_RANGE = (0.3, 0.9)


def student_model_component(name: str, where: str) -> type[Model]:
    """The installed model component ``name`` (RecipeError at ``where`` naming the known ones)."""
    from framework.plugins import default_components

    return default_components().get("model", str(name), where=where).cls


def _default_student() -> dict:
    return {"hidden": 16, "layers": 1}


@dataclass
class DistillConfig:
    #: the student's model component (``python -m framework plugins`` lists them)
    student_model: str = "mlp"
    #: the student's hyperparameters (constants; lr comes from ``lr``, dropout defaults to 0:
    #: distillation regularizes already)
    student: Dict[str, Any] = field(default_factory=_default_student)
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
    #: null: the incoming model teaches; NAME@ALIAS or NAME:ID: that registered version teaches
    #: (its ONNX run with ONNX Runtime; same features and classes as this run's data)
    teacher: Optional[str] = None


def student_hp(model: type[Model] | Model, student: Mapping[str, Any], lr: float) -> dict:
    """The student's full hyperparameters: its model's defaults, no dropout, ``student``, ``lr``."""
    defaults = model.defaults()
    if "dropout" in model.hyperparameters:
        defaults["dropout"] = 0.0
    return {**defaults, **dict(student), "lr": float(lr)}


def teacher_logits(module, x):
    """The teacher's logits on ``x`` as a float32 numpy array (computed once, in the driver)."""
    from plugins.nets import logits_of

    return logits_of(module, x)


def onnx_teacher_logits(onnx_bytes: bytes, input_name: str, output_name: str, x):
    """log(probabilities) of a registered (ONNX) teacher on ``x``: its logits up to a per-row
    constant, which softmax ignores. Probabilities are floored at 1e-12 (log 0)."""
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    probabilities = session.run([output_name], {input_name: np.asarray(x, dtype=np.float32)})[0]
    return np.log(np.clip(probabilities.astype(np.float64), 1e-12, None)).astype(np.float32)


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

    from plugins.nets import evaluate as evaluate_arrays
    from plugins.nets import train_epoch

    s = data["settings"]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xt, yt = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    soft = torch.tensor(data["teacher_train"])
    x_val, y_val = data["x_val"], data["y_val"]
    model: Model = data["student_model"]()
    module = model.build(s["student_hp"], xt.shape[1], data["n_classes"], data["mean"], data["std"])
    optimizer = torch.optim.Adam(module.parameters(), lr=float(s["lr"]))
    batch_size = int(s["batch_size"])

    best, best_epoch, best_state = None, 0, None
    for epoch in range(1, int(s["epochs"]) + 1):
        train_epoch(module, optimizer, len(xt), batch_size, generator,
                    lambda idx: distillation_loss(module(xt[idx]), soft[idx], yt[idx], temperature, alpha))
        acc, loss, _ = evaluate_arrays(module, x_val, y_val)
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

    from plugins.tune_support import trial_index

    torch.set_num_threads(1)  # trials run side by side on few cores
    seed = int(data["settings"]["seed"]) + trial_index()

    def report(metrics: dict, state) -> None:
        if state is None:
            tune.report(metrics)
            return
        # only improvements are checkpointed, so the trial's latest checkpoint is its best
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(state, Path(tmp) / CHECKPOINT_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

    train_student(data, float(config["temperature"]), float(config["alpha"]), seed, report)


def _onnx_parameters(onnx_bytes: bytes) -> int:
    """Number of stored weights of an ONNX model (its initializers' elements)."""
    import math

    import onnx

    graph = onnx.load_from_string(onnx_bytes).graph
    return int(sum(math.prod(init.dims) for init in graph.initializer))


def _accuracy(probabilities_or_logits, y) -> float:
    import numpy as np

    return float((np.asarray(probabilities_or_logits).argmax(axis=1) == np.asarray(y)).mean())


class DistillCompressor(Compressor):
    name = "distill"
    Config = DistillConfig
    level: ClassVar[str] = "model"
    summary = ("knowledge distillation (temperature, alpha) of the trained model or a registered version into a "
               "smaller student model, as a Ray Tune job")
    references = {"student_model": "model"}
    HEADLINE = ("teacher_parameters", "student_parameters", "parameter_ratio", "teacher_test_accuracy",
                "test_accuracy", "accuracy_retention", "temperature", "alpha")

    def __init__(self, config: Any = None, refs: Optional[Mapping[str, type]] = None):
        super().__init__(config, refs)  # validated; student_model resolved by name outside a plan
        self.student_model = self.refs.get("student_model") or student_model_component(
            self.config.student_model, "compress.student_model")

    @classmethod
    def starts_from_registry(cls, config: Any) -> bool:
        return config.teacher is not None

    @classmethod
    def registry_refs(cls, config: Any) -> Mapping[str, str]:
        return {"teacher": str(config.teacher)} if config.teacher else {}

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        from framework.tuning import plain_container

        c = config

        def number(field: str, kind=float):
            value = getattr(c, field)
            try:
                if isinstance(value, bool):
                    raise TypeError
                return kind(value)
            except (TypeError, ValueError):
                raise RecipeError(f"{key}.{field}: must be a number, got {value!r}") from None

        for name in ("epochs", "batch_size", "num_samples"):
            if number(name, int) < 1:
                raise RecipeError(f"{key}.{name}: must be >= 1, got {getattr(c, name)}")
        if not number("temperature") > 0:
            raise RecipeError(f"{key}.temperature: must be > 0, got {c.temperature}")
        if not 0.0 < number("alpha") <= 1.0:
            raise RecipeError(f"{key}.alpha: must be in (0, 1] (the weight of the soft-target term), got {c.alpha}")
        if not number("lr") > 0:
            raise RecipeError(f"{key}.lr: must be > 0, got {c.lr}")
        if not number("cpus_per_trial") > 0:
            raise RecipeError(f"{key}.cpus_per_trial: must be > 0, got {c.cpus_per_trial}")
        model = (refs or {}).get("student_model") or student_model_component(c.student_model, f"{key}.student_model")
        student = plain_container(c.student or {})
        if not isinstance(student, dict):
            raise RecipeError(f"{key}.student: expected a mapping of hyperparameter -> value, got {student!r}")
        for name, value in student.items():
            if name not in model.hyperparameters or name == "lr":
                known = [k for k in model.hyperparameters if k != "lr"]
                raise RecipeError(f"{key}.student.{name}: not a hyperparameter of model '{model.name}'"
                                  + (" (the student's learning rate is {key}.lr)" if name == "lr" else "")
                                  + f"; known: {', '.join(known)}")
            if isinstance(value, dict):
                raise RecipeError(f"{key}.student.{name}: the student's hyperparameters are constants, got {value}")
        missing = [k for k, v in model.hyperparameters.items() if v is None and k not in student and k != "lr"]
        if missing:
            raise RecipeError(f"{key}.student: missing {', '.join(missing)} for model '{model.name}'")
        if c.teacher is not None and not is_registry_ref(str(c.teacher)):
            raise RecipeError(f"{key}.teacher: '{c.teacher}' is not a registered version; write NAME@ALIAS "
                              "(e.g. digits_cnn@prod) or NAME:ID (6+ hex characters), or null for this run's trained model")

    def _teacher(self, model: TrainedModel, splits: DataSplits, ctx, where: str):
        """(logits on the train split, {split: accuracy}, parameters or None, description)."""
        import torch

        from plugins.nets import count_parameters, evaluate_splits

        x_train = splits.arrays("train")[0]
        if self.config.teacher is None:
            if not isinstance(model.module, torch.nn.Module):
                raise StageError(f"{where}: needs a torch nn.Module as teacher, got {type(model.module).__name__}")
            teacher = copy.deepcopy(model.module).eval()  # the input model stays as it was
            scores = evaluate_splits(teacher, splits, list(model.classes))
            return teacher_logits(teacher, x_train), scores, count_parameters(teacher), "the trained model"
        ref = str(self.config.teacher)
        registered = ctx.registered_model(ref)
        if registered.inputs is not None or splits.features is not None:  # not yet: the teacher runs on floats
            raise StageError(f"{where}: teacher '{ref}' or this run's data has typed features (categories, missing "
                             "values); distilling from a registered teacher takes models of numbers that are never "
                             "missing only for now (distil from the run's own trained model instead)")
        features = [f.name for f in registered.schema.features]
        if features != list(splits.dataset.features):
            raise StageError(f"{where}: teacher '{ref}' takes features {features[:4]}... ({len(features)}), "
                             f"this run's data has {list(splits.dataset.features)[:4]}... ({len(splits.dataset.features)})")
        data_classes = list(splits.dataset.classes or model.classes)
        if [str(k) for k in registered.classes] != [str(k) for k in data_classes]:
            raise StageError(f"{where}: teacher '{ref}' predicts classes {registered.classes}, this run's data has {data_classes}")

        def outputs(x):
            return onnx_teacher_logits(registered.onnx_bytes, registered.input_name, registered.output_name, x)

        scores = {}
        for part in ("val", "test"):
            x, y = splits.arrays(part)
            scores[f"{part}_accuracy"] = _accuracy(outputs(x), y)
        return outputs(x_train), scores, _onnx_parameters(registered.onnx_bytes), f"registered {registered.ref}"

    def compress(self, model: TrainedModel, splits: DataSplits, ctx) -> TrainedModel:
        import ray
        from ray import tune

        from framework.engine import start_ray
        from plugins import tune_support
        from plugins.nets import count_parameters, evaluate_splits, training_stats

        c = self.config
        where = f"compress ({self.name})"
        for part in ("train", "val", "test"):
            if len(getattr(splits, part)) == 0:
                raise StageError(f"{where}: the {part} split is empty")
        classes = list(model.classes)
        logits, before, n_teacher, teacher_name = self._teacher(model, splits, ctx, where)

        start_ray()  # idempotent: the core normally started Ray already
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        if float(c.cpus_per_trial) > cluster_cpus:
            raise StageError(f"{where}: cpus_per_trial={c.cpus_per_trial} but the Ray cluster has {cluster_cpus:g} CPUs")

        x_train, y_train = splits.arrays("train")
        x_val, y_val = splits.arrays("val")
        mean, std = training_stats(x_train)
        if logits.ndim != 2 or logits.shape[1] != len(classes):
            raise StageError(f"{where}: the teacher gives outputs of shape {logits.shape}, expected [n, {len(classes)}]")
        hp = student_hp(self.student_model, c.student, c.lr)
        student_model = self.student_model()
        problem = student_model.check_data(x_train.shape[1], len(classes), hp)
        if problem:
            raise StageError(f"{where}: student model '{student_model.name}': {problem}")
        data = {
            "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "teacher_train": logits, "mean": mean, "std": std, "n_classes": len(classes),
            "student_model": self.student_model,
            "settings": {"seed": int(ctx.seed), "epochs": int(c.epochs), "lr": float(c.lr),
                         "batch_size": int(c.batch_size), "student_hp": hp},
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
        with tune_support.quiet_tune():
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
                   "error": tune_support.trial_error_line(result.error) if result.error else ""}
            trials.append(row)
            if not result.error and result.checkpoint is not None and row["best_val_accuracy"] is not None:
                candidates.append(((row["best_val_accuracy"], -row["best_val_loss"]), row, result))
        trials.sort(key=lambda r: r["trial_id"])
        if not candidates:
            first = next((r for r in trials if r["error"]), None)
            raise StageError(f"{where}: no distillation trial finished"
                             + (f"; first error (trial {first['trial_id']}): {first['error']}" if first else ""))
        _, best_row, best_result = max(candidates, key=lambda t: t[0])

        import torch

        with best_result.checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, weights_only=True)
        student = student_model.build(hp, x_train.shape[1], len(classes))
        student.load_state_dict(state)  # also restores the standardization buffers
        student.eval()

        after = evaluate_splits(student, splits, classes)
        n_student = count_parameters(student)
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
        ctx.metric(f"{self.name}_teacher", teacher_name)
        ctx.logger.info(
            "%s: student %s %d parameters (%.1f%% of the teacher's %d, %s); test accuracy %.4f (teacher %.4f, "
            "retention %.3f); T=%g alpha=%.3f; %d trial(s) in %.1fs",
            self.name, student_model.name, n_student, 100 * n_student / n_teacher, n_teacher, teacher_name,
            after["test_accuracy"], before["test_accuracy"], metrics["accuracy_retention"], best_row["temperature"],
            best_row["alpha"], len(trials), seconds,
        )
        return TrainedModel(
            module=student,
            schema=model.schema,
            classes=classes,
            metrics=metrics,
            # the student's own architecture: its model's build(hyperparameters) + the state_dict reload it
            hyperparameters={"model": student_model.name, **hp,
                             self.name: {"type": self.name, **asdict(c), "temperature": best_row["temperature"],
                                         "alpha": best_row["alpha"]}},
            details={"teacher": teacher_name, "teacher_metrics": dict(model.metrics),
                     "teacher_hyperparameters": dict(model.hyperparameters),
                     "teacher_evaluation": before, "trials": trials, "tune_dir": str(experiment),
                     "best_trial_id": best_row["trial_id"], "checkpoint": str(best_result.checkpoint.path),
                     "search_seconds": round(seconds, 3)},
        )


@hookimpl
def register_compressors():
    return [DistillCompressor]
