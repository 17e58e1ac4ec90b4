"""Conformance kits for the data stages: data sources, data checks, labelers.

Subclass one in a test module, name your component, override ``make_*`` where the defaults do not
fit (see :mod:`framework.testing.component_contract` for the checks every kind shares)::

    from framework.testing import DataSourceContract, DataCheckContract

    class TestMySourceContract(DataSourceContract):
        source_cls = MySource

        def make_config(self):
            return MySource.Config(path=str(SAMPLE))

        def invalid_config(self):                   # optional: the constructor must refuse it
            return MySource.Config(path="")

    class TestMyCheckContract(DataCheckContract):
        check_cls = MyCheck

        def bad_dataset(self):                      # optional: a dataset the check must fail
            dataset = self.make_dataset()
            dataset.frame.iloc[0, 0] = float("nan")
            return dataset

Input defaults: scikit-learn's breast cancer table (:mod:`framework.testing.data`).
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, ClassVar

import pytest

from ..components import CheckReport, DataCheck, Dataset, DataSource, Labeler
from ..errors import DataCheckError
from .component_contract import ComponentContract, assert_jsonable

__all__ = ["DataCheckContract", "DataSourceContract", "LabelerContract", "assert_valid_dataset"]


def assert_valid_dataset(dataset: Any, what: str) -> None:
    """What the core relies on in a Dataset: a DataFrame whose columns hold the features (numeric:
    models get float32 arrays) and the target, and classes that cover every target value."""
    import numpy as np
    import pandas as pd

    assert isinstance(dataset, Dataset), f"{what} returned a {type(dataset).__name__}, not a Dataset"
    assert isinstance(dataset.name, str) and dataset.name, f"{what}: the dataset needs a name (data versions use it)"
    frame = dataset.frame
    assert isinstance(frame, pd.DataFrame), f"{what}: frame is a {type(frame).__name__}, not a pandas DataFrame"
    assert len(frame) > 0, f"{what}: the frame has no rows"
    assert frame.columns.is_unique, f"{what}: duplicate column names {frame.columns[frame.columns.duplicated()].tolist()}"
    assert dataset.features and all(isinstance(f, str) for f in dataset.features), f"{what}: features must be column names"
    assert len(set(dataset.features)) == len(dataset.features), f"{what}: a feature is listed twice"
    missing = [f for f in dataset.features if f not in frame.columns]
    assert not missing, f"{what}: features {missing} are not columns of the frame"
    assert dataset.target in frame.columns, f"{what}: target '{dataset.target}' is not a column of the frame"
    assert dataset.target not in dataset.features, f"{what}: the target '{dataset.target}' is also a feature"
    assert isinstance(dataset.task, str) and dataset.task, f"{what}: task must be a string"
    try:
        frame[dataset.features].to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what}: the features are not numeric ({exc}); models train on float32 arrays") from None
    if dataset.classes is not None:
        assert isinstance(dataset.classes, list), f"{what}: classes must be a list"
        assert len(set(map(repr, dataset.classes))) == len(dataset.classes), f"{what}: a class is listed twice"
        unknown = sorted(set(frame[dataset.target].unique().tolist()) - set(dataset.classes), key=repr)
        assert not unknown, f"{what}: target values {unknown[:5]} are not among classes {dataset.classes}"
    assert_jsonable(dataset.description, f"{what}: description")


def default_dataset() -> Dataset:
    """scikit-learn's breast cancer table (string classes), a fresh copy every call."""
    from .data import breast_cancer_splits

    return copy.deepcopy(breast_cancer_splits().dataset)


# ---------------------------------------------------------------------------------------------
class DataSourceContract(ComponentContract):
    """Subclass, set ``source_cls``; override ``make_config()`` / ``invalid_config()`` if needed."""

    kind = "data_source"
    component_attr = "source_cls"
    source_cls: ClassVar[type[DataSource]]
    #: the same config loads the same rows (data versions are content-addressed); False for a
    #: source whose content legitimately changes between two loads (a live table)
    repeatable: ClassVar[bool] = True

    def load(self, tmp_path) -> Dataset:
        return self.new_component().load(self.make_context(tmp_path))

    def test_load_returns_a_dataset_the_core_can_use(self, tmp_path):
        assert_valid_dataset(self.load(tmp_path), f"{self.source_cls.__name__}.load()")

    def test_load_is_repeatable(self, tmp_path):
        if not self.repeatable:
            pytest.skip(f"{type(self).__name__} declares repeatable = False")
        first, second = self.load(tmp_path / "first"), self.load(tmp_path / "second")
        assert (first.features, first.target, first.classes) == (second.features, second.target, second.classes)
        assert first.frame.equals(second.frame), "two loads with the same config gave different rows"


# ---------------------------------------------------------------------------------------------
class DataCheckContract(ComponentContract):
    """Subclass, set ``check_cls``; override ``make_dataset()`` (data it passes) and
    ``bad_dataset()`` (data it must fail: a failed report, or DataCheckError for a blocking check)."""

    kind = "data_check"
    component_attr = "check_cls"
    check_cls: ClassVar[type[DataCheck]]

    def make_dataset(self) -> Dataset:
        """A dataset the check passes (default: breast cancer)."""
        return default_dataset()

    def bad_dataset(self) -> Dataset | None:
        """A dataset the check must fail (None: skip that test)."""
        return None

    def assert_valid_report(self, report: Any, dataset: Dataset) -> None:
        name = self.check_cls.__name__
        assert isinstance(report, CheckReport), f"{name}.check() returned a {type(report).__name__}, not a CheckReport"
        assert report.check == self.check_cls.name, f"report.check is {report.check!r}, not the check's name {self.check_cls.name!r}"
        assert isinstance(report.passed, bool), "report.passed must be a bool"
        assert isinstance(report.rows_checked, int) and 0 <= report.rows_checked <= len(dataset.frame), \
            f"rows_checked {report.rows_checked!r} is not between 0 and the {len(dataset.frame)} rows"
        assert isinstance(report.failures, list) and isinstance(report.details, dict)
        assert not (report.passed and report.failures), "a passed report lists failures"
        self.assert_valid_failures(report.failures, dataset)
        assert_jsonable(dataclasses.asdict(report), "the check report")

    @staticmethod
    def assert_valid_failures(failures: list, dataset: Dataset) -> None:
        """Each failure: ``{column, check, rows}``, column one of the frame's (or None for a
        table-wide check), rows labels of the frame's index."""
        index = set(dataset.frame.index.tolist())
        # a missing column is named too, though it is not in the frame
        known = set(dataset.frame.columns) | set(dataset.features) | {dataset.target}
        for failure in failures:
            assert isinstance(failure, dict), f"a failure is a dict, got {failure!r}"
            assert {"column", "check", "rows"} <= set(failure), f"a failure needs column, check and rows: {failure}"
            assert failure["column"] is None or failure["column"] in known, f"failure names unknown column {failure['column']!r}"
            assert isinstance(failure["check"], str) and failure["check"], f"failure without a check name: {failure}"
            assert isinstance(failure["rows"], list), f"failure rows must be a list: {failure}"
            strangers = [r for r in failure["rows"] if r not in index]
            assert not strangers, f"failure rows {strangers[:5]} are not labels of the frame's index"

    def test_passes_good_data_with_a_consistent_report(self, tmp_path):
        dataset = self.make_dataset()
        report = self.new_component().check(dataset, self.make_context(tmp_path))
        self.assert_valid_report(report, dataset)
        assert report.passed, f"the check failed the kit's make_dataset(): {report.failures}"

    def test_fails_bad_data_naming_what_failed(self, tmp_path):
        dataset = self.bad_dataset()
        if dataset is None:
            pytest.skip(f"{type(self).__name__} provides no bad_dataset()")
        try:
            report = self.new_component().check(dataset, self.make_context(tmp_path))
        except DataCheckError as exc:  # a blocking check stops the run itself
            assert exc.failures, "DataCheckError without failures"
            self.assert_valid_failures(exc.failures, dataset)
            assert_jsonable(exc.failures, "DataCheckError.failures")
            return
        self.assert_valid_report(report, dataset)
        assert not report.passed, "the check passed bad_dataset()"
        assert report.failures, "a failed report must say what failed"

    def test_leaves_the_dataset_unchanged(self, tmp_path):
        dataset = self.make_dataset()
        before = dataset.frame.copy(deep=True)
        self.new_component().check(dataset, self.make_context(tmp_path))
        assert dataset.frame.equals(before), "check() modified the dataset's frame"


# ---------------------------------------------------------------------------------------------
class LabelerContract(ComponentContract):
    """Subclass, set ``labeler_cls``; override ``make_dataset()`` if needed."""

    kind = "labeler"
    component_attr = "labeler_cls"
    labeler_cls: ClassVar[type[Labeler]]

    def make_dataset(self) -> Dataset:
        return default_dataset()

    def test_label_returns_a_dataset_the_core_can_use(self, tmp_path):
        labeled = self.new_component().label(self.make_dataset(), self.make_context(tmp_path))
        assert_valid_dataset(labeled, f"{self.labeler_cls.__name__}.label()")
