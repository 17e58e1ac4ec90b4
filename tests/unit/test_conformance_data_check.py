"""Every built-in data check passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations


from framework.testing import DataCheckContract
from plugins.check_hygiene import DuplicatesCheck
from plugins.check_labels import LabelIssuesCheck
from plugins.check_outliers import OutliersCheck
from plugins.check_pandera import FeatureRule, PanderaSchemaCheck
from plugins.check_pii import PiiCheck


def _with_bad_cells(dataset):
    """Two broken cells: a missing feature value and an infinite one."""
    frame = dataset.frame
    frame.loc[frame.index[3], dataset.features[0]] = float("nan")
    frame.loc[frame.index[7], dataset.features[1]] = float("inf")
    return dataset


class TestPanderaBlockingContract(DataCheckContract):
    check_cls = PanderaSchemaCheck

    def invalid_config(self):
        return PanderaSchemaCheck.Config(features=FeatureRule(dtype="decimal"))

    def bad_dataset(self):  # blocking: raises DataCheckError naming the rows
        return _with_bad_cells(self.make_dataset())



class TestPanderaReportingContract(DataCheckContract):
    check_cls = PanderaSchemaCheck

    def make_config(self):
        return PanderaSchemaCheck.Config(blocking=False, min_rows=10)

    def bad_dataset(self):  # not blocking: a failed report
        return _with_bad_cells(self.make_dataset())


# -- the hygiene, label, outlier, PII and reference checks --------------------------------------
def _with_repeated_rows(dataset):
    frame = dataset.frame
    dataset.frame = __import__("pandas").concat([frame, frame.iloc[:3]])
    dataset.frame.index = range(len(dataset.frame))
    return dataset


def _separable(n: int = 300, seed: int = 0):
    """Two well separated classes, no label noise and no outliers: what a label / outlier
    check must pass."""
    import numpy as np
    import pandas as pd

    from framework.components import Dataset

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, 4)) * 0.5 + y[:, None] * 4.0
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(4)])
    frame["label"] = np.where(y == 1, "yes", "no")
    return Dataset("separable", frame, [f"f{i}" for i in range(4)], "label", classes=["no", "yes"])


class TestDuplicatesContract(DataCheckContract):
    check_cls = DuplicatesCheck

    def invalid_config(self):
        return DuplicatesCheck.Config(near=-1.0)

    def bad_dataset(self):
        return _with_repeated_rows(self.make_dataset())


class TestLabelIssuesContract(DataCheckContract):
    check_cls = LabelIssuesCheck

    def make_config(self):
        return LabelIssuesCheck.Config(folds=3)

    def invalid_config(self):
        return LabelIssuesCheck.Config(folds=1)

    def make_dataset(self):
        return _separable()

    def bad_dataset(self):
        dataset = _separable()
        flipped = dataset.frame.index[:15]
        dataset.frame.loc[flipped, "label"] = dataset.frame.loc[flipped, "label"].map({"yes": "no", "no": "yes"})
        return dataset


class TestOutliersContract(DataCheckContract):
    check_cls = OutliersCheck

    def invalid_config(self):
        return OutliersCheck.Config(max_share=2.0)

    def make_dataset(self):
        return _separable()

    def bad_dataset(self):
        dataset = _separable()
        poisoned = dataset.frame.index[:4]
        dataset.frame.loc[poisoned, ["f0", "f1", "f2", "f3"]] = 40.0  # far away, and labelled against the cluster
        dataset.frame.loc[poisoned, "label"] = "no"
        return dataset


class TestPiiContract(DataCheckContract):
    check_cls = PiiCheck

    def invalid_config(self):
        return PiiCheck.Config(default="shout")

    def bad_dataset(self):
        dataset = self.make_dataset()
        dataset.frame["contact"] = "nobody"
        dataset.frame.loc[dataset.frame.index[5], "contact"] = "write to jane.doe@example.com"
        return dataset
