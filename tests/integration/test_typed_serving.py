"""Typed raw rows travel with the model: the train-time prediction (torch + the fitted transform),
the offline ONNX file, batch prediction, the HTTP endpoint (Ray Serve) and the device bundle's
runner (numpy + onnxruntime, a clean process) give the same answers on rows with categorical strings, missing
values and a category never seen in training; and the request contract names each field."""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest

from framework.components import raw_instances
from framework.device import verify_bundle, write_bundle
from framework.serving import ServedModel, deploy, fetch_records, shutdown_app
from framework.testing import make_stage_context
from framework.testing.data import cars_splits
from plugins.strategy_single import SingleConfig, SingleStrategy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory):
    """cars (strings, missing numbers, an int, a bool): tabular features fitted on train, a small
    MLP trained in-process on the encoded rows, exported with the preprocessing merged in."""
    import torch

    from framework.components import TrainedModel
    from plugins.export_onnx import OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    tmp = tmp_path_factory.mktemp("typed")
    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp, "features"))
    torch.set_num_threads(1)
    module = fit_in_process({"hidden": 16, "lr": 0.02}, splits, epochs=40, seed=0)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    exported = OnnxExporter().export(trained, splits, make_stage_context(tmp, "export"))
    return splits, module, exported


def odd_rows(splits) -> list[dict]:
    """Test rows, then the same rows with every nullable feature null and an unseen make."""
    features = splits.dataset.features
    rows = raw_instances(splits.test.head(12), features)
    odd = []
    for i, row in enumerate(rows[:6]):
        changed = dict(row)
        changed["Horsepower"] = None
        changed["Miles_per_Gallon"] = None
        if i % 2 == 0:
            changed["Make"] = "tesla"  # never seen in training: the unknown bucket
        odd.append(changed)
    return rows + odd


def frame_of(rows, features):
    import pandas as pd

    return pd.DataFrame.from_records(rows, columns=features)


def test_train_onnx_http_and_device_agree_on_raw_rows(ray_session, serve_port, typed_model, tmp_path):
    import onnxruntime as ort
    import torch

    splits, module, exported = typed_model
    features = splits.dataset.features
    rows = odd_rows(splits)
    frame = frame_of(rows, features)
    classes = list(exported.classes)

    # train time: the fitted transform, then torch
    with torch.no_grad():
        trained = torch.softmax(module(torch.tensor(splits.features.transform(frame))), dim=1).numpy()
    # offline ONNX: raw feeds into the one merged file
    session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
    offline = session.run([exported.output_name], exported.layout.feeds(frame))[0]
    assert np.abs(offline - trained).max() < 1e-5
    assert {i.name for i in session.get_inputs()} == {"numeric", "categorical"}
    labels = [classes[i] for i in offline.argmax(axis=1)]
    # batch prediction: the built-in predictor over the raw frame, in batches of 5
    from plugins.batch_onnx import OnnxBatchPredictor

    batch = OnnxBatchPredictor(OnnxBatchPredictor.Config(batch_size=5)).predict(
        exported, frame, make_stage_context(tmp_path, "batch"))
    assert batch.tolist() == labels

    # the device target measures the merged file on raw feeds (RAM in a child fed through JSON)
    from framework.device import measure_variant

    test_feeds = exported.layout.feeds(splits.test)
    _, y_test = splits.arrays("test")
    figures = measure_variant(exported.path.read_bytes(), exported.input_name, test_feeds, y_test, runs=20)
    expected_accuracy = float(np.mean(session.run([exported.output_name], test_feeds)[0].argmax(axis=1) == y_test))
    assert figures["accuracy"] == expected_accuracy and figures["ram_mb"] >= 0

    # the device bundle's runner, in a clean process that loads neither torch nor the framework
    bundle = write_bundle(exported, tmp_path / "bundle", {"model_version": "typed:1"})
    check = verify_bundle(bundle, rows, labels)
    assert check["agreement"] == 1.0 and np.abs(np.asarray(check["probabilities"]) - offline).max() < 1e-6

    # HTTP: raw JSON rows, strings and nulls
    baseline = list(splits.features.baseline)
    model = ServedModel("primary", "typed:1", exported.path.read_bytes(), exported.schema, classes,
                        exported.input_name, exported.output_name, baseline=baseline, inputs=exported.inputs)
    name = f"it-typed-{uuid.uuid4().hex[:6]}"
    app = deploy([model], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name)
    try:
        answer = httpx.post(app.predict_url, json={"instances": rows}, timeout=30).json()
        assert answer["predictions"] == labels
        assert np.abs(np.asarray(answer["probabilities"]) - offline).max() < 1e-6

        schema = httpx.get(app.url + "schema", timeout=10).json()
        fields = {f["name"]: f for f in schema["features"]}
        assert fields["Make"]["dtype"] == "category" and "toyota" in fields["Make"]["categories"]
        assert fields["Horsepower"]["nullable"] is True and fields["Cylinders"]["nullable"] is False
        assert fields["Heavy"]["dtype"] == "bool" and schema["unknown_categories"] == "accept"

        good = rows[0]
        for bad, field, reason in (
            ({**good, "Cylinders": "four"}, "instances[0].Cylinders", "expected a finite number"),
            ({**good, "Cylinders": None}, "instances[0].Cylinders", "null is not allowed"),
            ({**good, "Make": 3}, "instances[0].Make", "expected a string"),
            ({**good, "Heavy": 1}, "instances[0].Heavy", "expected true or false"),
            ({**good, "Colour": "red"}, "instances[0].Colour", "unknown feature"),
            ({k: v for k, v in good.items() if k != "Acceleration"}, "instances[0].Acceleration", "missing feature"),
        ):
            resp = httpx.post(app.predict_url, json={"instances": [bad]}, timeout=10)
            assert resp.status_code == 422 or resp.status_code == 400, resp.text
            error = resp.json()["error"]
            assert error["field"] == field and reason in error["reason"], error

        explained = httpx.post(app.predict_url, json={"instances": rows[-2:], "explain": True}, timeout=10).json()
        assert [len(e) for e in explained["explanations"]] == [len(features)] * 2
        assert explained["predictions"] == labels[-2:]  # explaining does not change the answer

        records = fetch_records(app)  # raw values kept: strings and missing values
        assert "tesla" in set(records["Make"]) and records["Horsepower"].isna().any()
    finally:
        shutdown_app(app)
