"""Exporter ``onnx``: one file, features -> probabilities, verified against torch."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from framework.components import DataSplits, FeatureSpec, InputSchema, TrainedModel
from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.export_onnx import OnnxExporter, export_module, register_exporters, verify_onnx


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return breast_cancer_splits()


@pytest.fixture(scope="module")
def local_model(splits) -> TrainedModel:
    """The trainer's module, trained briefly in-process (no Ray needed to test the exporter)."""
    import torch

    from plugins.model_mlp import build_mlp as build_module

    torch.manual_seed(0)
    x, y = splits.arrays("train")
    module = build_module({"hidden": 16, "lr": 0.01, "dropout": 0.1}, x.shape[1], 2, x.mean(0), x.std(0))
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        optimizer.step()
    schema = InputSchema([FeatureSpec(n, "float") for n in splits.dataset.features])
    return TrainedModel(module=module.eval(), schema=schema, classes=list(splits.dataset.classes), metrics={})


def exporter(**options) -> OnnxExporter:
    return OnnxExporter(OnnxExporter.Config(**options))


def test_registered_and_import_is_cheap():
    assert register_exporters() == [OnnxExporter]
    code = (
        "import sys, plugins.export_onnx;"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "options, message",
    [({"opset": 5}, "export.opset: 5 is outside the supported range"), ({"atol": -1.0}, "export.atol: must be >= 0")],
)
def test_config_errors(options, message):
    with pytest.raises(RecipeError, match=message):
        exporter(**options)


def test_export_matches_torch_on_the_test_split(local_model, splits, stage_ctx):
    import onnx
    import torch

    from plugins.export_onnx import ort_session

    ctx = stage_ctx("export")
    exported = exporter().export(local_model, splits, ctx)

    assert exported.path == ctx.out_dir / "model.onnx" and exported.path.is_file()
    assert (exported.format, exported.input_name, exported.output_name) == ("onnx", "features", "probabilities")
    assert exported.schema == local_model.schema and exported.classes == ["malignant", "benign"]
    m = exported.metrics
    assert set(m) == {"max_abs_diff", "onnx_bytes", "onnx_test_accuracy", "ort_vs_torch_agreement"}
    assert m["max_abs_diff"] <= 1e-4 and m["ort_vs_torch_agreement"] == 1.0
    assert m["onnx_bytes"] == exported.path.stat().st_size
    assert ctx.metrics["max_abs_diff"] == m["max_abs_diff"]

    # one input [batch, 30] with a symbolic batch, one output; opset as configured
    proto = onnx.load(str(exported.path))
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, out.name) == ("features", "probabilities")
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == 30
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {17}

    # raw features in, probabilities out; accuracy as torch's
    x, y = splits.arrays("test")
    probs = ort_session(exported.path).run(["probabilities"], {"features": x})[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        torch_pred = local_model.module(torch.tensor(x)).argmax(1).numpy()
    assert m["onnx_test_accuracy"] == pytest.approx(float(np.mean(torch_pred == y)))
    for batch in (1, 3, len(x)):
        assert ort_session(exported.path).run(None, {"features": x[:batch]})[0].shape == (batch, 2)


def test_dynamo_exporter_also_works(local_model, splits, stage_ctx):
    exported = exporter(dynamo=True).export(local_model, splits, stage_ctx("export"))
    assert exported.metrics["max_abs_diff"] <= 1e-4 and exported.metrics["ort_vs_torch_agreement"] == 1.0


def test_dynamo_needs_two_example_rows(local_model, tmp_path):
    x, _ = breast_cancer_splits().arrays("test")
    with pytest.raises(ValueError, match="at least 2 rows"):
        export_module(local_model.module, x[:1], tmp_path / "m.onnx", dynamo=True)


def test_verification_catches_a_file_that_does_not_reproduce_the_model(local_model, splits, tmp_path):
    import onnx
    from onnx import numpy_helper

    x, _ = splits.arrays("test")
    path = export_module(local_model.module, x[:8], tmp_path / "model.onnx")
    assert verify_onnx(path, local_model.module, x, atol=1e-4)["max_abs_diff"] <= 1e-4

    # corrupt the first layer's weights in the file: the verification must notice
    proto = onnx.load(str(path))
    weights = [t for t in proto.graph.initializer if numpy_helper.to_array(t).ndim == 2]
    first = weights[0]
    first.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(first) + 0.5, first.name))
    onnx.save(proto, str(tmp_path / "corrupt.onnx"))
    with pytest.raises(StageError, match=r"max \|probability difference\| = [0-9.e+-]+ > atol 0.0001"):
        verify_onnx(tmp_path / "corrupt.onnx", local_model.module, x, atol=1e-4)


def test_verification_tolerance_is_enforced(local_model, splits, tmp_path):
    x, _ = splits.arrays("test")
    path = export_module(local_model.module, x[:8], tmp_path / "model.onnx")
    diff = verify_onnx(path, local_model.module, x, atol=1.0)["max_abs_diff"]
    if diff > 0:  # float kernels usually differ in the last bits; then atol=0 must fail
        with pytest.raises(StageError, match="onnxruntime and torch disagree"):
            verify_onnx(path, local_model.module, x, atol=0.0)


@pytest.mark.ray
def test_exports_a_tune_trained_model(ray_session, splits, stage_ctx):
    from plugins.train_tune import TuneTrainer

    config = TuneTrainer.Config(num_samples=1, max_epochs=5)
    model = TuneTrainer(config).fit(splits, stage_ctx("train"))
    exported = exporter().export(model, splits, stage_ctx("export"))
    assert exported.metrics["max_abs_diff"] <= 1e-4
    assert exported.metrics["onnx_test_accuracy"] == pytest.approx(model.metrics["test_accuracy"])
