"""Trainer ``tune``: a model component (``train.model``: mlp, cnn, ranker, or a third party's)
whose hyperparameters are searched with Ray Tune.

Every trial is a real Ray Tune trial (one process per trial, ``cpus_per_trial`` each). A trial
trains with early stopping on the validation split and checkpoints its best ``state_dict``; the
driver then rebuilds the best trial's module from that checkpoint and evaluates it on val and test.
With ``privacy.enabled`` a trial trains with DP-SGD (Opacus) and reports the ε it spent.

Modules standardize raw features themselves (training mean/std held as buffers), so whatever is
exported from them takes the raw feature values a client sends.

Importing this module is cheap: torch and Ray are imported inside functions, the Ray Tune helpers
(``plugins.tune_support``) in the fit and the trials, and the Opacus code (``plugins.privacy_opacus``)
only by trials that train with ``privacy.enabled``; planning needs only ``plugins.privacy_config``.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

from framework import DataSplits, Model, TrainedModel, Trainer, hookimpl
from framework.errors import RecipeError, StageError
from framework.tuning import validate_search_space

from plugins.privacy_config import PrivacyConfig, check_privacy_config, privacy_config_from

#: built-in metric -> Tune mode; a model's ``extra_metrics`` add ``val_NAME`` (maximized)
METRICS = {"val_accuracy": "max", "val_loss": "min"}
#: what a regression search can optimize (val_loss is the mean squared error, in target units²)
REGRESSION_METRICS = {"val_mse": "min", "val_mae": "min", "val_r2": "max", "val_loss": "min"}
CHECKPOINT_FILE = "model.pt"
#: trial schedulers (``train.scheduler``): fifo runs every trial to its own end; asha / median stop
#: weak trials early on the per-epoch reports (``training_iteration`` = epochs so far)
SCHEDULERS = ("fifo", "asha", "median")
#: search algorithms (``train.search_alg``); optuna only when the optuna package is importable
SEARCH_ALGS = ("random", "optuna")
#: the stage's config fingerprint next to the Tune experiment; a resume needs it to match
FINGERPRINT_FILE = "search_fingerprint.json"
#: the model a trainer built outside a plan falls back to
DEFAULT_MODEL = "mlp"


def optuna_available() -> bool:
    """Whether ``import optuna`` can work (found without importing it: the planner stays cheap)."""
    return importlib.util.find_spec("optuna") is not None


def resolve_model(name: str, where: str = "train.model") -> type[Model]:
    """The installed model component ``name`` (RecipeError naming the known ones otherwise)."""
    from framework.plugins import default_components

    return default_components().get("model", str(name), where=where).cls


def metric_modes(model: type[Model] | Model, task: str = "classification") -> dict[str, str]:
    """Metrics a search over ``model`` can optimize for ``task`` -> Tune mode."""
    if task == "regression":
        return dict(REGRESSION_METRICS)
    return {**METRICS, **{f"val_{name}": "max" for name in model.extra_metric_names}}


def resolve_metric(metric: str | None, task: str) -> str:
    """``train.metric``, or the default of the task: val_mse for a regression, else val_accuracy."""
    if metric is not None:
        return metric
    return "val_mse" if task == "regression" else "val_accuracy"


def regression_module(module, target_mean: float = 0.0, target_std: float = 1.0):
    """``module``'s one output, learnt in standardized target units, in the target's units."""
    from plugins.nets import RegressionOutput

    return RegressionOutput(module, target_mean, target_std)


def with_defaults(model: type[Model] | Model, hp: Mapping[str, Any]) -> dict:
    """``hp`` with the optional hyperparameters of ``model`` it leaves out set to their defaults."""
    return {**model.defaults(), **hp}


def validation_metrics(model: Model, module, x, y, task: str = "classification") -> dict[str, float]:
    """val_accuracy, val_loss and the model's own extra metrics of ``module`` on numpy rows; for a
    regression val_loss (= val_mse), val_mse, val_mae and val_r2."""
    import torch

    from plugins.nets import evaluate, evaluate_regression

    if task == "regression":
        figures = evaluate_regression(module, x, y)
        return {"val_loss": figures["mse"], **{f"val_{k}": v for k, v in figures.items()}}
    acc, loss, _ = evaluate(module, x, y)
    metrics = {"val_accuracy": acc, "val_loss": loss}
    extras = model.extra_metric_names
    if extras:
        with torch.no_grad():
            computed = model.extra_metrics(module(torch.tensor(x)), torch.tensor(y))
        metrics.update({f"val_{name}": float(computed[name]) for name in extras})
    return metrics


def fit_in_process(hp: dict, splits: DataSplits, epochs: int, seed: int = 0, lr: float | None = None,
                   model: Model | None = None):
    """Train ``model.build(hp)`` (default: the MLP) in this process, full-batch Adam, keeping the
    best validation epoch: for benchmarks and tests that need a real model without a Tune search."""
    import copy

    import torch

    from plugins.nets import evaluate, training_stats

    model = model or resolve_model(DEFAULT_MODEL)()
    torch.manual_seed(seed)
    x, y = splits.arrays("train")
    xv, yv = splits.arrays("val")
    task = splits.dataset.task
    if task == "regression":
        module = regression_module(model.build(with_defaults(model, hp), x.shape[1], 1, *training_stats(x)),
                                   float(y.mean()), float(y.std() or 1.0))
    else:
        module = model.build(with_defaults(model, hp), x.shape[1], len(splits.dataset.classes or [0, 1]), *training_stats(x))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr if lr is not None else float(hp.get("lr", 1e-3)))
    xt, yt = torch.tensor(x), torch.tensor(y)
    best, best_state = -1.0, None
    for _ in range(epochs):
        module.train()
        optimizer.zero_grad()
        model.loss(module(xt), yt, hp).backward()
        optimizer.step()
        acc = -validation_metrics(model, module, xv, yv, task)["val_mse"] if task == "regression" else evaluate(module, xv, yv)[0]
        if best_state is None or acc > best:
            best, best_state = acc, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    return module.eval()


def _as_dict(config: Any) -> dict:
    """A (dataclass or OmegaConf) config section as a plain dict."""
    import dataclasses

    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config) if OmegaConf.is_config(config) else dict(config)


def _plain(value: Any) -> Any:
    """numpy scalars from a sampler as Python values (hyperparameters end up in JSON)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def tiebroken_accuracy(accuracy: float, loss: float, n_val: int) -> float:
    """Validation accuracy minus less than half a row's worth of a loss term: orders trials by
    accuracy, then loss, in ONE number, which is what Tune's schedulers and searchers compare.
    On a small validation split many trials tie on accuracy at every epoch; ASHA's rung cut-off
    then equals the best value and lets nearly every trial through."""
    return float(accuracy) - (0.5 / max(1, int(n_val))) * float(loss) / (1.0 + float(loss))


def _tune_metric(metric: str) -> str:
    """The per-epoch value Tune schedules and searches on for the recipe's ``metric``."""
    return "val_accuracy_tiebroken" if metric == "val_accuracy" else metric


def _score(metric: str, metrics: Mapping[str, float]) -> tuple:
    """Larger is better; val accuracy / val loss break ties (accuracy ties are common on small sets)."""
    if metric in REGRESSION_METRICS and "val_accuracy" not in metrics:  # a regression's
        sign = 1.0 if REGRESSION_METRICS[metric] == "max" else -1.0
        return (sign * metrics[metric], -metrics["val_loss"])
    if metric == "val_loss":
        return (-metrics["val_loss"], metrics["val_accuracy"])
    if metric == "val_accuracy":
        return (metrics["val_accuracy"], -metrics["val_loss"])
    return (metrics[metric], -metrics["val_loss"])


# ---------------------------------------------------------------------------------------------
# One Tune trial (runs in a Ray worker process)
# ---------------------------------------------------------------------------------------------
def train_trial(config: dict, data: dict) -> None:
    """Train one configuration; report val metrics per epoch; checkpoint each new best state."""
    import tempfile

    import torch
    from ray import tune

    from plugins.nets import train_epoch
    from plugins.tune_support import trial_index

    settings = data["settings"]
    model: Model = data["model"]()
    torch.set_num_threads(1)  # trials run side by side on few cores
    if settings["deterministic"]:
        torch.use_deterministic_algorithms(True)
    seed = int(settings["seed"]) + trial_index()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    unknown = sorted(set(config) - set(model.hyperparameters))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown} for model '{model.name}'; known: {sorted(model.hyperparameters)}")
    hp = with_defaults(model, config)
    n_features, n_classes = data["x_train"].shape[1], data["n_classes"]
    problem = model.check_data(n_features, n_classes, hp)
    if problem:
        raise ValueError(f"model '{model.name}': {problem}")

    x_train, y_train = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    x_val, y_val = data["x_val"], data["y_val"]
    task = settings.get("task", "classification")
    module = model.build(hp, n_features, n_classes, data["mean"], data["std"])
    if task == "regression":
        module = regression_module(module, *data["target_stats"])
    optimizer = torch.optim.Adam(module.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    metric, batch_size, patience = settings["metric"], int(settings["batch_size"]), int(settings["patience"])
    max_epochs = int(settings["max_epochs"])

    private = None
    if settings["privacy"]["enabled"]:
        from plugins.privacy_opacus import make_private

        private = make_private(module, optimizer, data["x_train"], data["y_train"], batch_size=batch_size,
                               epochs=max_epochs, config=settings["privacy"], seed=seed)

    # settings["checkpoint_epochs"]: None -> checkpoint every new best state (Tune may stop the
    # trial at any report: median stopping, a time budget); a list -> only after those epochs (where
    # the scheduler may stop it) and after the trial's last one, each time only if the best changed.
    # Either way the latest checkpoint is the best state so far, and every ended trial holds one.
    checkpoint_epochs = settings.get("checkpoint_epochs")
    checkpoint_epochs = None if checkpoint_epochs is None else set(checkpoint_epochs)
    best: tuple | None = None
    best_epoch, best_metrics, since_best = 0, {}, 0
    best_state, saved_epoch = None, 0  # best_epoch of the latest checkpoint (0: none yet)
    for epoch in range(1, max_epochs + 1):
        if private is not None:
            # Poisson-sampled batches, clipped per-example gradients, calibrated noise; an empty
            # batch still takes its noise-only step (the accountant counts every step)
            private.train_epoch(lambda logits, target: model.loss(logits, target, hp))
        else:
            train_epoch(module, optimizer, len(x_train), batch_size, generator,
                        lambda idx: model.loss(module(x_train[idx]), y_train[idx], hp))
        metrics = validation_metrics(model, module, x_val, y_val, task)
        if not math.isfinite(metrics["val_loss"]):
            raise FloatingPointError(f"validation loss is {metrics['val_loss']} at epoch {epoch} (lr={hp['lr']})")
        score = _score(metric, metrics)
        if best is None or score > best:
            best, best_epoch, best_metrics, since_best = score, epoch, dict(metrics), 0
            if checkpoint_epochs is not None:  # held in memory until a checkpoint is due
                best_state = private.state_dict() if private is not None else \
                    {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            since_best += 1
        last = epoch == max_epochs or since_best >= patience
        report = {"epoch": epoch, **metrics, "best_epoch": best_epoch, **{f"best_{k}": v for k, v in best_metrics.items()}}
        if metric == "val_accuracy":
            report[_tune_metric(metric)] = tiebroken_accuracy(metrics["val_accuracy"], metrics["val_loss"], len(y_val))
        if private is not None:  # what the driver needs to tell the ε spent (every step counts)
            report.update(dp_steps=private.steps, dp_sample_rate=private.sample_rate, delta=private.delta,
                          noise_multiplier=private.noise_multiplier)
        if checkpoint_epochs is None:
            due = best_epoch == epoch
        else:
            due = best_epoch != saved_epoch and (last or epoch in checkpoint_epochs)
        if due:
            if best_epoch == epoch:
                state = private.state_dict() if private is not None else module.state_dict()
            else:
                state = best_state
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(state, Path(tmp) / CHECKPOINT_FILE)
                tune.report(report, checkpoint=tune.Checkpoint.from_directory(tmp))
            saved_epoch = best_epoch
        else:
            tune.report(report)
        if last:
            break


# ---------------------------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------------------------
class TuneTrainer(Trainer):
    name = "tune"
    summary = "a model component (train.model: mlp, cnn, ranker...) tuned with Ray Tune; best trial on validation; optional DP-SGD"
    references = {"model": "model"}

    @dataclass
    class Config:
        #: the model component to train (``python -m framework plugins`` lists them)
        model: str = DEFAULT_MODEL
        max_epochs: int = 30
        num_samples: int = 4
        #: val_accuracy (maximized), val_loss (minimized), or val_NAME of the model's extra metrics
        #: (maximized; the ranker's val_auc); a regression: val_mse, val_mae (minimized), val_r2
        #: (maximized), val_loss (the mse); null: val_accuracy, or val_mse for a regression
        metric: Optional[str] = None
        #: hyperparameter -> constant or {choice|grid|uniform|loguniform|randint: ARGS}; the model's
        #: hyperparameters (``python -m framework plugins`` shows them); null: the model's default space
        search_space: Optional[Dict[str, Any]] = None
        batch_size: int = 32
        cpus_per_trial: float = 1.0
        max_concurrent_trials: int = 2
        time_budget_s: Optional[float] = None
        early_stopping_patience: int = 8
        #: seed the search's sampling from the run seed and use deterministic torch kernels
        deterministic: bool = True
        #: fifo (every trial runs to its own end) | asha | median: stop weak trials early, judged
        #: on the per-epoch ``metric`` with ``training_iteration`` (epochs) as the time axis
        scheduler: str = "fifo"
        #: asha / median: epochs every trial gets before it can be stopped
        grace_period: int = 3
        #: asha: keep 1/reduction_factor of the trials at each rung
        reduction_factor: int = 3
        #: random (seeded sampling of the search space) | optuna (TPE; needs the optuna package)
        search_alg: str = "random"
        #: rerun of this stage with the same stage folder and the same config: restore the Tune
        #: experiment there (finished trials are not rerun) instead of starting over
        resume: bool = True
        #: differentially private training (DP-SGD with Opacus); every trial reports its ε
        privacy: PrivacyConfig = field(default_factory=PrivacyConfig)

    def __init__(self, config: Any = None, refs: Optional[Mapping[str, type]] = None):
        super().__init__(config, refs)  # validated; train.model resolved by name outside a plan
        self.model_cls: type[Model] = self.refs.get("model") or resolve_model(self.config.model)
        self.model = self.model_cls()

    def search_space(self) -> dict:
        """The recipe's search space, or the model's default one."""
        space = self.config.search_space
        return dict(self.model_cls.default_search_space) if space is None else space

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        """Recipe checks the planner runs before anything heavy starts (no torch / Ray imports)."""
        c = config
        where = key
        model = (refs or {}).get("model") or resolve_model(c.model, f"{where}.model")
        modes = {**metric_modes(model), **(REGRESSION_METRICS if "regression" in model.tasks else {})}
        if c.metric is not None and c.metric not in modes:
            raise RecipeError(f"{where}.metric: '{c.metric}' is not supported for model '{model.name}'; "
                              f"use one of {', '.join(modes)}")
        for name in ("max_epochs", "num_samples", "batch_size", "max_concurrent_trials", "early_stopping_patience"):
            if int(getattr(c, name)) < 1:
                raise RecipeError(f"{where}.{name}: must be >= 1, got {getattr(c, name)}")
        if float(c.cpus_per_trial) <= 0:
            raise RecipeError(f"{where}.cpus_per_trial: must be > 0, got {c.cpus_per_trial}")
        if c.time_budget_s is not None and float(c.time_budget_s) <= 0:
            raise RecipeError(f"{where}.time_budget_s: must be > 0 or null, got {c.time_budget_s}")
        raw_space = dict(model.default_search_space) if c.search_space is None else c.search_space
        space = validate_search_space(raw_space, f"{where}.search_space")
        unknown = sorted(set(space) - set(model.hyperparameters))
        if unknown:
            close = __import__("difflib").get_close_matches(unknown[0], list(model.hyperparameters), n=1)
            raise RecipeError(
                f"{where}.search_space.{unknown[0]}: unknown hyperparameter for model '{model.name}'"
                + (f" (did you mean '{close[0]}'?)" if close else "")
                + f"; known: {', '.join(model.hyperparameters)}"
            )
        missing = [k for k, v in model.hyperparameters.items() if v is None and k not in space]
        if missing:
            raise RecipeError(
                f"{where}.search_space: missing {', '.join(missing)} for model '{model.name}' (a constant or a sampler each)"
            )
        privacy = privacy_config_from(c.privacy, f"{where}.privacy")
        check_privacy_config(privacy, f"{where}.privacy")
        if privacy.enabled and not model.per_example_loss:
            raise RecipeError(
                f"{where}.privacy.enabled: model '{model.name}' trains with a loss that couples rows "
                "(pairwise), so per-example differential privacy (DP-SGD) does not apply; disable privacy "
                "or pick a model with a per-example loss"
            )
        scheduler = getattr(c, "scheduler", "fifo")
        if scheduler not in SCHEDULERS:
            raise RecipeError(f"{where}.scheduler: '{scheduler}' is not supported; use one of {', '.join(SCHEDULERS)}")
        if scheduler != "fifo":
            grace = int(c.grace_period)
            if grace < 1:
                raise RecipeError(f"{where}.grace_period: must be >= 1, got {c.grace_period}")
            if grace > int(c.max_epochs):
                raise RecipeError(
                    f"{where}.grace_period: must be <= max_epochs ({c.max_epochs}), got {c.grace_period}; "
                    f"{scheduler} could never stop a trial"
                )
        if scheduler == "asha" and int(c.reduction_factor) < 2:
            raise RecipeError(f"{where}.reduction_factor: must be >= 2 for asha, got {c.reduction_factor}")
        search_alg = getattr(c, "search_alg", "random")
        if search_alg not in SEARCH_ALGS:
            raise RecipeError(f"{where}.search_alg: '{search_alg}' is not supported; use one of {', '.join(SEARCH_ALGS)}")
        if search_alg == "optuna":
            if not optuna_available():
                raise RecipeError(
                    f"{where}.search_alg: 'optuna' needs the optuna package, which is not installed "
                    f"(pip install optuna), or use search_alg: random"
                )
            grids = sorted(p for p, v in space.items() if isinstance(v, dict) and "grid" in v)
            if grids:
                raise RecipeError(
                    f"{where}.search_space.{grids[0]}: 'grid' is not supported with search_alg: optuna; "
                    "use 'choice'"
                )

    @classmethod
    def check_task(cls, config: Any, task: str, key: str) -> None:
        """The search's metric measures this task: a regression is chosen on val_mse, val_mae,
        val_r2 or val_loss; classes on val_accuracy, val_loss or the model's own metrics."""
        metric = config.metric
        if metric is None or metric == "val_loss":
            return
        if task == "regression" and metric not in REGRESSION_METRICS:
            raise RecipeError(f"{key}.metric: '{metric}' measures classes, but the data's task is regression; "
                              f"use {', '.join(REGRESSION_METRICS)} (or leave it unset: val_mse)")
        if task != "regression" and metric in REGRESSION_METRICS:
            raise RecipeError(f"{key}.metric: '{metric}' measures a regression, but the data's task is {task}; "
                              "use val_accuracy or val_loss")

    # -----------------------------------------------------------------------------------------
    def fit(self, splits: DataSplits, ctx) -> TrainedModel:
        from ray import tune

        from framework.engine import start_ray
        from framework.tuning import search_space_from_config
        from plugins import tune_support

        c = self.config
        task = self._task = splits.dataset.task
        if task not in self.model_cls.tasks:
            raise StageError(f"train (tune): model '{self.model.name}' can do {' and '.join(self.model_cls.tasks)}, "
                             f"but dataset '{splits.dataset.name}' is a {task}")
        metric = resolve_metric(c.metric, task)
        self.check_task(c, task, "train")
        mode = metric_modes(self.model_cls, task)[metric]
        space = self.search_space()
        x_train, y_train = splits.arrays("train")
        x_val, y_val = splits.arrays("val")
        x_test, y_test = splits.arrays("test")
        classes = list(splits.dataset.classes or [])
        n_outputs = 1 if task == "regression" else len(classes)
        if task != "regression" and len(classes) < 2:
            raise StageError(f"train (tune): dataset '{splits.dataset.name}' needs >= 2 classes, got {classes}")
        empty = [name for name, x in (("train", x_train), ("val", x_val), ("test", x_test)) if len(x) == 0]
        if empty:
            raise StageError(f"train (tune): the {', '.join(empty)} split(s) are empty")
        constants = {k: v for k, v in validate_search_space(space).items() if not isinstance(v, dict)}
        problem = self.model.check_data(x_train.shape[1], n_outputs, with_defaults(self.model, constants))
        if problem:  # fail before Ray or any trial starts (trials check their sampled values again)
            raise StageError(f"train (tune): model '{self.model.name}' cannot learn dataset "
                             f"'{splits.dataset.name}': {problem}")
        import ray

        start_ray()  # idempotent: the core normally started Ray already
        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        if float(c.cpus_per_trial) > cluster_cpus:
            # Tune would wait forever for a trial that never fits
            raise StageError(
                f"train (tune): cpus_per_trial={c.cpus_per_trial} but the Ray cluster has {cluster_cpus:g} CPUs"
            )
        from plugins.nets import training_stats

        mean, std = training_stats(x_train)
        data = {
            "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "mean": mean, "std": std, "n_classes": n_outputs,
            # a regression learns the standardized target; its module answers in target units
            "target_stats": (float(y_train.mean()), float(y_train.std() or 1.0)) if task == "regression" else None,
            "model": self.model_cls,  # pickled by reference: trials import its plugin
            "settings": {
                "seed": int(ctx.seed), "metric": metric, "max_epochs": int(c.max_epochs), "task": task,
                "batch_size": int(c.batch_size), "patience": int(c.early_stopping_patience),
                "deterministic": bool(c.deterministic), "model": self.model_cls.name,
                "checkpoint_epochs": self._checkpoint_epochs(),
                "privacy": _as_dict(c.privacy),
            },
        }
        param_space = search_space_from_config(space, "train.search_space")
        storage = (Path(ctx.out_dir) / "tune").resolve()
        experiment = storage / "search"
        fingerprint = self._fingerprint(data)
        restore = self._can_resume(experiment, fingerprint, ctx)
        if experiment.exists() and not restore:
            # a rerun of this stage replaces its outputs; Tune would otherwise mix old trial folders in
            shutil.rmtree(experiment)
        storage.mkdir(parents=True, exist_ok=True)
        (storage / FINGERPRINT_FILE).write_text(json.dumps({"fingerprint": fingerprint}))
        # Tune runs num_samples x every grid combination
        grids = [len(v["grid"]) for v in validate_search_space(space).values() if isinstance(v, dict) and "grid" in v]
        progress = ctx.progress(total=int(c.num_samples) * math.prod(grids), description="tune trials")
        trainable = tune.with_resources(tune.with_parameters(train_trial, data=data), {"cpu": float(c.cpus_per_trial)})

        resumed_done: list[str] = []
        # a restored Tuner brings its own (unpickled) callback: it finds this progress by experiment
        with tune_support.reporting_progress(str(experiment), progress) as progress_callback:
            if restore:
                resumed_done = _finished_trials(experiment)
                if resumed_done:
                    progress.advance(len(resumed_done), note=f"{len(resumed_done)} finished trial(s) restored")
                ctx.logger.info("tune: resuming the Tune experiment in %s (%d finished trial(s) kept)",
                                experiment, len(resumed_done))
                tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
            else:
                tuner = tune.Tuner(
                    trainable,
                    param_space=param_space,
                    tune_config=tune.TuneConfig(
                        num_samples=int(c.num_samples), metric=_tune_metric(metric), mode=mode,
                        search_alg=self._search_alg(ctx), scheduler=self._scheduler(),
                        time_budget_s=c.time_budget_s,
                        reuse_actors=True,  # later trials skip a fresh worker's torch import (seconds here)
                    ),
                    run_config=tune.RunConfig(
                        name="search",
                        storage_path=str(storage),
                        verbose=0,
                        log_to_file=True,  # trial stdout/stderr go to files in the trial folder, not the console
                        callbacks=[progress_callback],
                        # checkpoints only where a scheduler decides: a few per trial, keep them all.
                        # num_to_keep=1 makes Tune snapshot the whole experiment after every checkpoint
                        # (O(trials) each): at 96 trials that was most of the driver's CPU time
                        checkpoint_config=tune.CheckpointConfig(
                            num_to_keep=1 if self._checkpoint_epochs() is None else None),
                        failure_config=tune.FailureConfig(max_failures=0),
                    ),
                )
            started = time.perf_counter()
            with tune_support.quiet_tune():
                grid = tuner.fit()
        search_seconds = time.perf_counter() - started

        rows, candidates = self._trial_table(grid, metric, privacy_config_from(c.privacy).accountant)
        self._write_csv(rows, Path(ctx.out_dir) / "trials.csv")
        for r in rows:  # Tune's own tracebacks are silenced: one line each here, the rest on disk
            if r["status"] == "ERROR":
                ctx.logger.warning("tune: trial %s failed: %s (traceback: %s)",
                                   r["trial_id"], r["error"], Path(r["_path"]) / "error.txt")
        if not candidates:
            errors = [r for r in rows if r["status"] == "ERROR"]
            if errors:
                raise StageError(
                    f"train (tune): all {len(rows)} trial(s) failed. First error "
                    f"(trial {errors[0]['trial_id']}, config {errors[0]['config']}): {errors[0]['error']}"
                )
            raise StageError(
                f"train (tune): no trial reported a result (time_budget_s={c.time_budget_s}); "
                "raise the budget or lower num_samples/max_epochs"
            )
        failed = sum(r["status"] == "ERROR" for r in rows)
        if failed:
            ctx.logger.warning("tune: %d of %d trials failed; see %s", failed, len(rows), Path(ctx.out_dir) / "trials.csv")

        ranked = sorted(candidates, key=lambda pair: pair[0]["_score"], reverse=True)
        best_row = ranked[0][0]
        schema = splits.input_schema()
        arrays = {"val": (x_val, y_val), "test": (x_test, y_test)}
        models = [
            self._materialize(row, result, rank, schema, classes, arrays, len(rows))
            for rank, (row, result) in enumerate(ranked, start=1)
        ]
        best = models[0]
        ctx.metric("model", self.model.name)
        for key in ("val_accuracy", "test_accuracy", "test_f1_macro", "val_r2", "test_mse", "test_mae", "test_r2",
                    "test_loss", "trials",
                    *(f"test_{name}" for name in self.model.extra_metric_names), "epsilon", "delta"):
            if key in best.metrics:
                ctx.metric(key, best.metrics[key])
        # epochs actually trained over all trials: what an early-stopping scheduler saves shows here
        trial_epochs_total = int(sum(int(r["epochs"] or 0) for r in rows))
        ctx.metric("trial_epochs_total", trial_epochs_total)
        test_name = "accuracy" if "test_accuracy" in best.metrics else "r2"
        ctx.logger.info(
            "tune: %d trials in %.1fs; best %s (%s=%.4f at epoch %d); test %s %.4f",
            len(rows), search_seconds, best_row["trial_id"], metric, best_row[f"best_{metric}"],
            best_row["best_epoch"], test_name, best.metrics.get(f"test_{test_name}", float("nan")),
        )
        best.details.update({
            "trials": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "tune_dir": str(storage / "search"),
            "metric": metric,
            "mode": mode,
            "failed_trials": failed,
            "search_seconds": round(search_seconds, 3),
            "trial_epochs_total": trial_epochs_total,
            "scheduler": c.scheduler,
            "search_alg": c.search_alg,
            "resumed": bool(restore),
            "resumed_finished_trials": resumed_done,
        })
        best.runners_up = models[1:]
        return best

    def _checkpoint_epochs(self) -> list[int] | None:
        """Epochs after which the scheduler may stop a trial, so its best state must be saved by
        then (a trial's own last epoch always is). None: Tune may stop it at any report (median
        stopping; a time budget)."""
        c = self.config
        if c.time_budget_s is not None or c.scheduler == "median":
            return None
        if c.scheduler == "asha":
            # ASHA decides at its rungs grace * rf**k and at max_t = max_epochs
            epochs, t = [], int(c.grace_period)
            while t <= int(c.max_epochs):
                epochs.append(t)
                t *= int(c.reduction_factor)
            return sorted(set(epochs) | {int(c.max_epochs)})
        return []  # fifo: a trial ends only by itself (max_epochs or patience)

    def _scheduler(self):
        """The Tune trial scheduler for ``train.scheduler`` (metric / mode come from TuneConfig)."""
        c = self.config
        if c.scheduler == "asha":
            from ray.tune.schedulers import ASHAScheduler

            return ASHAScheduler(time_attr="training_iteration", max_t=int(c.max_epochs),
                                 grace_period=int(c.grace_period), reduction_factor=int(c.reduction_factor))
        if c.scheduler == "median":
            from ray.tune.schedulers import MedianStoppingRule

            return MedianStoppingRule(time_attr="training_iteration", grace_period=int(c.grace_period))
        return None  # FIFO

    def _search_alg(self, ctx):
        c = self.config
        seed = int(ctx.seed) if c.deterministic else None
        if c.search_alg == "optuna":
            try:
                import optuna  # noqa: F401
            except ImportError as exc:
                raise RecipeError(f"train.search_alg: 'optuna' needs the optuna package ({exc})") from None
            from ray.tune.search import ConcurrencyLimiter
            from ray.tune.search.optuna import OptunaSearch

            return ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=int(c.max_concurrent_trials))
        from ray.tune.search.basic_variant import BasicVariantGenerator

        # A seeded sampler makes the sampled configurations repeatable for a given run seed.
        # max_concurrent goes here: TuneConfig.max_concurrent_trials is ignored for this generator.
        return BasicVariantGenerator(max_concurrent=int(c.max_concurrent_trials), random_state=seed)

    def _fingerprint(self, data: dict) -> str:
        """Config + data + seed: a resume only continues an experiment of the very same search."""
        import dataclasses

        from omegaconf import OmegaConf

        c = self.config
        config = OmegaConf.to_container(c) if not dataclasses.is_dataclass(c) else dataclasses.asdict(c)
        config.pop("resume", None)
        h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
        h.update(json.dumps(data["settings"], sort_keys=True).encode())
        for key in ("x_train", "y_train", "x_val", "y_val"):
            h.update(data[key].tobytes())
        return h.hexdigest()

    def _can_resume(self, experiment: Path, fingerprint: str, ctx) -> bool:
        if not self.config.resume or not experiment.exists():
            return False
        from ray import tune

        if not tune.Tuner.can_restore(str(experiment)):
            ctx.logger.info("tune: %s holds no restorable Tune experiment; starting over", experiment)
            return False
        try:
            saved = json.loads((experiment.parent / FINGERPRINT_FILE).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            saved = None
        if saved != fingerprint:
            ctx.logger.info("tune: the Tune experiment in %s is from another config or data; starting over", experiment)
            return False
        return True

    def _materialize(self, row, result, rank, schema, classes, arrays, n_trials) -> TrainedModel:
        """One trial's best checkpoint as an evaluated TrainedModel."""
        import torch
        from sklearn.metrics import f1_score

        from plugins.nets import evaluate

        with result.checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, weights_only=True)
        x_val, y_val = arrays["val"]
        x_test, y_test = arrays["test"]
        hp = with_defaults(self.model, result.config)
        task = getattr(self, "_task", "classification")
        if task == "regression":
            module = regression_module(self.model.build(hp, x_val.shape[1], 1))
        else:
            module = self.model.build(hp, x_val.shape[1], len(classes))
        module.load_state_dict(state)  # also restores the standardization buffers
        module.eval()
        if task == "regression":
            return self._materialized_regression(module, row, rank, schema, hp, arrays, n_trials,
                                                str(result.checkpoint.path))
        val = validation_metrics(self.model, module, x_val, y_val)
        test_acc, test_loss, test_pred = evaluate(module, x_test, y_test)
        f1 = float(f1_score(y_test, test_pred, average="macro", labels=list(range(len(classes))), zero_division=0))
        metrics = {
            "val_accuracy": val["val_accuracy"],
            "test_accuracy": test_acc,
            "test_f1_macro": f1,
            "test_loss": test_loss,
            "trials": n_trials,
            "best_trial_epochs": int(row["epochs"]),
        }
        if self.model.extra_metric_names:
            test_extra = validation_metrics(self.model, module, x_test, y_test)
            for name in self.model.extra_metric_names:
                metrics[f"val_{name}"] = val[f"val_{name}"]
                metrics[f"test_{name}"] = test_extra[f"val_{name}"]
        if row.get("epsilon") is not None:
            # what the trial spent in all (it trained past its best epoch): an upper bound
            metrics["epsilon"] = float(row["epsilon"])
            metrics["delta"] = float(row["delta"])
        details = {
            "model": self.model.name,
            "trial_id": row["trial_id"],
            "trial_rank": rank,
            "best_trial_id": row["trial_id"],
            "best_epoch": int(row["best_epoch"]),
            "checkpoint": str(result.checkpoint.path),
        }
        if row.get("epsilon") is not None:
            details["privacy"] = {**_as_dict(self.config.privacy), "epsilon": float(row["epsilon"]),
                                  "delta": float(row["delta"]), "noise_multiplier": row.get("noise_multiplier")}
        return TrainedModel(
            module=module,
            schema=schema,
            classes=classes,
            task=getattr(self, "_task", "classification"),
            metrics=metrics,
            hyperparameters={"model": self.model.name, **{k: _plain(v) for k, v in hp.items()}},
            details=details,
        )

    def _materialized_regression(self, module, row, rank, schema, hp, arrays, n_trials, checkpoint) -> TrainedModel:
        val = validation_metrics(self.model, module, *arrays["val"], "regression")
        test = validation_metrics(self.model, module, *arrays["test"], "regression")
        metrics = {
            "val_mse": val["val_mse"], "val_mae": val["val_mae"], "val_r2": val["val_r2"],
            "test_mse": test["val_mse"], "test_mae": test["val_mae"], "test_r2": test["val_r2"],
            "test_loss": test["val_loss"], "trials": n_trials, "best_trial_epochs": int(row["epochs"]),
        }
        if row.get("epsilon") is not None:
            metrics["epsilon"] = float(row["epsilon"])
            metrics["delta"] = float(row["delta"])
        details = {"model": self.model.name, "trial_id": row["trial_id"], "trial_rank": rank,
                   "best_trial_id": row["trial_id"], "best_epoch": int(row["best_epoch"]),
                   "checkpoint": checkpoint}
        return TrainedModel(module=module, schema=schema, classes=[], metrics=metrics,
                            hyperparameters={"model": self.model.name, **{k: _plain(v) for k, v in hp.items()}},
                            details=details, task="regression")

    # -----------------------------------------------------------------------------------------
    @staticmethod
    def _trial_table(grid, metric: str, accountant: str = "prv"):
        """One row per trial (config, best metrics, epochs, error) and the usable (row, result) pairs."""
        from plugins.tune_support import trial_error_line

        rows, candidates = [], []
        for result in grid:
            m = result.metrics or {}
            trial_id = m.get("trial_id") or Path(str(result.path)).name
            error = result.error
            has_best = f"best_{metric}" in m and result.checkpoint is not None
            row = {
                "trial_id": trial_id,
                "status": "ERROR" if error else ("TERMINATED" if has_best else "NO_RESULT"),
                "config": {k: _plain(v) for k, v in (result.config or {}).items()},
                "best_val_accuracy": m.get("best_val_accuracy"),
                "best_val_loss": m.get("best_val_loss"),
                "best_epoch": m.get("best_epoch"),
                "epochs": m.get("epoch", 0),
                "seconds": m.get("time_total_s"),
                "error": trial_error_line(error) if error else "",
                "_path": str(result.path),
            }
            if metric not in METRICS:
                row[f"best_{metric}"] = m.get(f"best_{metric}")
            if m.get("dp_steps") is not None:
                # the ε the whole trial spent (it may have trained past its best epoch), told by the
                # accountant from its last report: once per trial, here, not every epoch there
                from plugins.privacy_opacus import epsilon_spent

                row.update(epsilon=epsilon_spent(accountant, m["noise_multiplier"], m["dp_sample_rate"],
                                                 int(m["dp_steps"]), m["delta"]),
                           delta=m["delta"], noise_multiplier=m["noise_multiplier"])
            rows.append(row)
            if not error and has_best:
                row["_score"] = _score(metric, {k[len("best_"):]: v for k, v in m.items() if k.startswith("best_val_")})
                candidates.append((row, result))
        rows.sort(key=lambda r: r["trial_id"])
        return rows, candidates

    @staticmethod
    def _write_csv(rows: list[dict], path: Path) -> None:
        params = sorted({k for r in rows for k in r["config"]})
        extra = [k for k in ("epsilon", "delta", "noise_multiplier") if any(k in r for r in rows)]
        extra += sorted({k for r in rows for k in r if k.startswith("best_val_")} - {"best_val_accuracy", "best_val_loss"})
        fields = ["trial_id", "status", *params, "best_val_accuracy", "best_val_loss", *extra, "best_epoch",
                  "epochs", "seconds", "error"]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for r in rows:
                writer.writerow({**{k: r.get(k) for k in fields if k not in params}, **r["config"]})


def _finished_trials(experiment: Path) -> list[str]:
    """Ids of the trials a restore keeps as they are (TERMINATED in the saved experiment)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(experiment))
    except Exception:  # pragma: no cover - a damaged state: Tune's restore reports it
        return []
    return sorted(t.trial_id for t in analysis.trials if t.status == "TERMINATED")


@hookimpl
def register_trainers():
    return [TuneTrainer]
