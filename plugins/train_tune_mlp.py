"""Trainer ``tune_mlp``: a tabular torch MLP whose hyperparameters are searched with Ray Tune.

Every trial is a real Ray Tune trial (one process per trial, ``cpus_per_trial`` each). A trial
trains with early stopping on the validation split and checkpoints its best ``state_dict``; the
driver then rebuilds the best trial's module from that checkpoint and evaluates it on val and test.

The module standardizes raw features itself (training mean/std held as buffers), so whatever is
exported from it takes the raw feature values a client sends.

Importing this module is cheap: torch and Ray are imported inside functions, and the torch module
classes are created on first use (see ``__getattr__`` below) so they still pickle by reference.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
import logging
import math
import shutil
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from framework import DataSplits, FeatureSpec, InputSchema, TrainedModel, Trainer, hookimpl
from framework.errors import RecipeError, StageError
from framework.tuning import validate_search_space

#: metric -> Tune mode
METRICS = {"val_accuracy": "max", "val_loss": "min"}
#: hyperparameters a trial understands -> default when the search space leaves them out (None: required)
HYPERPARAMETERS: dict[str, Any] = {"hidden": None, "lr": None, "dropout": None, "weight_decay": 0.0, "layers": 1}
CHECKPOINT_FILE = "model.pt"
#: trial schedulers (``train.scheduler``): fifo runs every trial to its own end; asha / median stop
#: weak trials early on the per-epoch reports (``training_iteration`` = epochs so far)
SCHEDULERS = ("fifo", "asha", "median")
#: search algorithms (``train.search_alg``); optuna only when the optuna package is importable
SEARCH_ALGS = ("random", "optuna")
#: the stage's config fingerprint next to the Tune experiment; a resume needs it to match
FINGERPRINT_FILE = "search_fingerprint.json"


def optuna_available() -> bool:
    """Whether ``import optuna`` can work (found without importing it: the planner stays cheap)."""
    return importlib.util.find_spec("optuna") is not None


def _default_space() -> dict:
    return {
        "hidden": {"choice": [16, 32, 64]},
        "lr": {"loguniform": [0.001, 0.03]},
        "dropout": {"uniform": [0.0, 0.3]},
    }


# ---------------------------------------------------------------------------------------------
# torch modules, defined lazily so that listing plugins does not import torch
# ---------------------------------------------------------------------------------------------
def _define_torch_classes() -> None:
    import torch
    from torch import nn

    class Standardize(nn.Module):
        """(x - mean) / std with the training split's statistics stored as buffers."""

        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

        def forward(self, x):
            return (x - self.mean) / self.std

    class TabularMLP(nn.Module):
        """Raw float32 features [batch, n] -> class logits [batch, classes]."""

        def __init__(self, n_features: int, n_classes: int, hidden: int, layers: int = 1,
                     dropout: float = 0.0, mean=None, std=None):
            super().__init__()
            mean = torch.zeros(n_features) if mean is None else mean
            std = torch.ones(n_features) if std is None else std
            self.standardize = Standardize(mean, std)
            blocks: list[nn.Module] = []
            width = n_features
            for _ in range(int(layers)):
                blocks += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(float(dropout))]
                width = int(hidden)
            blocks.append(nn.Linear(width, int(n_classes)))
            self.body = nn.Sequential(*blocks)

        def forward(self, x):
            return self.body(self.standardize(x))

    for cls in (Standardize, TabularMLP):
        # module-level identity: pickle / torch.save find them as plugins.train_tune_mlp.NAME
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
        globals()[cls.__name__] = cls


def __getattr__(name: str):  # PEP 562: first access of a torch class defines them
    if name in ("Standardize", "TabularMLP"):
        if name not in globals():
            _define_torch_classes()
        return globals()[name]
    if name == "_Progress":
        if name not in globals():
            _define_progress_class()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def with_defaults(hp: dict) -> dict:
    """``hp`` with the optional hyperparameters it leaves out set to their defaults."""
    return {**{k: v for k, v in HYPERPARAMETERS.items() if v is not None}, **hp}


def build_module(hp: dict, n_features: int, n_classes: int, mean=None, std=None):
    """The MLP for hyperparameters ``hp``; ``mean``/``std`` default to identity standardization."""
    hp = with_defaults(hp)
    cls = __getattr__("TabularMLP")
    return cls(n_features, n_classes, hidden=hp["hidden"], layers=hp["layers"], dropout=hp["dropout"], mean=mean, std=std)


def fit_in_process(hp: dict, splits: DataSplits, epochs: int, seed: int = 0, lr: float | None = None):
    """Train ``build_module(hp)`` in this process, full-batch Adam, keeping the best validation
    epoch: for benchmarks and tests that need a real model without a Tune search."""
    import copy

    import torch

    torch.manual_seed(seed)
    x, y = splits.arrays("train")
    xv, yv = splits.arrays("val")
    module = build_module(hp, x.shape[1], len(splits.dataset.classes or [0, 1]), x.mean(0), x.std(0))
    optimizer = torch.optim.Adam(module.parameters(), lr=lr if lr is not None else float(hp.get("lr", 1e-3)))
    xt, yt, xvt = torch.tensor(x), torch.tensor(y), torch.tensor(xv)
    best, best_state = -1.0, None
    for _ in range(epochs):
        module.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        optimizer.step()
        module.eval()
        with torch.no_grad():
            acc = float((module(xvt).argmax(1).numpy() == yv).mean())
        if acc > best:
            best, best_state = acc, copy.deepcopy(module.state_dict())
    module.load_state_dict(best_state)
    return module.eval()


def _plain(value: Any) -> Any:
    """numpy scalars from a sampler as Python values (hyperparameters end up in JSON)."""
    return value.item() if hasattr(value, "item") and not isinstance(value, (list, dict, str)) else value


def _score(metric: str, acc: float, loss: float) -> tuple:
    """Larger is better; the other metric breaks ties (val accuracy ties are common on small sets)."""
    return (acc, -loss) if metric == "val_accuracy" else (-loss, acc)


def _evaluate(module, x, y):
    """(accuracy, mean cross-entropy, predicted class indices) of ``module`` on numpy arrays."""
    import torch

    module.eval()
    with torch.no_grad():
        logits = module(torch.tensor(x))  # a copy: pandas may hand out read-only arrays
        target = torch.tensor(y)
        loss = float(torch.nn.functional.cross_entropy(logits, target))
        pred = logits.argmax(dim=1)
        acc = float((pred == target).float().mean())
    return acc, loss, pred.numpy()


# ---------------------------------------------------------------------------------------------
# One Tune trial (runs in a Ray worker process)
# ---------------------------------------------------------------------------------------------
def _trial_index() -> int:
    from ray import tune

    trial_id = tune.get_context().get_trial_id() or ""
    suffix = trial_id.rsplit("_", 1)[-1]
    # Tune's trial ids end in a zero-padded counter (``a1b2c_00003``); fall back to a stable hash
    return int(suffix) if suffix.isdigit() else zlib.crc32(trial_id.encode()) % 10_000


def train_trial(config: dict, data: dict) -> None:
    """Train one configuration; report val metrics per epoch; checkpoint each new best state."""
    import tempfile

    import torch
    from ray import tune

    settings = data["settings"]
    torch.set_num_threads(1)  # trials run side by side on few cores
    if settings["deterministic"]:
        torch.use_deterministic_algorithms(True)
    seed = int(settings["seed"]) + _trial_index()
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)

    unknown = sorted(set(config) - set(HYPERPARAMETERS))
    if unknown:
        raise ValueError(f"unknown hyperparameters {unknown}; known: {sorted(HYPERPARAMETERS)}")
    hp = with_defaults(config)

    x_train, y_train = torch.tensor(data["x_train"]), torch.tensor(data["y_train"])
    x_val, y_val = data["x_val"], data["y_val"]
    model = build_module(hp, x_train.shape[1], data["n_classes"], data["mean"], data["std"])
    optimizer = torch.optim.Adam(model.parameters(), lr=float(hp["lr"]), weight_decay=float(hp["weight_decay"]))
    loss_fn = torch.nn.CrossEntropyLoss()
    metric, batch_size, patience = settings["metric"], int(settings["batch_size"]), int(settings["patience"])

    best: tuple | None = None
    best_epoch, best_acc, best_loss, since_best = 0, float("nan"), float("nan"), 0
    for epoch in range(1, int(settings["max_epochs"]) + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            optimizer.step()
        acc, val_loss, _ = _evaluate(model, x_val, y_val)
        if not math.isfinite(val_loss):
            raise FloatingPointError(f"validation loss is {val_loss} at epoch {epoch} (lr={hp['lr']})")
        score = _score(metric, acc, val_loss)
        improved = best is None or score > best
        metrics = {"epoch": epoch, "val_accuracy": acc, "val_loss": val_loss}
        if improved:
            best, best_epoch, best_acc, best_loss, since_best = score, epoch, acc, val_loss, 0
            metrics.update(best_epoch=best_epoch, best_val_accuracy=best_acc, best_val_loss=best_loss)
            # only improvements are checkpointed, so the trial's latest checkpoint is its best
            with tempfile.TemporaryDirectory() as tmp:
                torch.save(model.state_dict(), Path(tmp) / CHECKPOINT_FILE)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))
        else:
            since_best += 1
            metrics.update(best_epoch=best_epoch, best_val_accuracy=best_acc, best_val_loss=best_loss)
            tune.report(metrics)
        if since_best >= patience:
            break


# ---------------------------------------------------------------------------------------------
# The component
# ---------------------------------------------------------------------------------------------
class TuneMLPTrainer(Trainer):
    name = "tune_mlp"
    summary = "torch MLP (standardization built in) tuned with Ray Tune; best trial chosen on validation"

    @dataclass
    class Config:
        max_epochs: int = 30
        num_samples: int = 4
        #: val_accuracy (maximized) or val_loss (minimized)
        metric: str = "val_accuracy"
        #: hyperparameter -> constant or {choice|grid|uniform|loguniform|randint: ARGS};
        #: known: hidden, lr, dropout, weight_decay (default 0), layers (default 1)
        search_space: Dict[str, Any] = field(default_factory=_default_space)
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

    def __init__(self, config: Any = None):
        super().__init__(config)
        self._check_config()

    def _check_config(self) -> None:
        self.check_config(self.config, "train")  # constructed directly (tests, notebooks)

    @classmethod
    def check_config(cls, config: Any, key: str = "train") -> None:
        """Recipe checks the planner runs before anything heavy starts (no torch / Ray imports)."""
        c = config
        where = key
        if c.metric not in METRICS:
            raise RecipeError(f"{where}.metric: '{c.metric}' is not supported; use one of {', '.join(METRICS)}")
        for name in ("max_epochs", "num_samples", "batch_size", "max_concurrent_trials", "early_stopping_patience"):
            if int(getattr(c, name)) < 1:
                raise RecipeError(f"{where}.{name}: must be >= 1, got {getattr(c, name)}")
        if float(c.cpus_per_trial) <= 0:
            raise RecipeError(f"{where}.cpus_per_trial: must be > 0, got {c.cpus_per_trial}")
        if c.time_budget_s is not None and float(c.time_budget_s) <= 0:
            raise RecipeError(f"{where}.time_budget_s: must be > 0 or null, got {c.time_budget_s}")
        space = validate_search_space(c.search_space, f"{where}.search_space")
        unknown = sorted(set(space) - set(HYPERPARAMETERS))
        if unknown:
            raise RecipeError(
                f"{where}.search_space.{unknown[0]}: unknown hyperparameter for tune_mlp; "
                f"known: {', '.join(HYPERPARAMETERS)}"
            )
        missing = [k for k, v in HYPERPARAMETERS.items() if v is None and k not in space]
        if missing:
            raise RecipeError(
                f"{where}.search_space: missing {', '.join(missing)} (a constant or a sampler each)"
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

    # -----------------------------------------------------------------------------------------
    def fit(self, splits: DataSplits, ctx) -> TrainedModel:
        import numpy as np
        from ray import tune

        from framework.engine import start_ray
        from framework.tuning import search_space_from_config

        c = self.config
        start_ray()  # idempotent: the core normally started Ray already
        mode = METRICS[c.metric]
        x_train, y_train = splits.arrays("train")
        x_val, y_val = splits.arrays("val")
        x_test, y_test = splits.arrays("test")
        classes = list(splits.dataset.classes or [])
        if len(classes) < 2:
            raise StageError(f"train (tune_mlp): dataset '{splits.dataset.name}' needs >= 2 classes, got {classes}")
        empty = [name for name, x in (("train", x_train), ("val", x_val), ("test", x_test)) if len(x) == 0]
        if empty:
            raise StageError(f"train (tune_mlp): the {', '.join(empty)} split(s) are empty")
        import ray

        cluster_cpus = float(ray.cluster_resources().get("CPU", 0))
        if float(c.cpus_per_trial) > cluster_cpus:
            # Tune would wait forever for a trial that never fits
            raise StageError(
                f"train (tune_mlp): cpus_per_trial={c.cpus_per_trial} but the Ray cluster has {cluster_cpus:g} CPUs"
            )
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std = np.where(std > 1e-12, std, 1.0).astype(np.float32)  # constant columns: no division by 0

        data = {
            "x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val,
            "mean": mean.astype(np.float32), "std": std, "n_classes": len(classes),
            "settings": {
                "seed": int(ctx.seed), "metric": c.metric, "max_epochs": int(c.max_epochs),
                "batch_size": int(c.batch_size), "patience": int(c.early_stopping_patience),
                "deterministic": bool(c.deterministic),
            },
        }
        param_space = search_space_from_config(c.search_space, "train.search_space")
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
        grids = [len(v["grid"]) for v in validate_search_space(c.search_space).values() if isinstance(v, dict) and "grid" in v]
        progress = ctx.progress(total=int(c.num_samples) * math.prod(grids), description="tune trials")
        _PROGRESS[str(experiment)] = progress  # the callback looks it up: a restored one is unpickled
        trainable = tune.with_resources(tune.with_parameters(train_trial, data=data), {"cpu": float(c.cpus_per_trial)})

        resumed_done: list[str] = []
        if restore:
            resumed_done = _finished_trials(experiment)
            if resumed_done:
                progress.advance(len(resumed_done), note=f"{len(resumed_done)} finished trial(s) restored")
            ctx.logger.info("tune_mlp: resuming the Tune experiment in %s (%d finished trial(s) kept)",
                            experiment, len(resumed_done))
            tuner = tune.Tuner.restore(str(experiment), trainable=trainable, resume_errored=True)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(
                    num_samples=int(c.num_samples), metric=c.metric, mode=mode,
                    search_alg=self._search_alg(ctx), scheduler=self._scheduler(),
                    time_budget_s=c.time_budget_s,
                    reuse_actors=True,  # later trials skip a fresh worker's torch import (seconds here)
                ),
                run_config=tune.RunConfig(
                    name="search",
                    storage_path=str(storage),
                    verbose=0,
                    log_to_file=True,  # trial stdout/stderr go to files in the trial folder, not the console
                    callbacks=[__getattr__("_Progress")(str(experiment))],
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                    failure_config=tune.FailureConfig(max_failures=0),
                ),
            )
        started = time.perf_counter()
        try:
            with _quiet_tune():
                grid = tuner.fit()
        finally:
            _PROGRESS.pop(str(experiment), None)
        search_seconds = time.perf_counter() - started

        rows, candidates = self._trial_table(grid, c.metric)
        self._write_csv(rows, Path(ctx.out_dir) / "trials.csv")
        for r in rows:  # Tune's own tracebacks are silenced: one line each here, the rest on disk
            if r["status"] == "ERROR":
                ctx.logger.warning("tune_mlp: trial %s failed: %s (traceback: %s)",
                                   r["trial_id"], r["error"], Path(r["_path"]) / "error.txt")
        if not candidates:
            errors = [r for r in rows if r["status"] == "ERROR"]
            if errors:
                raise StageError(
                    f"train (tune_mlp): all {len(rows)} trial(s) failed. First error "
                    f"(trial {errors[0]['trial_id']}, config {errors[0]['config']}): {errors[0]['error']}"
                )
            raise StageError(
                f"train (tune_mlp): no trial reported a result (time_budget_s={c.time_budget_s}); "
                "raise the budget or lower num_samples/max_epochs"
            )
        failed = sum(r["status"] == "ERROR" for r in rows)
        if failed:
            ctx.logger.warning("tune_mlp: %d of %d trials failed; see %s", failed, len(rows), Path(ctx.out_dir) / "trials.csv")

        ranked = sorted(candidates, key=lambda pair: pair[0]["_score"], reverse=True)
        best_row = ranked[0][0]
        schema = InputSchema([FeatureSpec(str(name), "float") for name in splits.dataset.features])
        arrays = {"val": (x_val, y_val), "test": (x_test, y_test)}
        models = [
            self._materialize(row, result, rank, schema, classes, arrays, len(rows))
            for rank, (row, result) in enumerate(ranked, start=1)
        ]
        best = models[0]
        for key in ("val_accuracy", "test_accuracy", "test_f1_macro", "test_loss", "trials"):
            ctx.metric(key, best.metrics[key])
        # epochs actually trained over all trials: what an early-stopping scheduler saves shows here
        trial_epochs_total = int(sum(int(r["epochs"] or 0) for r in rows))
        ctx.metric("trial_epochs_total", trial_epochs_total)
        ctx.logger.info(
            "tune_mlp: %d trials in %.1fs; best %s (%s=%.4f at epoch %d); test accuracy %.4f",
            len(rows), search_seconds, best_row["trial_id"], c.metric, best_row[f"best_{c.metric}"],
            best_row["best_epoch"], best.metrics["test_accuracy"],
        )
        best.details.update({
            "trials": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
            "tune_dir": str(storage / "search"),
            "metric": c.metric,
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
            ctx.logger.info("tune_mlp: %s holds no restorable Tune experiment; starting over", experiment)
            return False
        try:
            saved = json.loads((experiment.parent / FINGERPRINT_FILE).read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            saved = None
        if saved != fingerprint:
            ctx.logger.info("tune_mlp: the Tune experiment in %s is from another config or data; starting over", experiment)
            return False
        return True

    @staticmethod
    def _materialize(row, result, rank, schema, classes, arrays, n_trials) -> TrainedModel:
        """One trial's best checkpoint as an evaluated TrainedModel."""
        import torch
        from sklearn.metrics import f1_score

        with result.checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / CHECKPOINT_FILE, weights_only=True)
        x_val, y_val = arrays["val"]
        x_test, y_test = arrays["test"]
        module = build_module(result.config, x_val.shape[1], len(classes))
        module.load_state_dict(state)  # also restores the standardization buffers
        module.eval()
        val_acc, _, _ = _evaluate(module, x_val, y_val)
        test_acc, test_loss, test_pred = _evaluate(module, x_test, y_test)
        f1 = float(f1_score(y_test, test_pred, average="macro", labels=list(range(len(classes))), zero_division=0))
        metrics = {
            "val_accuracy": val_acc,
            "test_accuracy": test_acc,
            "test_f1_macro": f1,
            "test_loss": test_loss,
            "trials": n_trials,
            "best_trial_epochs": int(row["epochs"]),
        }
        details = {
            "trial_id": row["trial_id"],
            "trial_rank": rank,
            "best_trial_id": row["trial_id"],
            "best_epoch": int(row["best_epoch"]),
            "checkpoint": str(result.checkpoint.path),
        }
        return TrainedModel(
            module=module,
            schema=schema,
            classes=classes,
            metrics=metrics,
            hyperparameters={k: _plain(v) for k, v in result.config.items()},
            details=details,
        )

    # -----------------------------------------------------------------------------------------
    @staticmethod
    def _trial_table(grid, metric: str):
        """One row per trial (config, best metrics, epochs, error) and the usable (row, result) pairs."""
        rows, candidates = [], []
        for result in grid:
            m = result.metrics or {}
            trial_id = m.get("trial_id") or Path(str(result.path)).name
            error = result.error
            has_best = "best_val_accuracy" in m and result.checkpoint is not None
            row = {
                "trial_id": trial_id,
                "status": "ERROR" if error else ("TERMINATED" if has_best else "NO_RESULT"),
                "config": {k: _plain(v) for k, v in (result.config or {}).items()},
                "best_val_accuracy": m.get("best_val_accuracy"),
                "best_val_loss": m.get("best_val_loss"),
                "best_epoch": m.get("best_epoch"),
                "epochs": m.get("epoch", 0),
                "seconds": m.get("time_total_s"),
                "error": _first_line(error) if error else "",
                "_path": str(result.path),
            }
            rows.append(row)
            if not error and has_best:
                row["_score"] = _score(metric, row["best_val_accuracy"], row["best_val_loss"])
                candidates.append((row, result))
        rows.sort(key=lambda r: r["trial_id"])
        return rows, candidates

    @staticmethod
    def _write_csv(rows: list[dict], path: Path) -> None:
        params = sorted({k for r in rows for k in r["config"]})
        fields = ["trial_id", "status", *params, "best_val_accuracy", "best_val_loss", "best_epoch", "epochs", "seconds", "error"]
        with open(path, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields)
            writer.writeheader()
            for r in rows:
                writer.writerow({**{k: r.get(k) for k in fields if k not in params}, **r["config"]})


def _first_line(error: BaseException) -> str:
    """The trial's own exception, not Ray's wrapper traceback."""
    cause = getattr(error, "cause", None) or error.__cause__ or error
    text = f"{type(cause).__name__}: {cause}"
    return text.strip().splitlines()[-1] if "Traceback" in text else text.strip()


#: experiment folder -> the running fit's progress; the callback looks it up when called, so a
#: callback unpickled by ``Tuner.restore`` reports to the current run, not to a stale one
_PROGRESS: dict[str, Any] = {}


def _define_progress_class() -> None:
    from ray import tune

    class _Progress(tune.Callback):
        """A Tune callback advancing the fit's progress as trials end (Tune runs it in the driver)."""

        def __init__(self, key: str):
            self.key = key

        def _advance(self, note: str) -> None:
            progress = _PROGRESS.get(self.key)
            if progress is not None:
                progress.advance(1, note=note)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self._advance(f"{trial.trial_id} done")

        def on_trial_error(self, iteration, trials, trial, **info):
            self._advance(f"{trial.trial_id} failed")

    # module-level identity (pickled by reference in tuner.pkl), defined lazily: Ray is heavy
    _Progress.__module__ = __name__
    _Progress.__qualname__ = "_Progress"
    globals()["_Progress"] = _Progress


def _finished_trials(experiment: Path) -> list[str]:
    """Ids of the trials a restore keeps as they are (TERMINATED in the saved experiment)."""
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(str(experiment))
    except Exception:  # pragma: no cover - a damaged state: Tune's restore reports it
        return []
    return sorted(t.trial_id for t in analysis.trials if t.status == "TERMINATED")


class _quiet_tune:
    """Keep Tune's console output out of the run's console while ``Tuner.fit`` runs.

    Tune's new output engine prints its experiment table even with ``verbose=0``; the legacy
    reporter (``RAY_AIR_NEW_OUTPUT=0``, read when the run starts) honours it. Tune's own loggers
    drop to CRITICAL: its bookkeeping warnings are not the user's business, and failed trials are
    reported by the trainer (one line in the stage log, ``error.txt`` in the trial folder).
    """

    LOGGERS = ("ray.tune", "ray.train", "ray.air")

    def __enter__(self):
        import os

        self._env = os.environ.get("RAY_AIR_NEW_OUTPUT")
        os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
        self._levels = {n: logging.getLogger(n).level for n in self.LOGGERS}
        for n in self.LOGGERS:
            logging.getLogger(n).setLevel(logging.CRITICAL)

    def __exit__(self, *exc):
        import os

        if self._env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = self._env
        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        return False


@hookimpl
def register_trainers():
    return [TuneMLPTrainer]
