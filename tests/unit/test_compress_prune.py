"""Compressors ``prune_magnitude`` and ``prune_structured`` on a trained 30 -> 128 -> 128 -> 2 MLP."""
from __future__ import annotations

import copy
import dataclasses
import io
import subprocess
import sys

import numpy as np
import pytest

from framework.components import DataSplits, TrainedModel
from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.compress_prune import (
    PruneMagnitude, PruneStructured, count_parameters, hidden_sizes, rebuild_pruned_module, register_compressors,
)

HP = {"hidden": 128, "layers": 2, "lr": 1e-3, "dropout": 0.1}


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return breast_cancer_splits()


@pytest.fixture(scope="module")
def trained(train_mlp_model) -> TrainedModel:
    """The trainer's module, trained 8 epochs in-process (tests/conftest.py), naming its model
    component as the trainer records it."""
    model = train_mlp_model(HP, 8)
    return dataclasses.replace(model, hyperparameters={"model": "mlp", **model.hyperparameters})


def _state(module) -> dict:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_registered_model_level_and_import_is_cheap():
    assert [c.name for c in register_compressors()] == ["prune_magnitude", "prune_structured"]
    assert all(c.level == "model" for c in register_compressors())
    code = "import sys, plugins.compress_prune; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_magnitude_hits_sparsity_and_keeps_accuracy(trained, splits, stage_ctx):
    before = _state(trained.module)
    ctx = stage_ctx("compress", seed=3)
    pruned = PruneMagnitude(PruneMagnitude.Config(sparsity=0.5, fine_tune_epochs=3)).compress(trained, splits, ctx)
    m = pruned.metrics
    assert m["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert abs(m["accuracy_delta"]) <= 0.03 and m["test_accuracy"] >= trained.metrics["test_accuracy"] - 0.03
    assert m["input_test_accuracy"] == pytest.approx(trained.metrics["test_accuracy"])
    # permanent: plain weights, no masks or hooks left; the zeros are really there
    state = pruned.module.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    linear_weights = [v for k, v in state.items() if k.startswith("body.") and k.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in linear_weights) / sum(w.numel() for w in linear_weights)
    assert zeros == pytest.approx(m["sparsity"])
    # honest size: dense bytes unchanged, the sparse estimate smaller, and the note says why
    assert m["dense_bytes"] == count_parameters(trained.module) * 4
    assert m["sparse_bytes"] < m["dense_bytes"]
    assert "not smaller" in ctx.metrics["prune_magnitude_size_note"]
    assert not any("speed" in k or "latency" in k for k in m)
    # bookkeeping; the input model is untouched
    assert pruned.details["teacher_metrics"] == trained.metrics
    assert pruned.hyperparameters["hidden"] == 128 and pruned.hyperparameters["prune_magnitude"]["sparsity"] == 0.5
    assert ctx.metrics["prune_magnitude_sparsity"] == m["sparsity"]
    assert all(np.array_equal(before[k], v) for k, v in trained.module.state_dict().items())


def test_magnitude_is_seeded(trained, splits, stage_ctx):
    config = PruneMagnitude.Config(sparsity=0.7, fine_tune_epochs=2)
    a = PruneMagnitude(config).compress(trained, splits, stage_ctx("a", seed=5)).module.state_dict()
    b = PruneMagnitude(config).compress(trained, splits, stage_ctx("b", seed=5)).module.state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_structured_halves_widths_and_exports_smaller(trained, splits, stage_ctx, tmp_path):
    import onnx
    import torch

    from plugins.export_onnx import export_module, verify_onnx

    ctx = stage_ctx("compress", seed=1)
    pruned = PruneStructured(PruneStructured.Config(amount=0.5, fine_tune_epochs=10)).compress(trained, splits, ctx)
    m = pruned.metrics
    assert hidden_sizes(pruned.module) == [64, 64] and hidden_sizes(trained.module) == [128, 128]
    assert (m["hidden1_neurons_before"], m["hidden1_neurons_after"]) == (128, 64)
    assert (m["hidden2_neurons_before"], m["hidden2_neurons_after"]) == (128, 64)
    assert m["parameters_after"] <= 0.6 * m["parameters_before"]
    assert m["parameters_after"] == count_parameters(pruned.module)
    assert abs(m["accuracy_delta"]) <= 0.03
    assert pruned.details["teacher_metrics"] == trained.metrics
    assert pruned.hyperparameters["hidden_sizes"] == pruned.hyperparameters["hidden"] == [64, 64]
    assert pruned.hyperparameters["model"] == "mlp"
    assert pruned.hyperparameters["prune_structured"]["amount"] == 0.5
    assert ctx.metrics["prune_structured_parameters_after"] == m["parameters_after"]
    # standardization and Dropout/ReLU kept
    kinds = [type(layer).__name__ for layer in pruned.module.body]
    assert kinds == ["Linear", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert torch.equal(pruned.module.standardize.mean, trained.module.standardize.mean)

    # the state_dict loads with weights_only into the module the model component rebuilds
    from plugins.model_mlp import MLPModel

    buf = io.BytesIO()
    torch.save(pruned.module.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    x_test, _ = splits.arrays("test")
    rebuilt = rebuild_pruned_module(MLPModel, pruned.hyperparameters, x_test.shape[1], 2, state)
    with torch.no_grad():
        assert torch.allclose(rebuilt(torch.tensor(x_test)), pruned.module(torch.tensor(x_test)))

    # and exports: a smaller ONNX file that onnxruntime runs like torch
    big = export_module(trained.module, x_test[:8], tmp_path / "full" / "model.onnx")
    small = export_module(pruned.module, x_test[:8], tmp_path / "pruned" / "model.onnx")
    onnx.checker.check_model(str(small))
    assert small.stat().st_size < 0.6 * big.stat().st_size
    check = verify_onnx(small, pruned.module, x_test, atol=1e-4)
    assert check["ort_vs_torch_agreement"] == 1.0


def test_structured_incoming_x_outgoing_and_sequential(trained, splits, stage_ctx):
    import torch

    # an nn.Sequential with the standardization first works too
    seq = torch.nn.Sequential(copy.deepcopy(trained.module.standardize), *copy.deepcopy(trained.module.body)).eval()
    model = TrainedModel(seq, trained.schema, trained.classes, trained.metrics, {"hidden": 128})
    config = PruneStructured.Config(amount=0.25, fine_tune_epochs=0, importance="incoming_x_outgoing")
    pruned = PruneStructured(config).compress(model, splits, stage_ctx())
    assert hidden_sizes(pruned.module) == [96, 96]
    assert pruned.metrics["fine_tune_best_epoch"] == 0


def _components_with(*models):
    """The installed components plus ``models`` (a plugin module registering them)."""
    import types

    from framework import hookimpl
    from framework.plugins import Components, get_plugin_manager

    plugin = types.ModuleType("extra_models")
    plugin.register_models = hookimpl(lambda: list(models))
    return Components.collect(get_plugin_manager(extra=[plugin]))


def test_structured_rebuilds_through_the_model_that_trained_it(trained, splits, stage_ctx, monkeypatch):
    """Any model whose build takes per-layer widths is pruned; one that cannot fails naming itself."""
    import framework.plugins
    from plugins.model_mlp import MLPModel

    class WidthsMLP(MLPModel):  # a third party's model that supports pruning
        name = "widths_mlp"
        built: list = []

        def build(self, hp, n_features, n_classes, mean=None, std=None):
            WidthsMLP.built.append(hp["hidden"])
            return super().build(hp, n_features, n_classes, mean, std)

    class FixedMLP(MLPModel):  # ignores per-layer widths: cannot hold a pruned network
        name = "fixed_mlp"

        def build(self, hp, n_features, n_classes, mean=None, std=None):
            return super().build({**hp, "hidden": 128, "layers": 2}, n_features, n_classes, mean, std)

    components = _components_with(WidthsMLP, FixedMLP)
    monkeypatch.setattr(framework.plugins, "default_components", lambda: components)
    config = PruneStructured.Config(amount=0.5, fine_tune_epochs=0)

    def named(model: str) -> TrainedModel:
        return dataclasses.replace(trained, hyperparameters={**trained.hyperparameters, "model": model})

    pruned = PruneStructured(config).compress(named("widths_mlp"), splits, stage_ctx())
    assert WidthsMLP.built == [[64, 64]] and hidden_sizes(pruned.module) == [64, 64]
    with pytest.raises(StageError, match=r"compress \(prune_structured\): model 'fixed_mlp' cannot rebuild the pruned "
                                         r"network from its hyperparameters \(RuntimeError: .*size mismatch"):
        PruneStructured(config).compress(named("fixed_mlp"), splits, stage_ctx())
    with pytest.raises(StageError, match=r"unknown model type 'mlp_v9'.*Known: .*mlp"):
        PruneStructured(config).compress(named("mlp_v9"), splits, stage_ctx())


def test_structured_refuses_unprunable_layers(trained, splits, stage_ctx):
    import torch

    body = copy.deepcopy(trained.module.body)
    seq = torch.nn.Sequential(body[0], torch.nn.BatchNorm1d(128), *list(body)[1:])
    model = TrainedModel(seq, trained.schema, trained.classes, trained.metrics)
    with pytest.raises(StageError, match=r"layer 1 \(BatchNorm1d\)"):
        PruneStructured().compress(model, splits, stage_ctx())

    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(30, 2)

        def forward(self, x):
            return self.a(x)

    with pytest.raises(StageError, match=r"cannot prune a Odd"):
        PruneStructured().compress(TrainedModel(Odd(), trained.schema, trained.classes, {}), splits, stage_ctx())
    single = torch.nn.Sequential(torch.nn.Linear(30, 2))
    with pytest.raises(StageError, match="no hidden layer"):
        PruneStructured().compress(TrainedModel(single, trained.schema, trained.classes, {}), splits, stage_ctx())


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (PruneMagnitude, {"sparsity": 1.0}, r"compress\[0\]\.sparsity: must be strictly between 0 and 1"),
        (PruneMagnitude, {"sparsity": 0}, r"compress\[0\]\.sparsity"),
        (PruneMagnitude, {"fine_tune_epochs": -1}, r"compress\[0\]\.fine_tune_epochs: must be >= 0"),
        (PruneMagnitude, {"lr": 0}, r"compress\[0\]\.lr: must be > 0"),
        (PruneStructured, {"amount": 1.5}, r"compress\[0\]\.amount: must be strictly between 0 and 1"),
        (PruneStructured, {"batch_size": 0}, r"compress\[0\]\.batch_size: must be >= 1"),
        (PruneStructured, {"importance": "l1"}, r"compress\[0\]\.importance: 'l1' is not one of"),
    ],
)
def test_config_errors_name_the_key(cls, options, message):
    from framework.plan import validate_component_config

    config = validate_component_config(cls, options, "compress[0]")
    with pytest.raises(RecipeError, match=message):
        cls.check_config(config, "compress[0]")
    with pytest.raises(RecipeError, match=message.replace(r"\[0\]", "")):
        cls(config)
