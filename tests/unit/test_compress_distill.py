"""Compressor ``distill``: a 30 -> 128 -> 2 teacher distilled into a 30 -> 8 -> 2 student (Ray Tune job)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from framework.components import DataSplits, TrainedModel
from framework.errors import RecipeError
from framework.testing.data import breast_cancer_splits
from plugins.compress_distill import DistillCompressor, DistillConfig, distillation_loss, register_compressors
from plugins.compress_prune import count_parameters

HP = {"hidden": 128, "layers": 1, "lr": 1e-3, "dropout": 0.0}


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return breast_cancer_splits()


@pytest.fixture(scope="module")
def teacher(train_mlp_model) -> TrainedModel:
    """The trainer's module, trained 10 epochs in-process (tests/conftest.py)."""
    return train_mlp_model(HP, 10)


def test_registered():
    assert DistillCompressor in register_compressors()
    assert DistillCompressor.level == "model"


def test_distill_small_student_keeps_accuracy(ray_session, teacher, splits, stage_ctx, tmp_path):
    from plugins.export_onnx import export_module
    from plugins.train_tune_mlp import build_module

    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    ctx = stage_ctx("compress")
    step = DistillCompressor(DistillConfig(student_hidden=8, epochs=30))
    out = step.compress(teacher, splits, ctx)
    m = out.metrics

    assert m["teacher_parameters"] == count_parameters(teacher.module)
    assert m["student_parameters"] == count_parameters(out.module) == 30 * 8 + 8 + 8 * 2 + 2
    assert m["parameter_ratio"] <= 0.40
    assert m["teacher_test_accuracy"] == pytest.approx(teacher.metrics["test_accuracy"])
    assert m["accuracy_retention"] >= 0.95, m
    assert m["accuracy_retention"] == pytest.approx(m["test_accuracy"] / m["teacher_test_accuracy"])
    assert (m["temperature"], m["alpha"]) == (4.0, pytest.approx(0.7))
    assert ctx.metrics["distill_accuracy_retention"] == m["accuracy_retention"]
    # the teacher is untouched; its metrics travel along
    assert all(torch.equal(before[k], v) for k, v in teacher.module.state_dict().items())
    assert out.details["teacher_metrics"] == teacher.metrics
    assert out.hyperparameters["hidden"] == 8 and out.hyperparameters["distill"]["type"] == "distill"
    # the Tune experiment sits under the stage folder
    assert (ctx.out_dir / "tune" / "distill").is_dir()

    # rebuilt from its hyperparameters + a weights-only state_dict, it is the same module
    path = tmp_path / "student.pt"
    torch.save(out.module.state_dict(), path)
    rebuilt = build_module(out.hyperparameters, 30, 2)
    rebuilt.load_state_dict(torch.load(path, weights_only=True))
    x_test, _ = splits.arrays("test")
    with torch.no_grad():
        assert torch.allclose(rebuilt.eval()(torch.tensor(x_test)), out.module(torch.tensor(x_test)))

    onnx_path = export_module(out.module, x_test[:8], tmp_path / "student.onnx")
    assert onnx_path.exists() and onnx_path.stat().st_size > 0


def test_loss_terms():
    s = torch.tensor([[2.0, -1.0], [0.5, 0.5]])
    y = torch.tensor([0, 1])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert torch.allclose(distillation_loss(s, torch.zeros(2, 2), y, 4.0, 0.0), ce)
    # soft term is zero when the student equals the teacher
    assert float(distillation_loss(s, s.clone(), y, 4.0, 1.0)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("field, value", [
    ("alpha", 0.0), ("alpha", 1.5), ("temperature", 0.0), ("temperature", -1.0), ("student_hidden", 0),
    ("student_layers", 0), ("epochs", 0), ("lr", 0.0), ("batch_size", 0), ("num_samples", 0),
    ("cpus_per_trial", 0.0), ("teacher", "iris@3"), ("alpha", "high"),
])
def test_config_errors_name_the_key(field, value):
    with pytest.raises(RecipeError, match=rf"^compress\.{field}:"):
        DistillCompressor.check_config(replace(DistillConfig(), **{field: value}), "compress")
    with pytest.raises(RecipeError, match=rf"^compress\.{field}:"):
        DistillCompressor(replace(DistillConfig(), **{field: value}))


def test_alpha_one_is_valid():
    DistillCompressor.check_config(DistillConfig(alpha=1.0), "compress.0")
