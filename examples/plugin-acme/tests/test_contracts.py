"""ACME's components against the framework's conformance kits: subclass, name the component,
give the inputs the defaults do not cover. pytest collects the inherited tests."""
from __future__ import annotations

import json

import pytest

from acme_plugins.class_share import ClassShareMonitor
from acme_plugins.jsonl_source import JsonLinesSource
from acme_plugins.round_robin import RoundRobinStrategy
from framework.testing import DataSourceContract, MonitorContract, TrafficStrategyContract, served_window


class TestSampleTableContract(DataSourceContract):
    source_cls = JsonLinesSource  # the default config reads the sample table the package ships

    def invalid_config(self):
        return JsonLinesSource.Config(path="widgets.csv")


class TestOwnFileContract(DataSourceContract):
    source_cls = JsonLinesSource

    @pytest.fixture(autouse=True)
    def _table(self, tmp_path):
        self.table = tmp_path / "parts.jsonl"
        rows = [{"part": f"P{i}", "mass": 1.0 + i % 7, "volume": 2.0 * (i % 5), "grade": "AB"[i % 2]} for i in range(40)]
        self.table.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def make_config(self):
        return JsonLinesSource.Config(path=str(self.table), target="grade", features=["volume", "mass"])

    def invalid_config(self):
        return JsonLinesSource.Config(path=str(self.table), target="grade", features=["grade"])


class TestClassShareContract(MonitorContract):
    monitor_cls = ClassShareMonitor

    def invalid_config(self):
        return ClassShareMonitor.Config(max_shift=0.0)

    def alerting_window(self, reference):
        rows = reference.test  # every tumour called malignant: far from the training share
        return served_window(rows, reference.dataset.features, ["malignant"] * len(rows))


class TestRoundRobinContract(TrafficStrategyContract):
    strategy_cls = RoundRobinStrategy

    def make_config(self):
        return RoundRobinStrategy.Config(weights={"champion": 3, "challenger": 1})

    def invalid_config(self):
        return RoundRobinStrategy.Config(max_error_rate=1.5)


class TestRoundRobinRollbackContract(TrafficStrategyContract):
    strategy_cls = RoundRobinStrategy

    def make_config(self):
        return RoundRobinStrategy.Config(max_error_rate=0.05, min_requests=30)

    def behaviours(self):  # the challenger fails one request in five: the gate must roll it back
        from framework.testing import SimulatedArm

        return {"champion": SimulatedArm(error_rate=0.0), "challenger": SimulatedArm(error_rate=0.2)}
