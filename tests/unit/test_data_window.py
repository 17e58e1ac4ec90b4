"""Data that keeps arriving: ``data.append`` and ``data.window`` from a recipe, through the
planner and the real data and version stages, on a real store."""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from framework import DataSource, Dataset, hookimpl
from framework.components import ColumnInfo, SourceSchema
from framework.context import RunStageContext
from framework.errors import RecipeError, StageError
from framework.plan import build_plan
from framework.plugins import Components, get_plugin_manager
from framework.recipe import compose
from framework.registry import Registry
from framework.stages.data import run_data, run_version, window_lineage
from framework.stages.state import RunState

ROWS = 60


class ArrivingRows(DataSource):
    """Batch ``batch`` of a stream: ROWS rows with a key, a day each, two classes."""

    name = "arriving_rows"

    @dataclass
    class Config:
        batch: int = 0
        timed: bool = True

    def load(self, ctx) -> Dataset:
        k = self.config.batch
        rng = np.random.default_rng(k)
        frame = pd.DataFrame({
            "id": np.arange(k * ROWS, (k + 1) * ROWS),
            "day": pd.date_range(f"2024-01-{k + 1:02d}", periods=ROWS, freq="10min"),
            "x": rng.normal(size=ROWS) + k,
            "y": np.arange(ROWS) % 2,
        })
        return Dataset("stream", frame, ["x"], "y", key="id", time="day" if self.config.timed else None)


class DeclaresTime(DataSource):
    """A source that can say at plan time whether it has a time column."""

    name = "declares_time"

    @dataclass
    class Config:
        time: str = ""

    def load(self, ctx) -> Dataset:  # pragma: no cover - planning only
        raise NotImplementedError


class DescribesNoTime(DataSource):
    name = "describes_no_time"

    def describe(self):
        described = SourceSchema([ColumnInfo("x", "float"), ColumnInfo("y", "int")], target="y")
        described.time = None  # what a source declaring "no time column" will say
        return described


class Plugin:
    @staticmethod
    @hookimpl
    def register_data_sources():
        return [ArrivingRows, DeclaresTime, DescribesNoTime]


COMPONENTS = Components.collect(get_plugin_manager(extra=[Plugin]))


def plan_for(tmp_path, data: str):
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes" / "stream.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        name: stream
        data: {data}
        train: {{type: tune, model: mlp}}
        export: {{type: onnx}}
        serve: {{enabled: false}}
    """).format(data=data))
    cfg, path = compose([f"recipes_dir={tmp_path / 'recipes'}", "+recipe=stream"])
    return build_plan(cfg, path, COMPONENTS)


def run_stages(tmp_path, plan, registry) -> tuple[RunState, dict]:
    """The data and version stages of a run; returns the state and the version stage's metrics."""
    state = RunState(registry=registry)
    for name, runner in (("data", run_data), ("version", run_version)):
        ctx = RunStageContext(name, tmp_path / "run" / name)
        runner(plan, plan.stage(name), state, ctx, COMPONENTS)
    return state, ctx.metrics


def test_the_planner_takes_append_and_window_out_of_the_data_section(tmp_path):
    plan = plan_for(tmp_path, "{type: arriving_rows, batch: 2, append: true, window: {versions: 2}}")
    data = plan.stage("data").component
    assert data.config == ArrivingRows.Config(batch=2)  # the source never sees the core's keys
    assert data.versioning.append is True and data.versioning.window.versions == 2
    assert data.describe()["versioning"] == {"append": True, "window": {"versions": 2}}
    plain = plan_for(tmp_path, "{type: arriving_rows}")
    assert plain.stage("data").component.versioning.append is False
    assert "versioning" not in plain.stage("data").component.describe()


@pytest.mark.parametrize("data, message", [
    ("{type: arriving_rows, window: {versions: 2}}", r"data.window.versions: counts appended batches; set data.append: true"),
    ("{type: arriving_rows, append: yes please}", r"data.append: expected true or false"),
    ("{type: arriving_rows, append: true, window: {versions: 0}}", r"data.window.versions: expected a whole number >= 1"),
    ("{type: arriving_rows, window: {from: '2024-01-01'}}", r"data.window.from: unknown key; use versions, since, until"),
    ("{type: arriving_rows, window: {since: 'last tuesday'}}", r"data.window.since: expected an ISO date"),
    ("{type: arriving_rows, window: {since: '2024-02-01', until: '2024-01-01'}}", r"since 2024-02-01T00:00:00 is not before until"),
    ("{type: arriving_rows, window: {since: '2024-01-01T00:00:00+00:00', until: '2024-02-01'}}", r"both with or both without a time zone"),
    ("{type: arriving_rows, window: []}", r"data.window: expected a mapping"),
    ("{type: declares_time, window: {since: '2024-01-01'}}", r"data.window.since: a time window needs the rows' time column; set data.time"),
    ("{type: describes_no_time, window: {until: '2024-01-01'}}", r"data.window.until: a time window needs the rows' time column, and data source 'describes_no_time' declares none"),
])
def test_bad_append_and_window_keys_fail_at_plan_time(tmp_path, data, message):
    with pytest.raises(RecipeError, match=message):
        plan_for(tmp_path, data)


def test_a_source_that_names_its_time_column_plans(tmp_path):
    plan = plan_for(tmp_path, "{type: declares_time, time: day, window: {since: 2024-01-02}}")
    assert plan.stage("data").component.versioning.window.since == "2024-01-02T00:00:00"


def test_append_stores_cumulative_versions_and_window_versions_trains_on_the_newest_batches(tmp_path):
    registry = Registry(tmp_path / "store")
    states = []
    for k in range(4):
        plan = plan_for(tmp_path, f"{{type: arriving_rows, batch: {k}, append: true, window: {{versions: 2}}}}")
        state, metrics = run_stages(tmp_path, plan, registry)
        states.append(state)
    version = state.data_version
    assert version.metrics["rows"] == 4 * ROWS and version.parent == states[-2].data_version.id
    assert [b["version"] for b in registry.batches(version)] == [s.data_version.id for s in states]
    assert version.schema["key"] == "id" and version.schema["time"] == "day"
    # the split cut the newest two batches only
    used = pd.concat([state.splits.train, state.splits.val, state.splits.test])
    assert sorted(used["id"]) == list(range(2 * ROWS, 4 * ROWS))
    assert metrics["data_window"] == {"versions": 2, "rows": 2 * ROWS}
    assert metrics["batches"] == 4 and metrics["stored_rows"] == 4 * ROWS and metrics["appended"] is True
    lineage = window_lineage(plan, state)
    assert lineage == {"versions": 2, "rows": 2 * ROWS, "batches": [states[2].data_version.id, version.id]}
    split = json.loads((tmp_path / "run" / "version" / "split.json").read_text())
    assert sorted(int(i) for part in ("train", "val", "test") for i in split[part]) == list(range(2 * ROWS, 4 * ROWS))
    # each appended version cost its new rows, not the whole table
    assert version.table["delta_of"] == states[-2].data_version.id and version.table["new_rows"] == ROWS

    # the same batch arriving again (a re-run) is not stored twice
    again, metrics = run_stages(tmp_path, plan, registry)
    assert again.data_version.id == version.id and metrics["appended"] is False
    assert len(registry.list("data", "stream")) == 4


def test_a_time_window_keeps_the_rows_in_range(tmp_path):
    registry = Registry(tmp_path / "store")
    for k in range(2):
        run_stages(tmp_path, plan_for(tmp_path, f"{{type: arriving_rows, batch: {k}, append: true}}"), registry)
    plan = plan_for(tmp_path, "{type: arriving_rows, batch: 2, append: true, "
                              "window: {since: '2024-01-02', until: '2024-01-03T05:00:00'}}")
    state, metrics = run_stages(tmp_path, plan, registry)
    used = pd.concat([state.splits.train, state.splits.val, state.splits.test])
    assert used["day"].min() == pd.Timestamp("2024-01-02") and used["day"].max() < pd.Timestamp("2024-01-03T05:00:00")
    assert len(used) == ROWS + 30  # all of day 2, the first 5 hours of day 3
    assert metrics["data_window"] == {"since": "2024-01-02T00:00:00", "until": "2024-01-03T05:00:00", "rows": ROWS + 30}
    assert state.data_version.metrics["rows"] == 3 * ROWS  # the version keeps every row


def test_a_time_window_without_append_filters_the_loaded_rows(tmp_path):
    plan = plan_for(tmp_path, "{type: arriving_rows, batch: 1, window: {until: '2024-01-02T05:00:00+00:00', "
                              "since: '2024-01-01T00:00:00+00:00'}}")
    state, _ = run_stages(tmp_path, plan, Registry(tmp_path / "store"))
    assert len(state.splits.dataset.frame) == 30 and state.data_version.metrics["rows"] == ROWS


def test_window_errors_at_run_time_name_the_window(tmp_path):
    registry = Registry(tmp_path / "store")
    plan = plan_for(tmp_path, "{type: arriving_rows, timed: false, window: {since: '2024-01-01'}}")
    with pytest.raises(StageError, match=r"data.window: since/until need the rows' time column, and the data source declared none"):
        run_stages(tmp_path, plan, registry)
    plan = plan_for(tmp_path, "{type: arriving_rows, window: {since: '2030-01-01'}}")
    with pytest.raises(StageError, match=r"keeps no rows .*day in \[2030-01-01T00:00:00, \+inf\)\); the stored rows' day runs from 2024-01-01"):
        run_stages(tmp_path, plan, registry)


def test_a_run_without_append_or_window_versions_as_before(tmp_path):
    registry = Registry(tmp_path / "store")
    state, metrics = run_stages(tmp_path, plan_for(tmp_path, "{type: arriving_rows, batch: 0}"), registry)
    assert state.data_version.parent is None and len(state.splits.dataset.frame) == ROWS
    assert "data_window" not in metrics and "batches" not in metrics
    assert window_lineage(plan_for(tmp_path, "{type: arriving_rows}"), state) is None
