"""Every built-in data check passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations


from framework.testing import DataCheckContract
from plugins.check_pandera import FeatureRule, PanderaSchemaCheck


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
