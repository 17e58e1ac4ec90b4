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
from pathlib import Path
from typing import Any, ClassVar

import pytest

from ..components import CheckReport, DataCheck, Dataset, DataSource, Labeler
from ..errors import DataCheckError
from .component_contract import ComponentContract, assert_jsonable

__all__ = ["DataCheckContract", "DataSourceContract", "LabelerContract", "assert_valid_dataset", "assert_valid_labelset"]


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
    """Subclass, set ``labeler_cls``; override ``make_config()``, ``make_dataset()`` or
    ``hidden_fraction()`` if needed.

    The kit hands ``label`` what the core does: the dataset with the labels of part of its train
    rows hidden (``hidden_fraction``), ``ctx.parts`` (a seeded train/val/test split) and
    ``ctx.annotator``, a simulated person answering from the hidden true labels through real Label
    Studio task and export files. The result must be a LabelSet (or a Dataset) the core can use."""

    kind = "labeler"
    component_attr = "labeler_cls"
    labeler_cls: ClassVar[type[Labeler]]

    def make_dataset(self) -> Dataset:
        return default_dataset()

    def hidden_fraction(self) -> float:
        """The share of the train rows whose labels the labeler does not see."""
        return 0.5

    def make_labeling(self, tmp_path) -> tuple[Dataset, Any, Any]:
        """(the dataset as the labeler sees it, the context, the true labels)."""
        import numpy as np
        import pandas as pd

        from ..labels.studio import StudioAnnotator

        dataset = self.make_dataset()
        frame = dataset.frame
        rng = np.random.default_rng(0)
        parts = pd.Series(rng.choice(["train", "val", "test"], size=len(frame), p=[0.7, 0.15, 0.15]), index=frame.index)
        train = frame.index[(parts == "train").to_numpy()]
        hidden = train[rng.random(len(train)) < self.hidden_fraction()]
        truth = frame[dataset.target].copy()
        shown = frame.copy()
        shown[dataset.target] = shown[dataset.target].astype("object")
        shown.loc[hidden, dataset.target] = None
        ctx = self.make_context(tmp_path)
        ctx.parts = parts
        ctx.annotator = StudioAnnotator(Path(tmp_path) / "label_studio", "simulated", truth,
                                        [c for c in frame.columns if c != dataset.target])
        return dataclasses.replace(dataset, frame=shown), ctx, truth

    def test_label_returns_labels_the_core_can_use(self, tmp_path):
        dataset, ctx, _ = self.make_labeling(tmp_path)
        before = dataset.frame.copy()
        result = self.new_component().label(dataset, ctx)
        what = f"{self.labeler_cls.__name__}.label()"
        if isinstance(result, Dataset):  # rows whose label stays hidden are left out of training
            labeled = result.frame[result.frame[result.target].notna()] if result.target in result.frame else result.frame
            assert_valid_dataset(dataclasses.replace(result, frame=labeled), what)
        else:
            assert_valid_labelset(result, dataset, what)
        assert dataset.frame.equals(before), f"{what} modified the dataset it was given"

    def test_label_studio_files_it_asked_through_are_real_json(self, tmp_path):
        import json

        dataset, ctx, _ = self.make_labeling(tmp_path)
        self.new_component().label(dataset, ctx)
        for entry in ctx.annotator.files:
            tasks = json.loads(Path(entry["tasks"]).read_text())
            assert all("data" in t and "row_id" in t["data"] for t in tasks), f"{entry['tasks']}: tasks without data.row_id"


def assert_valid_labelset(labelset: Any, dataset: Dataset, what: str) -> None:
    """What the core relies on in a LabelSet: labels on the dataset's rows, each a class or
    missing; probabilities rows x classes in [0, 1]; a JSON-able report and lineage."""
    import numpy as np
    import pandas as pd

    from ..components import LabelSet

    assert isinstance(labelset, LabelSet), f"{what} returned a {type(labelset).__name__}, not a LabelSet or a Dataset"
    assert isinstance(labelset.labels, pd.Series), f"{what}: labels must be a pandas Series on the dataset's index"
    strangers = labelset.labels.index.difference(dataset.frame.index)
    assert not len(strangers), f"{what}: labels for rows {list(strangers[:5])} that are not the dataset's"
    assert isinstance(labelset.classes, list) and labelset.classes, f"{what}: classes must be a non-empty list"
    assert len(set(map(str, labelset.classes))) == len(labelset.classes), f"{what}: a class is listed twice"
    known = {str(c) for c in labelset.classes}
    unknown = sorted({str(v) for v in labelset.labels.dropna()} - known)
    assert not unknown, f"{what}: labels {unknown[:5]} are not among classes {labelset.classes}"
    assert labelset.labels.notna().any(), f"{what}: no row got a label"
    if labelset.probabilities is not None:
        probs = np.asarray(labelset.probabilities, dtype=float)
        assert probs.shape == (len(labelset.labels), len(labelset.classes)), \
            f"{what}: probabilities have shape {probs.shape}, expected {(len(labelset.labels), len(labelset.classes))}"
        rows = ~np.isnan(probs).any(axis=1)
        assert ((probs[rows] >= 0) & (probs[rows] <= 1)).all(), f"{what}: probabilities outside [0, 1]"
        assert np.allclose(probs[rows].sum(axis=1), 1.0, atol=1e-6), f"{what}: probability rows do not sum to 1"
    if labelset.sources is not None:
        assert labelset.sources.index.isin(dataset.frame.index).all(), f"{what}: sources for rows that are not the dataset's"
    assert_jsonable(labelset.report, f"{what}: report")
    assert_jsonable(labelset.lineage, f"{what}: lineage")
    assert_jsonable(labelset.comparison, f"{what}: comparison")
