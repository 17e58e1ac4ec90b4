"""Batch prediction on Ray Data (``batch: {type: ray_data}``): the same answers as the online
endpoint for the same rows and model version (categorical strings, missing values, an unseen
category), a versioned prediction table tied to the model and data versions, any registered
data version scored, and bad configurations refused at plan time with the key named."""
from __future__ import annotations

import uuid

import httpx
import numpy as np
import pandas as pd
import pytest

from framework.components import raw_instances
from framework.errors import RecipeError, StageError
from framework.registry import Registry
from framework.serving import ServedModel, deploy, shutdown_app
from framework.testing import BatchPredictorContract, make_stage_context
from plugins.batch_onnx import OnnxBatchPredictor
from plugins.batch_ray import RayDataBatchPredictor
from plugins.strategy_single import SingleConfig, SingleStrategy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cars_model(tmp_path_factory):
    """cars (strings, missing numbers, an int, a bool), preprocessing merged into the ONNX file."""
    import torch

    from framework.components import TrainedModel
    from framework.testing.data import cars_splits
    from plugins.export_onnx import OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    tmp = tmp_path_factory.mktemp("batch-ray")
    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp, "features"))
    torch.set_num_threads(1)
    module = fit_in_process({"hidden": 16, "lr": 0.02}, splits, epochs=20, seed=0)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    return splits, OnnxExporter().export(trained, splits, make_stage_context(tmp, "export"))


def odd_frame(splits) -> pd.DataFrame:
    """Every row of cars, plus copies with the nullable figures missing and a make never seen."""
    frame = splits.dataset.frame.copy()
    odd = frame.head(40).copy()
    odd["Horsepower"] = np.nan
    odd["Miles_per_Gallon"] = None
    odd.loc[odd.index[::2], "Make"] = "tesla"
    odd.index = [f"odd-{i}" for i in range(len(odd))]
    return pd.concat([frame, odd])


def test_batch_on_ray_data_equals_online_for_the_same_rows(ray_session, serve_port, cars_model, tmp_path):
    splits, exported = cars_model
    frame = odd_frame(splits)
    assert frame["Horsepower"].isna().sum() >= 40 and (frame["Make"] == "tesla").any()
    ctx = make_stage_context(tmp_path, "batch")
    # batches of 32 over 4 blocks, two actors of one CPU each: answers return out of order
    predictor = RayDataBatchPredictor(RayDataBatchPredictor.Config(batch_size=32, concurrency=2, num_cpus=0.5,
                                                                  block_rows=120))
    batch = predictor.predict(exported, frame, ctx)
    assert list(batch.index) == list(frame.index) and ctx.metrics["blocks"] == 4
    assert batch["computed_at"].notna().all()
    in_process = OnnxBatchPredictor(OnnxBatchPredictor.Config(batch_size=50)).predict(exported, frame, ctx)
    assert batch["prediction"].tolist() == in_process.tolist()

    model = ServedModel("primary", "cars:batch-1", exported.path.read_bytes(), exported.schema, list(exported.classes),
                        exported.input_name, exported.output_name, inputs=exported.inputs)
    name = f"it-batch-{uuid.uuid4().hex[:6]}"
    app = deploy([model], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name)
    try:
        rows = raw_instances(frame, splits.dataset.features)
        online = []
        for start in range(0, len(rows), 200):
            answer = httpx.post(app.predict_url, json={"instances": rows[start:start + 200]}, timeout=30).json()
            assert answer["model_version"] == "cars:batch-1"
            online += answer["predictions"]
    finally:
        shutdown_app(app)
    assert online == batch["prediction"].tolist()  # every row, nulls and the unseen make included


def test_the_batch_stage_stores_a_prediction_table_tied_to_model_and_data(ray_session, cars_model, tmp_path):
    from framework.run import plan_recipe
    from framework.stages.batch import run_batch
    from framework.stages.state import RunState

    splits, exported = cars_model
    registry = Registry(tmp_path / "store")
    schema = {"features": splits.dataset.features, "target": "Origin"}
    data = registry.put_data("cars", splits.dataset.frame, schema=schema)
    model = registry.put_model("cars_mlp", {"model.onnx": exported.path.read_bytes()}, {}, {})
    plan = plan_recipe(["+recipe=cars_origin", f"store.uri={tmp_path / 'store'}", "+batch.type=ray_data",
                        "+batch.batch_size=64", "+batch.data=all"])
    stage = plan.stage("batch")
    state = RunState(registry=registry, splits=splits, dataset=splits.dataset, exported=exported,
                     data_version=data, model_version=model)
    ctx = make_stage_context(tmp_path, "batch")
    ctx.registry = registry
    run_batch(plan, stage, state, ctx, None)
    table = state.prediction_table
    assert table.kind == "prediction" and ctx.metrics["prediction_table"] == table.ref
    assert table.lineage["model_version"] == model.ref and table.lineage["data_version"] == data.ref
    stored = registry.load_predictions(table.ref)
    assert list(stored.columns) == ["key", "prediction", "computed_at"]
    assert stored["key"].tolist() == [str(i) for i in splits.dataset.frame.index]
    assert str(stored["computed_at"].dt.tz) == "UTC" and len(stored) == ctx.metrics["rows"] == 406
    expected = OnnxBatchPredictor().predict(exported, splits.dataset.frame, ctx)
    assert stored["prediction"].tolist() == expected.tolist()
    assert registry.get("cars_origin@latest", kind="prediction").id == table.id

    # any registered data version: newer cars, keyed by a column of their own
    newer = splits.dataset.frame.head(30).assign(car_id=[f"car-{i}" for i in range(30)])
    fresh = registry.put_data("cars_new", newer, schema={"features": splits.dataset.features + ["car_id"]})
    stage.component.config.data = "cars_new@latest"
    stage.component.config.key = "car_id"
    run_batch(plan, stage, state, ctx, None)
    second = registry.load_predictions(state.prediction_table)
    assert state.prediction_table.lineage["data_version"] == fresh.ref and second["key"].tolist()[:2] == ["car-0", "car-1"]

    stage.component.config.data = "no_such_data@latest"
    with pytest.raises(StageError, match="no_such_data"):
        run_batch(plan, stage, state, ctx, None)
    stage.component.config.data = "all"
    stage.component.config.concurrency = 64
    with pytest.raises(StageError, match=r"batch.num_cpus x batch.concurrency = 64 CPUs"):
        run_batch(plan, stage, state, ctx, None)


@pytest.mark.parametrize("override, message", [
    ("+batch.batch_size=0", "batch.batch_size: must be >= 1"),
    ("+batch.num_cpus=-1", "batch.num_cpus: CPUs per scoring actor"),
    ("+batch.concurrency=0", "batch.concurrency: scoring actors"),
    ("+batch.data='os.system(1)'", "batch.data: expected 'test', 'all' or a registered data version"),
    ("+batch.bogus=1", "bogus"),
])
def test_a_bad_batch_config_fails_at_plan_time(override, message):
    from framework.run import plan_recipe

    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(".", r"\.")):
        plan_recipe(["+recipe=cars_origin", "+batch.type=ray_data", override])


class TestRayDataBatchPredictorContract(BatchPredictorContract):
    """The batch predictor kit, on the session's Ray."""

    predictor_cls = RayDataBatchPredictor

    @pytest.fixture(autouse=True)
    def _ray(self, ray_session):
        yield

    def make_config(self):
        return RayDataBatchPredictor.Config(batch_size=16)  # the test rows span several batches

    def invalid_config(self):
        return RayDataBatchPredictor.Config(batch_size=0)
