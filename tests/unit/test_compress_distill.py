"""Compressor ``distill``: a 30 -> 128 -> 2 teacher (in-run, or registered as ONNX) distilled into a
30 -> 8 -> 2 student (Ray Tune job)."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from framework.components import DataSplits, TrainedModel
from framework.errors import RecipeError
from framework.testing.data import breast_cancer_splits
from plugins.compress_distill import DistillCompressor, DistillConfig, distillation_loss, register_compressors
from plugins.nets import count_parameters

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
    from plugins.model_mlp import build_mlp as build_module

    before = {k: v.clone() for k, v in teacher.module.state_dict().items()}
    ctx = stage_ctx("compress")
    step = DistillCompressor(DistillConfig(student={"hidden": 8}, epochs=30))
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
    assert out.details["teacher_metrics"] == teacher.metrics and out.details["teacher"] == "the trained model"
    assert out.hyperparameters["hidden"] == 8 and out.hyperparameters["distill"]["type"] == "distill"
    assert out.hyperparameters["model"] == "mlp" and out.hyperparameters["dropout"] == 0.0
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
    ("alpha", 0.0), ("alpha", 1.5), ("temperature", 0.0), ("temperature", -1.0), ("student", {"depth": 2}),
    ("student", {"lr": 0.1}), ("student", {"hidden": {"choice": [8, 16]}}), ("student", {"layers": 2}),
    ("student_model", "mlpp"), ("epochs", 0), ("lr", 0.0), ("batch_size", 0), ("num_samples", 0),
    ("cpus_per_trial", 0.0), ("teacher", "iris"), ("teacher", "a b@prod"), ("alpha", "high"),
])
def test_config_errors_name_the_key(field, value):
    with pytest.raises(RecipeError, match=rf"^compress\.{field}[.:]"):
        DistillCompressor.check_config(replace(DistillConfig(), **{field: value}), "compress")
    with pytest.raises(RecipeError, match=rf"^compress\.{field}[.:]"):
        DistillCompressor(replace(DistillConfig(), **{field: value}))


def test_alpha_one_is_valid():
    DistillCompressor.check_config(DistillConfig(alpha=1.0), "compress.0")


def test_registry_refs_are_declared_for_the_run_preflight():
    assert DistillCompressor.registry_refs(DistillConfig()) == {}
    assert DistillCompressor.registry_refs(DistillConfig(teacher="digits_cnn@prod")) == {"teacher": "digits_cnn@prod"}
    DistillCompressor.check_config(DistillConfig(teacher="digits_cnn:0123abcd"), "compress[0]")


def test_distill_from_a_registered_onnx_teacher(ray_session, teacher, splits, stage_ctx, mlp_onnx, tmp_path):
    """The teacher is a registry version (ONNX run by ONNX Runtime), not the incoming model."""
    import json

    from framework.errors import StageError
    from framework.registry import Registry

    registry = Registry(tmp_path / "store")
    manifest = {"format": "onnx", "input_name": mlp_onnx.input_name, "output_name": mlp_onnx.output_name,
                "classes": list(mlp_onnx.classes), "schema": mlp_onnx.schema.to_dict()}
    version = registry.put_model("bc_teacher", files={"model.onnx": mlp_onnx.path.read_bytes(),
                                                      "serving.json": json.dumps(manifest).encode()},
                                 metrics={}, lineage={})
    registry.set_alias("model", "bc_teacher", "prod", version.id)

    ctx = stage_ctx("compress")
    ctx.registry = registry
    step = DistillCompressor(DistillConfig(student={"hidden": 8}, epochs=20, teacher="bc_teacher@prod"))
    out = step.compress(teacher, splits, ctx)
    m = out.metrics
    assert out.details["teacher"] == f"registered {version.ref}"
    # the registered teacher (30 -> 256 -> 2, conftest's mlp_onnx), not the incoming 128-wide model;
    # counted from the ONNX initializers, so the 2 x 30 standardization constants are in
    assert m["teacher_parameters"] == 30 * 256 + 256 + 256 * 2 + 2 + 2 * 30
    assert m["accuracy_retention"] >= 0.95, m
    assert ctx.metrics["distill_teacher"] == f"registered {version.ref}"

    # a registered model over other features is refused, naming both
    from framework.testing.data import digits_splits

    digits = digits_splits()
    with pytest.raises(StageError, match=r"teacher 'bc_teacher@prod' takes features"):
        step.compress(TrainedModel(teacher.module, teacher.schema, list(range(10)), {}, {}), digits, ctx)
    # outside a run there is no registry: a clear error
    ctx.registry = None
    with pytest.raises(StageError, match="runs without a registry"):
        step.compress(teacher, splits, ctx)
