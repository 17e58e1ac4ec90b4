"""The ``performance`` monitor: true accuracy from feedback joined by request id, accuracy
estimated before labels from calibrated confidence (CBPE), checked against the true one."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from framework import DataSplits, Dataset, ServedWindow
from framework.errors import RecipeError
from framework.monitoring import Calibration, estimate_accuracy, join_labels
from framework.testing import MonitorContract, served_window
from plugins.monitor_performance import REPORT_FILE, PerformanceMonitor


def model_answers(rng, n: int, hardness: float):
    """A calibrated classifier: confidence c, right with probability c (harder rows: lower c)."""
    confidence = 0.5 + 0.5 * rng.beta(6 - 4 * hardness, 1 + 2 * hardness, n)
    right = rng.random(n) < confidence
    return confidence, right


def window(rng, n: int, hardness: float, labelled: float, version: str = "m:1"):
    confidence, right = model_answers(rng, n, hardness)
    truth = rng.integers(0, 2, n)
    predictions = np.where(right, truth, 1 - truth)
    frame = pd.DataFrame({"x": rng.normal(size=n), "prediction": predictions, "model_version": version, "arm": "a",
                          "latency_ms": 1.0, "request_id": [f"{version}-r{i}" for i in range(n)],
                          "timestamp": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(np.arange(n), unit="s"),
                          "confidence": confidence})
    given = rng.random(n) < labelled
    feedback = pd.DataFrame({"request_id": frame["request_id"][given], "label": truth[given]})
    return frame, feedback, right.mean()


def reference(rng, n: int):
    """Labeled reference rows covering easy and hard cases, as a validation split does."""
    easy_c, easy_right = model_answers(rng, n // 2, 0.0)
    hard_c, hard_right = model_answers(rng, n - n // 2, 1.0)
    return np.concatenate([easy_c, hard_c]), np.concatenate([easy_right, hard_right])


def splits():
    frame = pd.DataFrame({"x": [0.0, 1.0], "target": [0, 1]})
    ds = Dataset("toy", frame, ["x"], "target", classes=[0, 1])
    return DataSplits(ds, frame, frame, frame)


def test_estimate_matches_the_true_accuracy_on_a_harder_slice():
    rng = np.random.default_rng(0)
    ref_c, ref_right = reference(rng, 4000)
    calibration = Calibration(ref_c, ref_right)
    assert calibration.reference_accuracy == pytest.approx(ref_right.mean())
    hard_c, hard_right = model_answers(rng, 3000, 1.0)
    est = estimate_accuracy(hard_c, calibration)
    assert est["estimated_accuracy"] == pytest.approx(hard_right.mean(), abs=0.03)
    low, high = est["estimated_interval"]
    assert low < est["estimated_accuracy"] < high and high - low < 0.05
    assert est["estimated_accuracy"] < calibration.reference_accuracy - 0.1


def test_labels_join_by_request_id_one_instance_requests_only():
    rows = pd.DataFrame({"request_id": ["a", "b", "b", "c"], "prediction": [1, 0, 1, 1]})
    feedback = pd.DataFrame({"request_id": ["a", "b", "a", "zz"], "label": [1, 0, 0, 1]})
    assert join_labels(rows, feedback).tolist() == [1, None, None, None]  # first label of "a" kept
    assert join_labels(rows, None).tolist() == [None] * 4


def test_monitor_windows_true_and_estimated_accuracy_and_alerts(stage_ctx):
    rng = np.random.default_rng(1)
    ref_c, ref_right = reference(rng, 1000)
    easy, easy_feedback, easy_acc = window(rng, 600, 0.0, 0.5)
    hard, hard_feedback, hard_acc = window(rng, 600, 1.0, 0.5)
    hard["timestamp"] += pd.Timedelta(hours=1)
    hard["request_id"] = hard["request_id"] + "-late"
    hard_feedback["request_id"] = hard_feedback["request_id"] + "-late"
    served = ServedWindow(pd.concat([easy, hard], ignore_index=True), ["x"],
                          feedback=pd.concat([easy_feedback, hard_feedback], ignore_index=True),
                          calibration={"m:1": {"confidence": ref_c.tolist(), "correct": ref_right.tolist()}})
    ctx = stage_ctx("monitor")
    report = PerformanceMonitor(PerformanceMonitor.Config(window_rows=600, accuracy_drop_max=0.02)).evaluate(
        served, splits(), ctx)

    data = json.loads((ctx.out_dir / REPORT_FILE).read_text())
    first, second = data["versions"]["m:1"]["windows"]
    assert first["labels"] == pytest.approx(300, abs=40) and second["labels"] == pytest.approx(300, abs=40)
    for w in (first, second):
        assert w["estimate_error"] == pytest.approx(abs(w["estimated_accuracy"] - w["accuracy"]))
        assert w["estimate_error"] < 0.06
        assert w["accuracy_interval"][0] < w["accuracy"] < w["accuracy_interval"][1]
    assert first["estimated_accuracy"] == pytest.approx(easy_acc, abs=0.04)
    assert second["estimated_accuracy"] == pytest.approx(hard_acc, abs=0.04)
    assert report.metrics["windows_with_labels"] == 2 and report.metrics["estimate_mae"] < 0.06
    # the harder second window alerts, estimated and true; the first does not
    assert len(report.alerts) == 2
    assert report.alerts[0].startswith("estimated accuracy of m:1") and "from 2024-01-01T01:00:00" in report.alerts[0]
    assert report.alerts[1].startswith("accuracy of m:1")


def test_config_errors():
    for bad, match in (({"accuracy_drop_max": 2.0}, "accuracy_drop_max"), ({"min_labels": 0}, "min_labels"),
                       ({"window_rows": 0}, "window_rows")):
        with pytest.raises(RecipeError, match=match):
            PerformanceMonitor(PerformanceMonitor.Config(**bad))


class TestPerformanceContract(MonitorContract):
    monitor_cls = PerformanceMonitor

    def invalid_config(self):
        return PerformanceMonitor.Config(min_labels=0)

    def make_window(self, reference):
        window = super().make_window(reference)
        window.frame["confidence"] = 0.97
        window.calibration = {"model:000000000001": {"confidence": [0.97] * 50 + [0.6] * 50,
                                                     "correct": [True] * 49 + [False] + [True] * 30 + [False] * 20}}
        return window

    def alerting_window(self, reference):
        rows = reference.test
        window = served_window(rows, reference.dataset.features, rows[reference.dataset.target].tolist())
        window.frame["confidence"] = 0.6  # every answer unsure: estimated accuracy ~0.6 against ~0.8
        window.calibration = {"model:000000000001": {"confidence": [0.97] * 50 + [0.6] * 50,
                                                     "correct": [True] * 49 + [False] + [True] * 30 + [False] * 20}}
        return window
