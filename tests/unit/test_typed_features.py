"""Typed features and regression without Ray: the raw-row feeds, the typed request parser, the
ONNX runner of a regression, the regression figures, and the plan-time refusals."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from framework.components import FeatureSpec, InputLayout, InputSchema, raw_instances
from framework.errors import DataCheckError, RecipeError, RequestError
from framework.metrics import regression_metrics
from framework.run import plan_recipe
from framework.serving.typed_requests import TypedRequestParser, make_parser

SCHEMA = InputSchema([
    FeatureSpec("island", "category", True, ["Biscoe", "Dream"]),
    FeatureSpec("bill_length_mm", "float", True),
    FeatureSpec("year", "int", False),
    FeatureSpec("male", "bool", True),
])
LAYOUT = InputLayout(numeric="numeric", numeric_columns=["bill_length_mm", "year", "male"],
                     categorical="categorical", categorical_columns=["island"])
ROW = {"island": "Biscoe", "bill_length_mm": 39.1, "year": 2007, "male": True}


def test_layout_feeds_of_a_frame_turn_missing_values_into_nan_and_the_token():
    frame = pd.DataFrame({
        "island": pd.Series(["Biscoe", None, "Torgersen"], dtype=object),
        "bill_length_mm": [39.1, np.nan, 40.0],
        "year": pd.array([2007, 2008, 2009], dtype="Int64"),
        "male": pd.array([True, None, False], dtype="boolean"),
    })
    feeds = LAYOUT.feeds(frame)
    numbers, strings = feeds["numeric"], feeds["categorical"]
    assert numbers.dtype == np.float32 and numbers.shape == (3, 3)
    assert np.isnan(numbers[1, 0]) and np.isnan(numbers[1, 2]) and numbers[0, 2] == 1.0 and numbers[2, 2] == 0.0
    assert strings.tolist() == [["Biscoe"], ["__missing__"], ["Torgersen"]]
    # the same rows as JSON instances, parsed as a server parses them, give the same feeds
    parsed = TypedRequestParser(SCHEMA, LAYOUT).parse({"instances": raw_instances(frame, SCHEMA.names)})
    assert np.array_equal(parsed.x["numeric"], numbers, equal_nan=True)
    assert parsed.x["categorical"].tolist() == strings.tolist()
    assert parsed.rows[1] == [None, None, 2008, None]  # the records keep raw values


def test_matrix_layout_is_the_float_matrix_of_before():
    frame = pd.DataFrame({"a": [1.5, 2.0], "b": [3, 4]})
    feeds = InputLayout.matrix("features", ["a", "b"]).feeds(frame)
    assert list(feeds) == ["features"] and np.array_equal(feeds["features"], frame.to_numpy(dtype=np.float32))


@pytest.mark.parametrize("change, field, reason", [
    ({"year": "2007"}, "instances[0].year", "expected a finite number"),
    ({"year": 2007.5}, "instances[0].year", "expected an integer"),
    ({"year": None}, "instances[0].year", "null is not allowed"),
    ({"bill_length_mm": float("inf")}, "instances[0].bill_length_mm", "expected a finite number"),
    ({"island": 3}, "instances[0].island", "expected a string"),
    ({"male": 1}, "instances[0].male", "expected true or false"),
    ({"colour": "red"}, "instances[0].colour", "unknown feature"),
])
def test_a_bad_field_is_a_4xx_naming_it(change, field, reason):
    parser = TypedRequestParser(SCHEMA, LAYOUT)
    with pytest.raises(RequestError) as info:
        parser.parse({"instances": [{**ROW, **change}]})
    assert info.value.field == field and reason in info.value.reason and 400 <= info.value.status < 500
    missing = {k: v for k, v in ROW.items() if k != "year"}
    with pytest.raises(RequestError, match="missing feature"):
        parser.parse({"instances": [missing]})


def test_nulls_where_allowed_and_unknown_categories_accepted_or_refused():
    parsed = TypedRequestParser(SCHEMA, LAYOUT).parse(
        {"instances": [{**ROW, "island": "Torgersen", "bill_length_mm": None, "male": None}]})
    assert parsed.x["categorical"][0, 0] == "Torgersen" and math.isnan(parsed.x["numeric"][0, 0])
    assert parsed.shape == (1, 4)
    refusing = TypedRequestParser(SCHEMA, InputLayout(**{**LAYOUT.to_dict(), "unknown_categories": "refuse"}))
    with pytest.raises(RequestError) as info:
        refusing.parse({"instances": [{**ROW, "island": "Torgersen"}]})
    assert info.value.field == "instances[0].island" and "known: Biscoe, Dream" in info.value.reason
    assert refusing.parse({"instances": [{**ROW, "island": None}]}).x["categorical"][0, 0] == "__missing__"


def test_make_parser_keeps_the_float_matrix_fast_path_for_numeric_models():
    from framework.serving.requests import RequestParser
    from framework.serving.types import ServedModel

    numeric = ServedModel("a", "v", b"", InputSchema([FeatureSpec("x")]), [0, 1], "features", "probabilities")
    assert type(make_parser(numeric)) is RequestParser
    typed = ServedModel("a", "v", b"", SCHEMA, [0, 1], "numeric", "probabilities", inputs=LAYOUT)
    assert type(make_parser(typed)) is TypedRequestParser


def test_a_numeric_split_without_preprocessing_names_the_columns_that_need_it():
    from framework.testing.data import cars_splits

    splits = cars_splits()
    with pytest.raises(DataCheckError) as info:
        splits.arrays("train")
    message = str(info.value)
    assert "Make (category)" in message and "Horsepower (float, missing values)" in message
    assert "features: {type: tabular}" in message


def test_regression_metrics_and_the_runner_of_a_regression():
    figures = regression_metrics([1.0, 2.0, 3.0], [1.0, 2.5, 2.5])
    assert figures["mae"] == pytest.approx(1 / 3) and figures["mse"] == pytest.approx(1 / 6)
    assert figures["r2"] == pytest.approx(1 - (0.5 / 2.0))
    assert regression_metrics([2.0, 2.0], [2.0, 2.0])["r2"] == 1.0

    from onnx import TensorProto, helper, numpy_helper

    from framework.serving.onnx_runner import OnnxRunner
    from framework.serving.types import ServedModel

    w = numpy_helper.from_array(np.array([[2.0], [1.0]], dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "W"], ["prediction"])], "linear",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    served = ServedModel("a", "v", model.SerializeToString(), InputSchema([FeatureSpec("x"), FeatureSpec("y")]), [],
                         "features", "prediction", task="regression")
    runner = OnnxRunner(served)
    out = runner.predict(np.array([[1.0, 3.0], [0.5, 0.0]], dtype=np.float32))
    assert runner.labels(out) == [5.0, 1.0] and not runner.softmax


CARS_RECIPE = ["recipes_dir=recipes", "+recipe=cars_mpg", "serve.enabled=false"]


@pytest.mark.parametrize("override, key, words", [
    (["strategy=ab", "serve.enabled=true", "+serve.models.a=this_run", "+serve.models.b='this_run#2'"], "strategy.metric",
     "judges accuracy"),
    (["strategy=canary", "serve.enabled=true", "+serve.models.champion=this_run",
      "+serve.models.challenger='this_run#2'",
      "strategy.gates.accuracy_delta_min=-0.02"], "strategy.gates.accuracy_delta_min", "judges accuracy"),
    (["compress=[{type: prune_structured}]"], "compress[0]", "works for classification and ranking"),
    (["train.metric=val_accuracy"], "train.metric", "measures classes"),
    (["gates.champion.ref=cars_mpg_mlp@prod", "gates.champion.metric=accuracy"], "gates.champion.metric",
     "does not measure a regression"),
])
def test_a_component_that_cannot_judge_a_regression_is_refused_at_plan_time(override, key, words):
    with pytest.raises(RecipeError) as info:
        plan_recipe(CARS_RECIPE + override)
    assert str(info.value).startswith(key) and words in str(info.value), str(info.value)


def test_regression_recipes_plan_and_classification_keeps_its_metric():
    plan = plan_recipe(CARS_RECIPE)
    assert plan.stage("features").enabled and plan.stage("train").component.config.metric is None
    plan_recipe(["+recipe=quickstart", "data=diabetes", "serve.enabled=false", "register.card.slices={}",
                 "~register.card.slices.large_masses", "~register.card.slices.small_masses"])
    with pytest.raises(RecipeError, match="train.metric: 'val_r2' measures a regression"):
        plan_recipe(["+recipe=quickstart", "train.metric=val_r2"])
    with pytest.raises(RecipeError, match="features.impute"):
        plan_recipe(["+recipe=quickstart", "features.impute=mode"])


def test_device_picks_a_regression_variant_by_r2_then_mae_and_measures_it():
    from framework.device import measure_variant, pick_variant

    common = {"latency_p95_ms": 0.1, "ram_mb": 1.0}
    candidates = [{"name": "fp32", "r2": 0.80, "mae": 2.0, "size_mb": 1.0, **common},
                  {"name": "int8", "r2": 0.85, "mae": 2.5, "size_mb": 0.5, **common},
                  {"name": "fp16", "r2": 0.85, "mae": 2.4, "size_mb": 0.7, **common}]
    assert pick_variant(candidates, None)["name"] == "fp16"
    assert pick_variant(candidates, {"max_size_mb": 0.6})["name"] == "int8"

    import onnx  # noqa: F401
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array([[2.0], [1.0]], dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["features", "W"], ["prediction"])], "linear",
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 2])],
                              [helper.make_tensor_value_info("prediction", TensorProto.FLOAT, ["batch", 1])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = np.array([[1.0, 3.0], [0.5, 0.0], [2.0, 1.0]], dtype=np.float32)
    figures = measure_variant(model.SerializeToString(), "features", x, np.array([5.0, 1.0, 6.0]), runs=20,
                              task="regression")
    assert figures["r2"] == pytest.approx(1 - 1 / 14.0) and figures["mae"] == pytest.approx(1 / 3)
    assert "accuracy" not in figures and figures["ram_mb"] >= 0


def test_onnx_level_compression_keeps_the_raw_typed_inputs(tmp_path):
    """int8 of a file with the preprocessing merged in: quantized weights, the same raw inputs,
    measured on the raw test rows."""
    import onnxruntime as ort

    from framework.components import TrainedModel
    from framework.testing import make_stage_context
    from framework.testing.data import cars_splits
    from plugins.compress_onnx_quantize import Int8Dynamic
    from plugins.export_onnx import OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp_path, "features"))
    module = fit_in_process({"hidden": 64, "lr": 0.02}, splits, epochs=20)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    exported = OnnxExporter().export(trained, splits, make_stage_context(tmp_path, "export"))
    compressed = Int8Dynamic().compress_onnx(exported, splits, make_stage_context(tmp_path, "int8"))
    assert compressed.inputs == exported.inputs and compressed.metrics["agreement"] >= 0.95
    session = ort.InferenceSession(str(compressed.path), providers=["CPUExecutionProvider"])
    assert {i.name for i in session.get_inputs()} == {"numeric", "categorical"}
    assert session.run(None, compressed.layout.feeds(splits.test.head(3)))[0].shape == (3, 3)
