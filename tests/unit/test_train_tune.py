"""Trainer ``tune``: real Ray Tune trials on scikit-learn's breast cancer and digits data."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.train_tune import TuneTrainer, register_trainers


def trainer(**options) -> TuneTrainer:
    return TuneTrainer(TuneTrainer.Config(**options))


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
    assert register_trainers() == [TuneTrainer]
    code = (
        "import sys, plugins.train_tune, plugins.model_mlp, plugins.model_cnn, plugins.model_ranker;"
        "heavy = [m for m in ('torch', 'ray') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_defaults_match_the_shipped_recipe():
    from omegaconf import OmegaConf

    from plugins.model_mlp import MLPModel

    recipe = OmegaConf.load(Path(__file__).parents[2] / "conf/train/mlp.yaml")
    config = TuneTrainer.Config()
    assert recipe.model == config.model == "mlp" and config.search_space is None
    assert OmegaConf.to_container(recipe.search_space) == MLPModel.default_search_space == trainer().search_space()
    # metric unset in both: val_accuracy, or val_mse for a regression
    assert (recipe.max_epochs, recipe.num_samples, recipe.get("metric")) == (config.max_epochs, config.num_samples, config.metric)
    # the core validates component configs as OmegaConf structured configs
    merged = OmegaConf.merge(OmegaConf.structured(TuneTrainer.Config), {"time_budget_s": 30})
    assert merged.time_budget_s == 30.0


@pytest.mark.parametrize(
    "options, message",
    [
        ({"metric": "accuracy"}, "train.metric: 'accuracy' is not supported for model 'mlp'; use one of val_accuracy, val_loss"),
        ({"metric": "val_auc"}, "train.metric: 'val_auc' is not supported for model 'mlp'"),
        ({"model": "mlpp"}, "train.model: unknown model type 'mlpp'. Did you mean 'mlp'? Known: cnn, mlp, ranker"),
        ({"num_samples": 0}, "train.num_samples: must be >= 1"),
        ({"cpus_per_trial": 0}, "train.cpus_per_trial: must be > 0"),
        ({"time_budget_s": -1.0}, "train.time_budget_s: must be > 0 or null"),
        ({"search_space": {"hidden": 8, "lr": 0.01, "dropout": 0.1, "depth": 2}},
         "train.search_space.depth: unknown hyperparameter for model 'mlp'; known: hidden, dropout, layers, lr, weight_decay"),
        ({"search_space": {"hidden": 8, "lr": 0.01, "dropuot": 0.1}},
         "train.search_space.dropuot: unknown hyperparameter for model 'mlp' (did you mean 'dropout'?)"),
        ({"search_space": {"lr": 0.01, "dropout": 0.1}}, "train.search_space: missing hidden for model 'mlp'"),
        ({"model": "ranker", "metric": "val_auc", "privacy": {"enabled": True}},
         "train.privacy.enabled: model 'ranker' trains with a loss that couples rows"),
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

    from plugins.model_mlp import build_mlp as build_module

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
    # the trial's sampled values, the model's defaults for the rest, and the model's name
    assert set(model.hyperparameters) == {"model", "hidden", "lr", "dropout", "layers", "weight_decay"}
    assert model.hyperparameters["model"] == "mlp" and model.hyperparameters["hidden"] in (8, 16)
    assert model.details["model"] == "mlp"
    assert set(model.metrics) == {"val_accuracy", "test_accuracy", "test_f1_macro", "test_loss", "trials", "best_trial_epochs"}
    assert model.metrics["test_accuracy"] > 0.85 and model.metrics["val_accuracy"] > 0.85
    assert model.metrics["val_accuracy"] == pytest.approx(
        next(r for r in model.details["trials"] if r["trial_id"] == model.details["best_trial_id"])["best_val_accuracy"]
    )
    assert {"val_accuracy", "test_accuracy", "test_f1_macro", "test_loss", "trials"} <= set(ctx.metrics)
    assert calls[0] == ("start", "tune trials", 2)  # num_samples x the grid's 2 points
    assert calls[-1][0] == "advance" and len([c for c in calls if c[0] == "advance"]) == 2


@pytest.mark.ray
def test_defaults_reach_95_percent(ray_session, stage_ctx):
    """(how long the search takes is benchmarks/quickstart_stages.py's business, not a timed test's)"""
    splits = breast_cancer_splits()
    ctx = stage_ctx("train")
    model = trainer().fit(splits, ctx)
    assert model.metrics["test_accuracy"] >= 0.95, model.metrics
    assert model.metrics["trials"] == 4 and 1 <= model.metrics["best_trial_epochs"] <= 30
    assert model.hyperparameters["model"] == "mlp" and {"hidden", "lr", "dropout"} <= set(model.hyperparameters)


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


# ---------------------------------------------------------------------------------------------
# Schedulers, search algorithms, resume
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        ({"scheduler": "hyperband"}, "train.scheduler: 'hyperband' is not supported; use one of fifo, asha, median"),
        ({"scheduler": "asha", "grace_period": 0}, "train.grace_period: must be >= 1"),
        ({"scheduler": "median", "grace_period": 9, "max_epochs": 5}, "train.grace_period: must be <= max_epochs (5)"),
        ({"scheduler": "asha", "reduction_factor": 1}, "train.reduction_factor: must be >= 2 for asha"),
        ({"search_alg": "bayes"}, "train.search_alg: 'bayes' is not supported; use one of random, optuna"),
    ],
)
def test_scheduler_and_search_alg_errors(options, message):
    with pytest.raises(RecipeError) as err:
        trainer(**options)
    assert str(err.value).startswith(message), str(err.value)


def test_fifo_ignores_scheduler_only_options():
    trainer(grace_period=0, reduction_factor=1)  # not used without asha / median: no error


def test_optuna_is_rejected_at_plan_time_when_not_installed(monkeypatch):
    import plugins.train_tune as module

    monkeypatch.setattr(module, "optuna_available", lambda: False)
    config = TuneTrainer.Config(search_alg="optuna")
    with pytest.raises(RecipeError) as err:
        TuneTrainer.check_config(config, "train")  # what the planner calls
    assert str(err.value).startswith("train.search_alg: 'optuna' needs the optuna package"), str(err.value)

    monkeypatch.setattr(module, "optuna_available", lambda: True)
    TuneTrainer.check_config(config, "train")
    grid = {"hidden": {"grid": [8, 16]}, "lr": 0.01, "dropout": 0.0}
    with pytest.raises(RecipeError, match=r"^train.search_space.hidden: 'grid' is not supported with search_alg: optuna"):
        TuneTrainer.check_config(TuneTrainer.Config(search_alg="optuna", search_space=grid), "train")


def test_new_options_merge_as_structured_config():
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(TuneTrainer.Config),
                             {"scheduler": "asha", "grace_period": 2, "reduction_factor": 2, "resume": False})
    config = OmegaConf.to_object(merged)
    assert (config.scheduler, config.grace_period, config.reduction_factor, config.resume) == ("asha", 2, 2, False)
    TuneTrainer.check_config(config, "train")


@pytest.mark.ray
def test_asha_stops_weak_trials_early_and_still_returns_a_model(ray_session, stage_ctx):
    ctx = stage_ctx("train", seed=1)
    # lr spans 3 decades: the slow learners fall behind at the first rung
    space = {"hidden": 8, "lr": {"loguniform": [1e-4, 3e-2]}, "dropout": 0.0}
    model = trainer(num_samples=6, max_epochs=8, search_space=space, scheduler="asha", grace_period=1,
                    reduction_factor=3, early_stopping_patience=8).fit(breast_cancer_splits(), ctx)
    epochs = [int(r["epochs"]) for r in model.details["trials"]]
    assert len(epochs) == 6 and all(r["status"] == "TERMINATED" for r in model.details["trials"])
    assert ctx.metrics["trial_epochs_total"] == sum(epochs) == model.details["trial_epochs_total"]
    assert sum(epochs) < 6 * 8 and min(epochs) < 8, epochs
    assert model.details["scheduler"] == "asha"
    assert model.metrics["test_accuracy"] > 0.85


@pytest.mark.ray
def test_median_stopping_rule_runs(ray_session, stage_ctx):
    ctx = stage_ctx("train", seed=2)
    space = {"hidden": 8, "lr": {"loguniform": [1e-4, 3e-2]}, "dropout": 0.0}
    model = trainer(num_samples=5, max_epochs=6, search_space=space, scheduler="median",
                    grace_period=2).fit(breast_cancer_splits(), ctx)
    assert model.metrics["trials"] == 5 and ctx.metrics["trial_epochs_total"] <= 5 * 6


def _result_lines(trial_dir: Path) -> int:
    return len((trial_dir / "result.json").read_text().splitlines())


@pytest.mark.ray
def test_interrupted_search_resumes_without_rerunning_finished_trials(ray_session, stage_ctx):
    """A Ctrl+C-like stop (SIGUSR1, Tune's graceful interrupt) after 2 trials; the rerun restores."""
    import os
    import signal

    splits = breast_cancer_splits()
    ctx = stage_ctx("train", seed=4)
    options = dict(num_samples=5, max_epochs=6, search_space={"hidden": {"choice": [8, 16]}, "lr": 0.01, "dropout": 0.0})
    notes: list = []

    def interrupting(description, total):
        def advance(done, total_, note):
            notes.append(note)
            if done == 2:
                os.kill(os.getpid(), signal.SIGUSR1)  # Tune ends the run and saves its state
        return advance

    ctx.progress_factory = interrupting
    first = trainer(**options).fit(splits, ctx)
    finished = sorted(r["trial_id"] for r in first.details["trials"] if r["status"] == "TERMINATED"
                      and int(r["epochs"]) > 0)
    experiment = ctx.out_dir / "tune" / "search"
    done_first = {p.name: _result_lines(p) for p in experiment.iterdir() if (p / "result.json").is_file()}
    assert len(notes) == 2 and first.details["resumed"] is False

    from ray import tune

    assert tune.Tuner.can_restore(str(experiment))
    calls = watch_progress(ctx)
    second = trainer(**options).fit(splits, ctx)
    assert second.details["resumed"] is True
    kept = second.details["resumed_finished_trials"]
    assert len(kept) >= 2 and set(kept) <= set(finished)
    rows = second.details["trials"]
    assert len(rows) == 5 and all(r["status"] == "TERMINATED" for r in rows)
    # the finished trials were not rerun: same result lines on disk; only the others advanced progress
    for trial_dir in experiment.iterdir():
        if any(trial_dir.name.startswith(f"train_trial_{t}") or t in trial_dir.name for t in kept):
            assert _result_lines(trial_dir) == done_first[trial_dir.name]
    advances = [c for c in calls if c[0] == "advance"]
    assert advances[0][1] == len(kept) and len(advances) == 1 + (5 - len(kept))
    assert second.metrics["trials"] == 5


@pytest.mark.ray
def test_resume_false_starts_over(ray_session, stage_ctx):
    splits = breast_cancer_splits()
    ctx = stage_ctx("train", seed=5)
    options = dict(num_samples=2, max_epochs=3, search_space={"hidden": 8, "lr": 0.01, "dropout": 0.0})
    first = trainer(**options).fit(splits, ctx)
    again = trainer(**options).fit(splits, ctx)  # finished experiment restored: nothing reruns
    assert again.details["resumed"] is True and len(again.details["resumed_finished_trials"]) == 2
    assert {r["trial_id"] for r in again.details["trials"]} == {r["trial_id"] for r in first.details["trials"]}
    fresh = trainer(resume=False, **options).fit(splits, ctx)
    assert fresh.details["resumed"] is False
    assert {r["trial_id"] for r in fresh.details["trials"]}.isdisjoint({r["trial_id"] for r in first.details["trials"]})
    changed = trainer(**{**options, "max_epochs": 4}).fit(splits, ctx)  # another config: no resume
    assert changed.details["resumed"] is False


# ---------------------------------------------------------------------------------------------
# Other model components: CNN on images, a pairwise ranker
# ---------------------------------------------------------------------------------------------
def test_models_are_registered_components_with_cheap_imports():
    from framework.plugins import default_components

    components = default_components()
    assert {"mlp", "cnn", "ranker"} <= set(components.names("model"))
    assert components.get("model", "cnn", "x").plugin == "model_cnn"


def test_cnn_refuses_pixels_that_are_not_an_image():
    from plugins.model_cnn import CNNModel

    model = CNNModel()
    assert model.check_data(64, 10, {}) is None  # 8x8, one channel
    assert "30 features are not 1 channel(s) x 5 x 5 pixels" in model.check_data(30, 2, {})
    assert model.check_data(48, 2, {"channels": 3, "height": 4}) is None
    assert "kernel_size must be a positive odd integer" in model.check_data(64, 10, {"kernel_size": 2})
    assert "conv_channels must be a non-empty list" in model.check_data(64, 10, {"conv_channels": 16})


def test_cnn_on_tabular_data_fails_before_ray_or_any_trial(stage_ctx):
    with pytest.raises(StageError, match=r"model 'cnn' cannot learn dataset 'breast_cancer': 30 features are not"):
        trainer(model="cnn", search_space={"lr": 0.01}).fit(breast_cancer_splits(), stage_ctx("train"))


def test_cnn_module_is_convolutional_and_exports_to_onnx(tmp_path):
    import onnxruntime as ort
    import torch

    from framework.testing.data import digits_splits
    from plugins.export_onnx import export_module
    from plugins.model_cnn import CNNModel
    from plugins.train_tune import fit_in_process

    splits = digits_splits()
    module = fit_in_process({"conv_channels": [8, 16], "hidden": 32, "lr": 0.01}, splits, epochs=25, model=CNNModel())
    kinds = [type(m).__name__ for m in module.body]
    assert kinds[:7] == ["Unflatten", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d"], kinds
    x_test, y_test = splits.arrays("test")
    path = export_module(module, x_test[:8], tmp_path / "cnn.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {session.get_inputs()[0].name: x_test})[0]
    with torch.no_grad():
        expected = torch.softmax(module(torch.tensor(x_test)), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert (probabilities.argmax(1) == y_test).mean() > 0.85  # full-batch, 25 epochs: already far above chance


@pytest.mark.ray
def test_cnn_search_on_digits(ray_session, stage_ctx):
    from framework.testing.data import digits_splits

    ctx = stage_ctx("train", seed=1)
    space = {"conv_channels": {"choice": [[8, 16], [16, 32]]}, "hidden": 32, "lr": 0.005, "dropout": 0.0}
    model = trainer(model="cnn", num_samples=2, max_epochs=6, batch_size=64, search_space=space).fit(digits_splits(), ctx)
    assert model.details["model"] == "cnn" and model.hyperparameters["model"] == "cnn"
    assert model.hyperparameters["conv_channels"] in ([8, 16], [16, 32])
    assert any(type(m).__name__ == "Conv2d" for m in model.module.modules())
    assert model.metrics["test_accuracy"] > 0.9, model.metrics


def test_pairwise_loss_and_auc():
    import torch

    from plugins.model_ranker import RankerModel, auc, pairwise_logistic_loss

    score = torch.tensor([3.0, 1.0, 2.0, 0.0])
    relevant = torch.tensor([True, False, True, False])
    assert auc(score, relevant) == 1.0
    assert auc(-score, relevant) == 0.0
    assert auc(torch.zeros(4), relevant) == 0.5
    # pairs (3,1) (3,0) (2,1) (2,0): mean softplus(-(diff))
    expected = float(torch.nn.functional.softplus(-torch.tensor([2.0, 3.0, 1.0, 2.0])).mean())
    assert float(pairwise_logistic_loss(score, relevant)) == pytest.approx(expected)
    assert float(pairwise_logistic_loss(score, torch.ones(4, dtype=torch.bool))) == 0.0  # no pair
    model = RankerModel()
    assert "binary relevance" in model.check_data(30, 3, {"hidden": 8})
    module = model.build({"hidden": 8}, 4, 2)
    logits = module(torch.randn(5, 4))
    assert logits.shape == (5, 2) and torch.all(logits[:, 0] == 0)  # [0, s]: softmax = sigmoid(s)


@pytest.mark.ray
def test_ranker_search_optimizes_val_auc(ray_session, stage_ctx):
    ctx = stage_ctx("train", seed=2)
    space = {"hidden": 16, "lr": {"choice": [0.003, 0.01]}, "pointwise_weight": 0.2}
    model = trainer(model="ranker", metric="val_auc", num_samples=2, max_epochs=8,
                    search_space=space).fit(breast_cancer_splits(), ctx)
    assert model.details["model"] == "ranker" and model.details["metric"] == "val_auc"
    assert model.metrics["test_auc"] > 0.95 and model.metrics["val_auc"] > 0.95, model.metrics
    assert ctx.metrics["test_auc"] == model.metrics["test_auc"]
    rows = list(csv.DictReader(open(ctx.out_dir / "trials.csv")))
    assert "best_val_auc" in rows[0] and all(float(r["best_val_auc"]) > 0.9 for r in rows)
    best = max(model.details["trials"], key=lambda r: r["best_val_auc"])
    assert best["trial_id"] == model.details["best_trial_id"]


@pytest.mark.ray
def test_optuna_search_runs_live(ray_session, stage_ctx):
    pytest.importorskip("optuna")
    ctx = stage_ctx("train", seed=6)
    space = {"hidden": {"choice": [8, 16]}, "lr": {"loguniform": [0.003, 0.03]}, "dropout": 0.0}
    model = trainer(search_alg="optuna", num_samples=3, max_epochs=4, search_space=space).fit(breast_cancer_splits(), ctx)
    assert model.details["search_alg"] == "optuna" and model.metrics["trials"] == 3
    lrs = [r["config"]["lr"] for r in model.details["trials"]]
    assert len(set(lrs)) == 3 and all(0.003 <= lr <= 0.03 for lr in lrs)
    assert model.metrics["test_accuracy"] > 0.85


# ---------------------------------------------------------------------------------------------
# Differential privacy (DP-SGD with Opacus)
# ---------------------------------------------------------------------------------------------
@pytest.mark.ray
def test_private_search_reports_the_epsilon_each_trial_spent(ray_session, stage_ctx):
    pytest.importorskip("opacus")
    ctx = stage_ctx("train", seed=8)
    space = {"hidden": 16, "lr": {"grid": [0.01, 0.03]}, "dropout": 0.0}
    model = trainer(num_samples=1, max_epochs=6, batch_size=64, early_stopping_patience=6, search_space=space,
                    privacy={"enabled": True, "target_epsilon": 2.0}).fit(breast_cancer_splits(), ctx)
    n_train = len(breast_cancer_splits().train)
    rows = model.details["trials"]
    assert len(rows) == 2
    for row in rows:  # calibrated for 6 epochs: a trial that ran them all spent just under the target
        assert 0 < row["epsilon"] <= 2.0 and row["delta"] == pytest.approx(1 / (10 * n_train))
        if row["epochs"] == 6:
            assert row["epsilon"] >= 1.8
    best = next(r for r in rows if r["trial_id"] == model.details["best_trial_id"])
    assert model.metrics["epsilon"] == best["epsilon"] and ctx.metrics["epsilon"] == best["epsilon"]
    assert model.details["privacy"]["enabled"] is True and model.details["privacy"]["noise_multiplier"] > 1.0
    assert model.metrics["test_accuracy"] > 0.8, model.metrics
    csv_rows = list(csv.DictReader(open(ctx.out_dir / "trials.csv")))
    assert all(float(r["epsilon"]) <= 2.0 for r in csv_rows)
    # the module is a plain torch module again (no Opacus wrapper or hooks): it exports and pickles
    assert type(model.module).__name__ == "TabularMLP"


def test_privacy_options_are_checked_at_plan_time():
    with pytest.raises(RecipeError, match=r"^train\.privacy\.target_epsilon: must be > 0"):
        trainer(privacy={"enabled": True, "target_epsilon": 0.0})
    with pytest.raises(RecipeError, match=r"^train\.privacy\.accountant"):
        trainer(privacy={"enabled": True, "accountant": "moments"})


def test_tiebroken_accuracy_orders_by_accuracy_then_loss():
    from plugins.train_tune import tiebroken_accuracy

    n = 85
    one_row = 1 / n
    # equal accuracy: the lower loss ranks higher
    assert tiebroken_accuracy(0.9, 0.1, n) > tiebroken_accuracy(0.9, 0.5, n)
    # one more right row beats any loss difference
    assert tiebroken_accuracy(0.9 + one_row, 1e6, n) > tiebroken_accuracy(0.9, 0.0, n)
    assert tiebroken_accuracy(0.9, 0.0, n) == 0.9


def test_checkpoints_only_where_a_scheduler_can_stop_a_trial():
    # ASHA decides at grace * rf**k and at max_epochs; fifo never stops a trial; median and a
    # time budget can stop one at any report, so every improvement is saved then
    assert trainer(scheduler="asha", grace_period=2, reduction_factor=3, max_epochs=30)._checkpoint_epochs() == [2, 6, 18, 30]
    assert trainer(scheduler="fifo")._checkpoint_epochs() == []
    assert trainer(scheduler="median")._checkpoint_epochs() is None
    assert trainer(time_budget_s=60.0)._checkpoint_epochs() is None
