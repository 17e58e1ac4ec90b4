"""Compressors ``int8_dynamic``, ``int8_static``, ``fp16``: smaller ONNX files, same contract."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from framework.components import DataSplits, ExportedModel
from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.compress_onnx_quantize import Fp16, Int8Dynamic, Int8Static, measure, register_compressors
from plugins.export_onnx import INPUT_NAME, OUTPUT_NAME

#: the shared model has hidden=256: weights dominate the file, so int8 storage shows in its size


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return breast_cancer_splits()


@pytest.fixture(scope="module")
def fp32_model(mlp_onnx) -> ExportedModel:
    """A 30 -> 256 -> 2 MLP (tests/conftest.py), fp32 ONNX."""
    return mlp_onnx


@pytest.fixture(scope="module")
def fp32_accuracy(fp32_model, splits) -> float:
    x, y = splits.arrays("test")
    return measure(fp32_model.path, x, y, runs=5)["accuracy"]


def _io_types(path) -> tuple[list[int], list[int]]:
    import onnx

    graph = onnx.load(str(path)).graph
    return [i.type.tensor_type.elem_type for i in graph.input], [o.type.tensor_type.elem_type for o in graph.output]


def test_registered_onnx_level_and_import_is_cheap():
    assert register_compressors() == [Int8Dynamic, Int8Static, Fp16]
    assert all(c.level == "onnx" for c in register_compressors())
    code = (
        "import sys, plugins.compress_onnx_quantize;"
        "heavy = [m for m in ('torch', 'onnx', 'onnxruntime') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


CASES = [
    (Int8Dynamic, {}),
    (Int8Dynamic, {"per_channel": True, "weight_type": "quint8", "preprocess": False}),
    (Int8Static, {}),
    (Int8Static, {"calibration_method": "entropy", "format": "qoperator", "per_channel": True}),
    (Int8Static, {"calibration_method": "percentile", "calibration_rows": 64, "preprocess": False}),
    (Fp16, {}),
    (Fp16, {"mode": "full"}),
]


@pytest.mark.parametrize("cls, options", CASES, ids=[f"{c.name}-{'-'.join(map(str, o.values())) or 'default'}" for c, o in CASES])
def test_compressed_model_keeps_contract_and_accuracy(cls, options, fp32_model, fp32_accuracy, splits, stage_ctx):
    import onnx
    from onnx import TensorProto

    ctx = stage_ctx("compress")
    out = cls(cls.Config(**options)).compress_onnx(fp32_model, splits, ctx)

    assert out.path == ctx.out_dir / "model.onnx" and out.path.exists()
    onnx.checker.check_model(str(out.path))
    assert (out.format, out.input_name, out.output_name) == ("onnx", INPUT_NAME, OUTPUT_NAME)
    assert out.schema == fp32_model.schema and out.classes == fp32_model.classes
    # the serving contract: float32 in, float32 out, whatever happens inside
    assert _io_types(out.path) == ([TensorProto.FLOAT], [TensorProto.FLOAT])

    x, y = splits.arrays("test")
    measured = measure(out.path, x, y, runs=5)
    assert abs(measured["accuracy"] - fp32_accuracy) <= 0.02
    m = out.metrics
    assert m["compression"] == cls.name
    assert m["test_accuracy"] == pytest.approx(measured["accuracy"])
    assert m["accuracy_delta"] == pytest.approx(measured["accuracy"] - fp32_accuracy)
    assert m["agreement"] >= 0.97
    assert m["size_bytes"] == out.path.stat().st_size
    assert m["size_ratio"] == pytest.approx(fp32_model.path.stat().st_size / m["size_bytes"])
    assert m["size_ratio"] > (2.0 if cls.name.startswith("int8") else 1.8)
    assert isinstance(m["slower_than_input"], bool) and m["speedup_b1"] > 0 and m["speedup_b64"] > 0
    assert ctx.metrics[f"{cls.name}_size_ratio"] == m["size_ratio"]


def test_int8_stores_int8_weights_and_fp16_float16_ones(fp32_model, splits, stage_ctx):
    import onnx
    from onnx import TensorProto

    def weight_types(path):
        return {i.data_type for i in onnx.load(str(path)).graph.initializer if len(i.dims) == 2}

    dynamic = Int8Dynamic().compress_onnx(fp32_model, splits, stage_ctx("dynamic"))
    assert weight_types(dynamic.path) == {TensorProto.INT8}
    fp16 = Fp16().compress_onnx(fp32_model, splits, stage_ctx("fp16"))
    assert weight_types(fp16.path) == {TensorProto.FLOAT16}


def test_static_calibration_rows_are_seeded(splits):
    step = Int8Static(Int8Static.Config(calibration_rows=50))
    a, b, c = (step.calibration_rows(splits, seed) for seed in (0, 0, 1))
    assert a.shape == (50, len(splits.dataset.features)) and a.dtype == np.float32
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    everything = Int8Static(Int8Static.Config(calibration_rows=10**6)).calibration_rows(splits, 0)
    assert len(everything) == len(splits.train)  # more than the split holds: all of it, once


def test_output_may_overwrite_its_input(fp32_model, splits, stage_ctx, tmp_path):
    """Two ONNX steps in one stage folder: the second reads model.onnx before writing it."""
    ctx = stage_ctx("chain")
    first = Fp16().compress_onnx(fp32_model, splits, ctx)
    second = Int8Dynamic().compress_onnx(first, splits, ctx)
    assert second.path == first.path
    assert second.metrics["input_size_bytes"] == first.metrics["size_bytes"]
    x, y = splits.arrays("test")
    assert measure(second.path, x, y, runs=5)["accuracy"] > 0.9


def test_measure_reports_size_accuracy_and_latency(fp32_model, splits):
    x, y = splits.arrays("test")
    data = fp32_model.path.read_bytes()
    from_bytes, from_path = measure(data, x, y, runs=10), measure(fp32_model.path, x, y, runs=10)
    assert from_bytes["size_bytes"] == from_path["size_bytes"] == len(data)
    assert from_bytes["accuracy"] == from_path["accuracy"] > 0.9
    for batch in (1, 64):
        assert 0 < from_path[f"latency_b{batch}_p50_ms"] <= from_path[f"latency_b{batch}_p95_ms"]


def test_fp16_full_refuses_features_beyond_float16(fp32_model, splits, stage_ctx):
    frame = splits.train.copy()
    frame[splits.dataset.features[0]] *= 1e5  # far past float16's 65504
    huge = DataSplits(splits.dataset, frame, splits.val, splits.test)
    with pytest.raises(StageError, match="float16 overflows"):
        Fp16(Fp16.Config(mode="full")).compress_onnx(fp32_model, huge, stage_ctx("huge"))
    Fp16().compress_onnx(fp32_model, huge, stage_ctx("weights"))  # float32 arithmetic: fine


def test_not_onnx_is_a_stage_error(fp32_model, splits, stage_ctx):
    other = ExportedModel(fp32_model.path, "torchscript", fp32_model.schema, fp32_model.classes, INPUT_NAME, OUTPUT_NAME)
    with pytest.raises(StageError, match=r"compress \(int8_dynamic\): needs an ONNX model"):
        Int8Dynamic().compress_onnx(other, splits, stage_ctx())


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (Int8Dynamic, {"weight_type": "int4"}, r"compress\[0\]\.weight_type: 'int4' is not one of qint8, quint8"),
        (Int8Static, {"calibration_rows": 0}, r"compress\[0\]\.calibration_rows: must be >= 1"),
        (Int8Static, {"calibration_method": "kl"}, r"compress\[0\]\.calibration_method: 'kl' is not one of"),
        (Int8Static, {"format": "qlinear"}, r"compress\[0\]\.format: 'qlinear' is not one of qdq, qoperator"),
        (Fp16, {"mode": "half"}, r"compress\[0\]\.mode: 'half' is not one of weights, full"),
    ],
)
def test_config_errors_name_the_key(cls, options, message):
    from framework.plan import validate_component_config

    config = validate_component_config(cls, options, "compress[0]")  # the planner's OmegaConf pass
    with pytest.raises(RecipeError, match=message):
        cls.check_config(config, "compress[0]")
    with pytest.raises(RecipeError, match=message.replace(r"\[0\]", "")):
        cls(config)


def test_unknown_option_is_a_recipe_error():
    from framework.plan import validate_component_config

    with pytest.raises(RecipeError, match=r"compress\[1\]"):
        validate_component_config(Int8Dynamic, {"bits": 4}, "compress[1]")
