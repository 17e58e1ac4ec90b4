"""The typed-data recipes end to end: a user's CSV with strings and missing values goes from
recipe to a served model that takes raw rows (no plugin written), and a regression serves
numbers. Each trains briefly (2 Tune trials, few epochs), serves, and sends raw rows over HTTP."""
from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest

from framework.plugins import default_components
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

CSV = Path(__file__).resolve().parents[2] / "recipes" / "data" / "cars.csv"


def run(recipe: str, base: Path, serve_port: int, *extra: str):
    plan = plan_recipe([f"+recipe={recipe}", f"data.path={CSV}", f"store.uri={base / 'store'}",
                        f"runs_dir={base / 'runs'}", f"serve.port={serve_port}", "train.max_epochs=10",
                        "serve.keep_serving=false", *extra])
    return plan, execute(plan, default_components(), Reporter(quiet=True), keep_serving=False)


class Probe:
    """Sends raw rows while the app is up (between online_eval and monitor) and keeps the answers."""

    def __init__(self, url: str, rows: list[dict]):
        self.url, self.rows, self.answers = url, rows, {}

    def send(self):
        post = lambda body: httpx.post(self.url + "predict", json=body, timeout=20)  # noqa: E731
        self.answers["rows"] = post({"instances": self.rows}).json()
        self.answers["explain"] = post({"instances": self.rows[:1], "explain": True}).json()
        self.answers["bad"] = post({"instances": [{**self.rows[0], "Cylinders": "four"}]})
        self.answers["schema"] = httpx.get(self.url + "schema", timeout=10).json()


def with_probe(monkeypatch, probe: Probe):
    """Run the probe right after online_eval: the served app is still up then."""
    import framework.stages.serve as serve_stage

    original = serve_stage.run_online_eval

    def run_online_eval(plan, stage, state, ctx, components):
        original(plan, stage, state, ctx, components)
        probe.send()

    monkeypatch.setattr(serve_stage, "run_online_eval", run_online_eval)


def csv_rows(*makes: str) -> list[dict]:
    """Real rows of recipes/data/cars.csv, the first of each make, as JSON instances (nulls kept)."""
    import pandas as pd

    from framework.components import raw_instances

    frame = pd.read_csv(CSV)
    picked = pd.concat([frame[frame["Make"] == make].head(1) for make in makes])
    return raw_instances(picked, [c for c in frame.columns if c != "Origin"])


#: a toyota, a ford without a Horsepower figure, and a make never seen in training
ROWS = csv_rows("toyota", "ford")
ROWS[1]["Horsepower"] = None
ROWS.append({**ROWS[0], "Make": "a make never seen"})


def test_csv_with_strings_and_missing_values_serves_raw_rows(ray_session, serve_port, tmp_path, monkeypatch):
    probe = Probe(f"http://127.0.0.1:{serve_port}/", ROWS)
    with_probe(monkeypatch, probe)
    plan, result = run("cars_origin", tmp_path, serve_port, "online_eval.rows=20")
    metrics = {s.stage: s.metrics for s in result.stages}
    assert result.status == "ok"
    assert metrics["features"]["categorical"] == 1 and metrics["features"]["nullable"] == 2
    assert metrics["train"]["test_accuracy"] >= 0.8
    assert metrics["online_eval"]["agreement"] == 1.0 and metrics["online_eval"]["max_abs_diff"] <= 1e-5

    answer = probe.answers["rows"]
    assert answer["predictions"][0] == "Japan" and answer["predictions"][1] == "USA"
    assert len(answer["probabilities"]) == 3 and all(abs(sum(p) - 1) < 1e-4 for p in answer["probabilities"])
    assert len(probe.answers["explain"]["explanations"][0]) == 8
    bad = probe.answers["bad"]
    assert bad.status_code in (400, 422) and bad.json()["error"]["field"] == "instances[0].Cylinders"
    fields = {f["name"]: f for f in probe.answers["schema"]["features"]}
    assert fields["Make"]["dtype"] == "category" and "toyota" in fields["Make"]["categories"]
    assert fields["Horsepower"]["nullable"] and not fields["Weight_in_lbs"]["nullable"]

    registry = Registry(str(tmp_path / "store"))
    version = registry.get("cars_origin_mlp@prod", kind="model")
    manifest = json.loads(registry.read_file(version, "serving.json"))
    assert manifest["inputs"]["categorical_columns"] == ["Make"]
    assert manifest["baseline"][0] in fields["Make"]["categories"]  # explain's average case: the most frequent make
    assert "task" not in manifest  # a classification's manifest is as before


def test_regression_recipe_serves_numbers(ray_session, serve_port, tmp_path, monkeypatch):
    # the target is not a feature; Origin is
    rows = [{**{k: v for k, v in r.items() if k != "Miles_per_Gallon"}, "Origin": o}
            for r, o in zip(ROWS, ("Japan", "USA", "Europe"))]
    probe = Probe(f"http://127.0.0.1:{serve_port}/", rows)
    with_probe(monkeypatch, probe)
    plan, result = run("cars_mpg", tmp_path, serve_port, "online_eval.rows=20", "gates.thresholds.r2.min=0.5")
    metrics = {s.stage: s.metrics for s in result.stages}
    assert result.status == "ok"
    assert metrics["data"]["rows_dropped_missing_target"] == 8
    assert metrics["train"]["test_r2"] >= 0.5 and "test_accuracy" not in metrics["train"]
    assert metrics["gate"]["r2"] >= 0.5 and metrics["gate"]["mae"] > 0
    assert metrics["online_eval"]["agreement"] == 1.0

    answer = probe.answers["rows"]
    assert "probabilities" not in answer and all(isinstance(v, float) for v in answer["predictions"])
    assert answer["predictions"][0] > answer["predictions"][1]  # a light toyota beats a heavy V8 ford
    assert all(5 < v < 60 for v in answer["predictions"])  # miles per gallon, not standardized units
    assert probe.answers["schema"]["task"] == "regression"
    explanation = probe.answers["explain"]["explanations"][0]
    assert len(explanation) == 8 and all(isinstance(v, float) for _, v in explanation)

    registry = Registry(str(tmp_path / "store"))
    version = registry.get("cars_mpg_mlp@prod", kind="model")
    card = json.loads(registry.read_file(version, "model_card.json"))
    assert card["training"]["task"] == "regression" and set(card["slices"]["usa"]) >= {"mse", "mae", "r2", "n"}
    assert "mean squared error increase" in registry.read_file(version, "model_card.md").decode()
    assert np.isfinite(card["metrics"]["r2"])
