"""The Open Inference Protocol's tensors in and out, without a server: the one-pass check and the
careful path agree, outputs are typed as the protocol says, regression metadata has no
probabilities."""
from __future__ import annotations

import numpy as np
import pytest

from framework.components import FeatureSpec, InputLayout, InputSchema
from framework.serving.oip import OipError, model_metadata, parse_infer, predictions_tensor, probabilities_tensor
from framework.serving.requests import RequestParser
from framework.serving.typed_requests import TypedRequestParser

SCHEMA = InputSchema([FeatureSpec("make", "category", nullable=True, categories=["ford", "fiat"]),
                      FeatureSpec("cylinders", "int"), FeatureSpec("power", "float", nullable=True),
                      FeatureSpec("heavy", "bool")])
LAYOUT = InputLayout(numeric="numeric", numeric_columns=["cylinders", "power", "heavy"], categorical="categorical",
                     categorical_columns=["make"])


def tensors(n: int = 2, **change) -> list[dict]:
    out = [{"name": "make", "shape": [n], "datatype": "BYTES", "data": ["ford", None][:n] + ["fiat"] * (n - 2)},
           {"name": "cylinders", "shape": [n, 1], "datatype": "INT32", "data": [4] * n},
           {"name": "power", "shape": [n], "datatype": "FP32", "data": [90.5, None][:n] + [1.0] * (n - 2)},
           {"name": "heavy", "shape": [n], "datatype": "BOOL", "data": [True, False][:n] + [True] * (n - 2)}]
    for t in out:
        t.update(change.get(t["name"], {}))
    return out


def test_typed_tensors_become_the_rows_predict_parses():
    parser = TypedRequestParser(SCHEMA, LAYOUT)
    parsed, client_id, outputs, key = parse_infer({"id": "7", "inputs": tensors(), "parameters": {"key": "u1"}},
                                                  SCHEMA, None, parser)
    expected = parser.parse({"instances": [{"make": "ford", "cylinders": 4, "power": 90.5, "heavy": True},
                                           {"make": None, "cylinders": 4, "power": None, "heavy": False}]})
    assert parsed.rows == expected.rows and client_id == "7" and key == "u1" and outputs == ["predictions", "probabilities"]
    for name in ("numeric", "categorical"):
        np.testing.assert_array_equal(parsed.x[name], expected.x[name])


def test_nested_data_takes_the_careful_path_to_the_same_rows():
    parser = TypedRequestParser(SCHEMA, LAYOUT)
    flat, *_ = parse_infer({"inputs": tensors()}, SCHEMA, None, parser)
    nested, *_ = parse_infer({"inputs": tensors(cylinders={"data": [[4], [4]]})}, SCHEMA, None, parser)
    assert flat.rows == nested.rows


@pytest.mark.parametrize("change, words", [
    ({"make": {"datatype": "FP32", "data": [1.0, 2.0]}}, "input 'make': datatype FP32 does not fit a category"),
    ({"cylinders": {"datatype": "INT8", "data": [4, 400]}}, "input 'cylinders': data[1]"),
    ({"cylinders": {"data": [4, None]}}, "input 'cylinders': row 1: null is not allowed"),
    ({"heavy": {"data": [1, 0]}}, "input 'heavy': data[0]"),
    ({"power": {"shape": [3]}}, "input 'power': shape [3] holds 3 values, data has 2"),
    ({"make": {"data": ["ford", "opel"]}}, None),  # unknown categories are accepted (the unknown bucket)
])
def test_a_bad_tensor_is_named(change, words):
    parser = TypedRequestParser(SCHEMA, LAYOUT)
    if words is None:
        parse_infer({"inputs": tensors(**change)}, SCHEMA, None, parser)
        return
    with pytest.raises(OipError) as caught:
        parse_infer({"inputs": tensors(**change)}, SCHEMA, None, parser)
    assert words in caught.value.message and caught.value.status == 400


def test_a_number_model_also_takes_one_matrix():
    schema = InputSchema([FeatureSpec("a"), FeatureSpec("b", "int")])
    parser = RequestParser(schema)
    parsed, *_ = parse_infer({"inputs": [{"name": "input", "shape": [2, 2], "datatype": "FP64",
                                          "data": [[1.5, 2], [3.0, 4]]}]}, schema, "input", parser)
    np.testing.assert_array_equal(parsed.x, np.asarray([[1.5, 2], [3, 4]], dtype=np.float32))
    with pytest.raises(OipError, match="an integer feature"):
        parse_infer({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2.5]}]},
                    schema, "input", parser)


def test_outputs_are_typed_as_the_protocol_says():
    assert predictions_tensor(["a", "b"], False)["datatype"] == "BYTES"
    assert predictions_tensor([0, 2], False) == {"name": "predictions", "datatype": "INT64", "shape": [2], "data": [0, 2]}
    assert predictions_tensor([1.5], True)["datatype"] == "FP64"
    p = probabilities_tensor(np.asarray([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32))
    assert p == {"name": "probabilities", "datatype": "FP32", "shape": [2, 2], "data": [0.25, 0.75, 1.0, 0.0]}
    meta = model_metadata("m", ["m:1"], SCHEMA, [], True, None)
    assert [o["name"] for o in meta["outputs"]] == ["predictions"] and "classes" not in meta["parameters"]
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == [("make", "BYTES"), ("cylinders", "INT64"),
                                                                   ("power", "FP32"), ("heavy", "BOOL")]
