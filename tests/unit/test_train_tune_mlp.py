"""Trainer ``tune_mlp``: real Ray Tune trials on scikit-learn's breast cancer data."""
from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.train_tune_mlp import TuneMLPTrainer, register_trainers


def trainer(**options) -> TuneMLPTrainer:
    return TuneMLPTrainer(TuneMLPTrainer.Config(**options))


def watch_progress(ctx) -> list:
    calls: list = []

    def factory(description, total):
        calls.append(("start", description, total))
        return lambda done, total_, note: calls.append(("advance", done, total_))

    ctx.progress_factory = factory
    return calls


# ---------------------------------------------------------------------------------------------
# No Ray needed
# ---------------------------------------------------------------------------------------------
def test_registered_and_import_is_cheap():
    assert register_trainers() == [TuneMLPTrainer]
    code = (
        "import sys, plugins.train_tune_mlp;"
        "heavy = [m for m in ('torch', 'ray') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_match_the_shipped_recipe():
    from omegaconf import OmegaConf

    recipe = OmegaConf.load(Path(__file__).parents[2] / "conf/train/tune_mlp.yaml")
    config = TuneMLPTrainer.Config()
    assert OmegaConf.to_container(recipe.search_space) == config.search_space
    assert (recipe.max_epochs, recipe.num_samples, recipe.metric) == (config.max_epochs, config.num_samples, config.metric)
    # the core validates component configs as OmegaConf structured configs
    merged = OmegaConf.merge(OmegaConf.structured(TuneMLPTrainer.Config), {"time_budget_s": 30})
    assert merged.time_budget_s == 30.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"metric": "accuracy"}, "train.metric: 'accuracy' is not supported; use one of val_accuracy, val_loss"),
        ({"num_samples": 0}, "train.num_samples: must be >= 1"),
        ({"cpus_per_trial": 0}, "train.cpus_per_trial: must be > 0"),
        ({"time_budget_s": -1.0}, "train.time_budget_s: must be > 0 or null"),
        ({"search_space": {"hidden": 8, "lr": 0.01, "dropout": 0.1, "depth": 2}},
         "train.search_space.depth: unknown hyperparameter for tune_mlp; known: hidden, lr, dropout, weight_decay, layers"),
        ({"search_space": {"lr": 0.01, "dropout": 0.1}}, "train.search_space: missing hidden"),
        ({"search_space": {"hidden": {"choise": [8]}, "lr": 0.01, "dropout": 0.1}},
         "train.search_space.hidden: unknown sampler 'choise'. Did you mean 'choice'?"),
    ],
)
def test_config_errors_are_recipe_errors(options, message):
    with pytest.raises(RecipeError) as err:
        trainer(**options)
    assert str(err.value).startswith(message), str(err.value)


def test_module_standardizes_raw_features_and_pickles():
    import pickle

    import torch

    from plugins.train_tune_mlp import build_module

    x = np.random.default_rng(0).normal(5.0, 3.0, size=(50, 4)).astype(np.float32)
    module = build_module({"hidden": 8, "lr": 0.1, "dropout": 0.0, "layers": 2}, 4, 3, x.mean(0), x.std(0))
    assert [type(m).__name__ for m in module.body] == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    standardized = module.standardize(torch.tensor(x)).numpy()
    np.testing.assert_allclose(standardized.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(standardized.std(0), 1.0, atol=1e-3)
    assert {"standardize.mean", "standardize.std"} <= set(module.state_dict())
    clone = pickle.loads(pickle.dumps(module.eval()))
    torch.testing.assert_close(clone(torch.tensor(x)), module(torch.tensor(x)))


# ---------------------------------------------------------------------------------------------
# Real Tune runs on the session's Ray
# ---------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_small_search_trains_checkpoints_and_reports(ray_session, stage_ctx):
    import torch

    splits = breast_cancer_splits()
    ctx = stage_ctx("train", seed=3)
    calls = watch_progress(ctx)
    space = {"hidden": {"grid": [8, 16]}, "lr": {"loguniform": [0.005, 0.02]}, "dropout": 0.1,
             "layers": {"choice": [1, 2]}, "weight_decay": 1e-4}
    model = trainer(num_samples=1, max_epochs=10, search_space=space).fit(splits, ctx)

    # the trial table: one row per grid point, in trials.csv and in the details
    rows = list(csv.DictReader(open(ctx.out_dir / "trials.csv")))
    assert len(rows) == 2 and {r["hidden"] for r in rows} == {"8", "16"}
    assert all(r["status"] == "TERMINATED" and 1 <= int(r["epochs"]) <= 10 for r in rows)
    assert [r["trial_id"] for r in rows] == [r["trial_id"] for r in model.details["trials"]]
    assert model.metrics["trials"] == 2 and model.details["failed_trials"] == 0

    # the best trial's checkpoint is on disk, under the stage folder, and is what the module holds
    checkpoint = Path(model.details["checkpoint"])
    assert checkpoint.is_relative_to(ctx.out_dir / "tune") and (checkpoint / "model.pt").is_file()
    state = torch.load(checkpoint / "model.pt", weights_only=True)
    for key, value in model.module.state_dict().items():
        torch.testing.assert_close(value, state[key])
    x_train, _ = splits.arrays("train")
    np.testing.assert_allclose(model.module.standardize.mean.numpy(), x_train.mean(0), rtol=1e-5)

    # the contract: eval-mode module on raw features, schema, classes, hyperparameters, metrics
    assert not model.module.training
    assert model.schema.names == splits.dataset.features and {f.dtype for f in model.schema.features} == {"float"}
    assert model.classes == ["malignant", "benign"]
    assert set(model.hyperparameters) == set(space) and model.hyperparameters["hidden"] in (8, 16)
    assert set(model.metrics) == {"val_accuracy", "test_accuracy", "test_f1_macro", "test_loss", "trials", "best_trial_epochs"}
    assert model.metrics["test_accuracy"] > 0.85 and model.metrics["val_accuracy"] > 0.85
    assert model.metrics["val_accuracy"] == pytest.approx(
        next(r for r in model.details["trials"] if r["trial_id"] == model.details["best_trial_id"])["best_val_accuracy"]
    )
    assert {"val_accuracy", "test_accuracy", "test_f1_macro", "test_loss", "trials"} <= set(ctx.metrics)
    assert calls[0] == ("start", "tune trials", 2)  # num_samples x the grid's 2 points
    assert calls[-1][0] == "advance" and len([c for c in calls if c[0] == "advance"]) == 2


@pytest.mark.ray
def test_defaults_reach_95_percent_in_under_a_minute(ray_session, stage_ctx):
    splits = breast_cancer_splits()
    ctx = stage_ctx("train")
    started = time.perf_counter()
    model = trainer().fit(splits, ctx)
    seconds = time.perf_counter() - started
    assert seconds < 60, f"fit took {seconds:.1f}s"
    assert model.metrics["test_accuracy"] >= 0.95, model.metrics
    assert model.metrics["trials"] == 4 and 1 <= model.metrics["best_trial_epochs"] <= 30
    assert set(model.hyperparameters) == {"hidden", "lr", "dropout"}


@pytest.mark.ray
def test_all_trials_failing_raises_stage_error_with_the_trial_error(ray_session, stage_ctx):
    # a negative learning rate passes the search-space checks but makes torch.optim.Adam raise
    space = {"hidden": 8, "lr": -0.1, "dropout": 0.0}
    ctx = stage_ctx("train")
    with pytest.raises(StageError) as err:
        trainer(num_samples=2, max_epochs=2, search_space=space).fit(breast_cancer_splits(), ctx)
    message = str(err.value)
    assert "all 2 trial(s) failed" in message and "Invalid learning rate: -0.1" in message, message
    rows = list(csv.DictReader(open(ctx.out_dir / "trials.csv")))
    assert [r["status"] for r in rows] == ["ERROR", "ERROR"]


@pytest.mark.ray
def test_a_failed_trial_does_not_sink_the_search(ray_session, stage_ctx):
    space = {"hidden": 8, "lr": {"grid": [-0.1, 0.01]}, "dropout": 0.0}
    ctx = stage_ctx("train")
    model = trainer(num_samples=1, max_epochs=5, search_space=space).fit(breast_cancer_splits(), ctx)
    assert model.hyperparameters["lr"] == 0.01
    assert model.details["failed_trials"] == 1
    failed = [r for r in model.details["trials"] if r["status"] == "ERROR"]
    assert len(failed) == 1 and "Invalid learning rate" in failed[0]["error"]
