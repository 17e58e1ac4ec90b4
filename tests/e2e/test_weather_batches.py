"""Data that keeps arriving, end to end (recipes/weather_batches.yaml): three dated batches of
Seattle's weather (one year per CSV file) are appended run after run; each run trains on the
newest two batches and serves raw rows over HTTP."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import pandas as pd
import pytest

from framework.plugins import default_components
from framework.registry import Registry
from framework.registry.cli import versions_command
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

BATCHES = Path(__file__).resolve().parents[2] / "recipes" / "data" / "weather"
YEARS = ("2012", "2013", "2014")


def test_three_dated_batches_are_appended_and_the_newest_two_trained_on(ray_session, serve_port, tmp_path,
                                                                         monkeypatch, capsys):
    import framework.stages.serve as serve_stage

    answers: list = []
    original = serve_stage.run_online_eval

    def run_online_eval(plan, stage, state, ctx, components):
        original(plan, stage, state, ctx, components)
        # the app is up between online_eval and the end of the run: raw rows, one a missing wind
        rows = [{"precipitation": 0.0, "temp_max": 27.8, "temp_min": 14.4, "wind": 2.1},
                {"precipitation": 21.3, "temp_max": 8.3, "temp_min": 4.4, "wind": 6.0}]
        answers.append(httpx.post(f"http://127.0.0.1:{serve_port}/predict", json={"instances": rows}, timeout=20))

    monkeypatch.setattr(serve_stage, "run_online_eval", run_online_eval)
    results = []
    for year in YEARS:
        plan = plan_recipe(["+recipe=weather_batches", f"data.path={BATCHES / f'{year}.csv'}",
                            f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                            f"serve.port={serve_port}", "train.num_samples=1", "train.max_epochs=8",
                            "online_eval.rows=20"])
        results.append(execute(plan, default_components(), Reporter(quiet=True), keep_serving=False))
    assert [r.status for r in results] == ["ok"] * 3
    data = [{s.stage: s.metrics for s in r.stages}["version"] for r in results]
    assert [d["batches"] for d in data] == [1, 2, 3] and all(d["appended"] for d in data)
    days = [len(pd.read_csv(BATCHES / f"{y}.csv")) for y in YEARS]
    # the window: the newest two batches (one while there is one)
    assert [d["data_window"]["rows"] for d in data] == [days[0], days[0] + days[1], days[1] + days[2]]

    registry = Registry(str(tmp_path / "store"))
    versions = registry.list("data", "seattle_daily")
    assert len(versions) == 3
    newest = versions[0]
    assert newest.metrics["rows"] == sum(days)
    chain, v = [], newest
    while v is not None:
        chain.append(v.id)
        v = registry.get(f"seattle_daily:{v.parent}", "data") if v.parent else None
    assert len(chain) == 3  # each version's parent is the previous one
    model = registry.get("seattle_daily@prod", "model")
    assert model.lineage["data_version"] == newest.id
    assert model.lineage["data_window"]["batches"] == [b["version"] for b in registry.batches(newest)[-2:]]

    # each run served raw rows: a dry hot day and a wet cold one get different answers
    assert len(answers) == 3 and all(a.status_code == 200 for a in answers), [a.text for a in answers]
    for a in answers:
        predictions = a.json()["predictions"]
        assert len(predictions) == 2 and set(predictions) <= {"sun", "fog", "rain", "drizzle", "snow"}
    classes = json.loads(registry.read_file(model, "serving.json"))["classes"]
    dry, wet = answers[-1].json()["probabilities"]
    assert wet[classes.index("rain")] > dry[classes.index("rain")]  # 21 mm of rain vs none

    # what changed from the first batch to the last: the added days, by key
    capsys.readouterr()
    assert versions_command(["diff", versions[-1].id[:12], newest.id[:12], "--kind", "data"],
                            str(tmp_path / "store")) == 0
    report = capsys.readouterr().out
    assert f"by key 'date': {days[1] + days[2]} added, 0 removed, 0 changed, {days[0]} unchanged" in report
