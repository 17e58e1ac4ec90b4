"""Conformance kit for monitors, and a builder of the served windows a monitor looks at.

Subclass :class:`MonitorContract` in a test module (the checks every kind shares are in
:mod:`framework.testing.component_contract`)::

    from framework.testing import MonitorContract, served_window

    class TestMyMonitorContract(MonitorContract):
        monitor_cls = MyMonitor

        def alerting_window(self, reference):       # optional: a window it must alert on
            rows = reference.test
            return served_window(rows, reference.dataset.features, predictions=["benign"] * len(rows))

By default the reference is scikit-learn's breast cancer table and the served window its test
split answered with the true labels, as the serving layer records it.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, ClassVar, Sequence

import pytest

from ..components import DataSplits, Monitor, MonitorReport, ServedWindow
from .component_contract import ComponentContract, assert_jsonable

__all__ = ["MonitorContract", "served_window"]


def served_window(rows: Any, features: Sequence[str], predictions: Sequence[Any] | None = None,
                  model_version: str = "model:000000000001", latency_ms: float = 2.0) -> ServedWindow:
    """A ServedWindow as the server records one: ``rows``' features plus ``prediction``,
    ``model_version``, ``arm``, ``latency_ms``, ``request_id`` and ``timestamp`` columns.
    ``predictions``: one answer per row (default: NaN, nothing predicted)."""
    import pandas as pd

    frame = rows[list(features)].astype("float64").reset_index(drop=True)
    n = len(frame)
    frame["prediction"] = list(predictions) if predictions is not None else [float("nan")] * n
    frame["model_version"] = model_version
    frame["arm"] = "primary"
    frame["latency_ms"] = float(latency_ms)
    frame["request_id"] = [f"r{i}" for i in range(n)]
    frame["timestamp"] = pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(range(n), unit="s")
    return ServedWindow(frame=frame, features=list(features))


class MonitorContract(ComponentContract):
    """Subclass, set ``monitor_cls``; override ``make_reference()``, ``make_window(reference)``
    and ``alerting_window(reference)`` if needed."""

    kind = "monitor"
    component_attr = "monitor_cls"
    monitor_cls: ClassVar[type[Monitor]]

    def make_reference(self) -> DataSplits:
        from .data import breast_cancer_splits

        return breast_cancer_splits()

    def make_window(self, reference: DataSplits) -> ServedWindow:
        """Served traffic like the training data: the test split, answered with its labels."""
        rows = reference.test
        return served_window(rows, reference.dataset.features, rows[reference.dataset.target].tolist())

    def alerting_window(self, reference: DataSplits) -> ServedWindow | None:
        """Served traffic the monitor must alert on (None: skip that test)."""
        return None

    def evaluate(self, window: ServedWindow, reference: DataSplits, tmp_path: Path, stage: str = "monitor") -> tuple[MonitorReport, Any]:
        ctx = self.make_context(tmp_path, stage)
        return self.new_component().evaluate(window, reference, ctx), ctx

    def assert_valid_report(self, report: Any, ctx: Any) -> None:
        what = f"{self.monitor_cls.__name__}.evaluate()"
        assert isinstance(report, MonitorReport), f"{what} returned a {type(report).__name__}, not a MonitorReport"
        assert report.monitor == self.monitor_cls.name, f"report.monitor is {report.monitor!r}, not {self.monitor_cls.name!r}"
        assert isinstance(report.metrics, dict) and all(isinstance(k, str) for k in report.metrics), \
            f"{what}: metrics must be a dict with string keys"
        assert isinstance(report.alerts, list) and all(isinstance(a, str) and a for a in report.alerts), \
            f"{what}: alerts must be a list of non-empty strings (each goes to on_alert_raised)"
        assert isinstance(report.artifacts, list)
        for artifact in report.artifacts:
            assert isinstance(artifact, str) and (Path(ctx.out_dir) / artifact).exists(), \
                f"{what}: artifact {artifact!r} is not a file in the stage folder {ctx.out_dir}"
        assert_jsonable(dataclasses.asdict(report), f"{what}: the report")

    def test_reports_on_served_traffic(self, tmp_path):
        reference = self.make_reference()
        report, ctx = self.evaluate(self.make_window(reference), reference, tmp_path)
        self.assert_valid_report(report, ctx)

    def test_an_empty_window_is_reported_not_raised(self, tmp_path):
        # nothing was served (a failed rollout, a quiet hour): the stage must still report
        reference = self.make_reference()
        window = self.make_window(reference)
        empty = ServedWindow(frame=window.frame.iloc[0:0].copy(), features=list(window.features))
        report, ctx = self.evaluate(empty, reference, tmp_path)
        self.assert_valid_report(report, ctx)

    def test_alerts_on_the_alerting_window(self, tmp_path):
        reference = self.make_reference()
        window = self.alerting_window(reference)
        if window is None:
            pytest.skip(f"{type(self).__name__} provides no alerting_window()")
        report, ctx = self.evaluate(window, reference, tmp_path)
        self.assert_valid_report(report, ctx)
        assert report.alerts, f"no alert on alerting_window(); metrics: {report.metrics}"

    def test_leaves_window_and_reference_unchanged(self, tmp_path):
        reference = self.make_reference()
        window = self.make_window(reference)
        before_window, before_train = window.frame.copy(deep=True), reference.train.copy(deep=True)
        features = copy.copy(reference.dataset.features)
        self.evaluate(window, reference, tmp_path)
        assert window.frame.equals(before_window), "evaluate() modified the served window"
        assert reference.train.equals(before_train) and reference.dataset.features == features, \
            "evaluate() modified the reference data"
