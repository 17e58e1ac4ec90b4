"""Scheduled batch re-runs (``batch.schedule``, ``batch.lookup.recompute_stale``) while the app
keeps answering: a new data version, the clock and a stale table each re-run the Ray Data job,
the new table is loaded into the running app, and lookups sent all the while never fail."""
from __future__ import annotations

import threading
import time
import uuid

import httpx
import pytest

from framework.errors import RecipeError
from framework.registry import Registry
from framework.serving import ServedModel, deploy, shutdown_app
from framework.testing import make_stage_context
from plugins.strategy_single import SingleConfig, SingleStrategy

pytestmark = [pytest.mark.ray, pytest.mark.timeout(400)]
TOKEN = "admin-token-for-the-schedule-tests-0123456"


@pytest.fixture(scope="module")
def cars_model(tmp_path_factory):
    import torch

    from framework.components import TrainedModel
    from framework.testing.data import cars_splits
    from plugins.export_onnx import OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    tmp = tmp_path_factory.mktemp("schedule")
    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp, "features"))
    torch.set_num_threads(1)
    module = fit_in_process({"hidden": 16, "lr": 0.02}, splits, epochs=10, seed=0)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    return splits, OnnxExporter().export(trained, splits, make_stage_context(tmp, "export"))


def test_batch_re_runs_on_new_data_clock_and_staleness_while_serving(ray_session, serve_port, cars_model, tmp_path):
    from framework.run import plan_recipe
    from framework.stages.batch import BatchSchedule, run_batch
    from framework.stages.state import RunState

    splits, exported = cars_model
    frame = splits.dataset.frame.assign(car_id=[f"car-{i}" for i in range(len(splits.dataset.frame))])
    registry = Registry(tmp_path / "store")
    schema = {"features": splits.dataset.features + ["car_id"]}
    first = registry.put_data("cars_feed", frame.head(200), schema=schema)
    model = registry.put_model("cars_mlp", {"model.onnx": exported.path.read_bytes()}, {}, {})
    plan = plan_recipe(["+recipe=cars_origin", f"store.uri={tmp_path / 'store'}", "+batch.type=ray_data",
                        "+batch.data=cars_feed@latest", "+batch.key=car_id", "+batch.num_cpus=0.5",
                        "+batch.lookup.enabled=true", "+batch.lookup.max_age_s=3600",
                        "+batch.schedule.every_s=600", "+batch.schedule.on_new_data=true", "+batch.schedule.check_s=1"])
    stage = plan.stage("batch")
    served = ServedModel("primary", model.ref, exported.path.read_bytes(), exported.schema, list(exported.classes),
                         exported.input_name, exported.output_name, inputs=exported.inputs)
    name = f"it-schedule-{uuid.uuid4().hex[:6]}"
    app = deploy([served], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name,
                 admin_token=TOKEN)
    stop = threading.Event()
    statuses: list[int] = []

    def lookups():  # a client asking all the while
        with httpx.Client(timeout=30, trust_env=False) as client:
            i = 0
            while not stop.is_set():
                statuses.append(client.post(app.url + "lookup", json={"key": f"car-{i % 200}"}).status_code)
                i += 1
                time.sleep(0.01)

    try:
        state = RunState(registry=registry, splits=splits, dataset=splits.dataset, exported=exported,
                         data_version=first, model_version=model, app=app)
        ctx = make_stage_context(tmp_path, "batch")
        ctx.registry = registry
        run_batch(plan, stage, state, ctx, None)
        v1 = state.prediction_table
        assert v1.lineage["data_version"] == first.ref
        client = threading.Thread(target=lookups)
        client.start()

        schedule = BatchSchedule.from_run(plan, state, None, tmp_path / "run")
        t0 = time.time()
        assert schedule.tick(t0 + 0.5) is None  # nothing new, the clock not yet due
        assert schedule.tick(t0 + 2) is None  # checked: still the same data version
        newer = registry.put_data("cars_feed", frame.head(300), schema=schema)
        done = schedule.tick(t0 + 4)
        assert done is not None and done["reason"] == f"new data version {newer.id[:12]}" and done["rows"] == 300
        v2 = state.prediction_table
        assert v2.id != v1.id and v2.lineage["data_version"] == newer.ref
        figures = httpx.post(app.url + "-/admin/lookup", json={}, headers=app.admin_headers()).json()["lookup"]
        assert figures["table"] == v2.ref and figures["keys"] == 300

        done = schedule.tick(time.time() + 601)
        assert done is not None and done["reason"] == "every 600 s" and state.prediction_table.id != v2.id

        # a stale table is recomputed when the recipe says so
        stage.component.config.lookup.recompute_stale = True
        stage.component.config.lookup.max_age_s = 1.0
        stale = BatchSchedule.from_run(plan, state, None, tmp_path / "run")
        before = state.prediction_table.id
        done = stale.tick(time.time() + 30)
        assert done is not None and "old (max_age_s 1)" in done["reason"] and state.prediction_table.id != before
        assert stale.runs == 1 and (tmp_path / "run" / "stages" / "batch-rerun-001" / "").exists()
    finally:
        stop.set()
        shutdown_app(app)
    assert len(statuses) > 20 and set(statuses) == {200}, sorted(set(statuses))  # never a failed lookup


def test_a_schedule_on_the_runs_own_data_is_refused_at_plan_time():
    from framework.run import plan_recipe

    with pytest.raises(RecipeError, match=r"batch\.schedule\.on_new_data: watches a registered data version"):
        plan_recipe(["+recipe=cars_origin", "+batch.type=ray_data", "+batch.schedule.on_new_data=true"])
    with pytest.raises(RecipeError, match=r"batch\.lookup\.recompute_stale: needs batch\.lookup\.max_age_s > 0"):
        plan_recipe(["+recipe=cars_origin", "+batch.type=ray_data", "+batch.lookup.recompute_stale=true"])
