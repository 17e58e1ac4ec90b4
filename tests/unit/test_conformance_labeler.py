"""The labeler kit: on a small labeler defined here (it rewrites the target) and on every built-in one."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Dict

from framework import Dataset, Labeler, RecipeError
from framework.testing import LabelerContract

from plugins.label_active import ActiveLearning
from plugins.label_migration import SchemaMigration
from plugins.label_weak import WeakSupervision


class RenameClasses(Labeler):
    """Relabels the target through a mapping (e.g. merge fine classes into coarse ones)."""

    name = "rename_classes"
    summary = "map target values to new labels"

    @dataclass
    class Config:
        mapping: Dict[str, str] = field(default_factory=lambda: {"malignant": "positive", "benign": "negative"})

    @classmethod
    def check_config(cls, config, key, refs=None):
        if not config.mapping:
            raise RecipeError(f"{key}.mapping: give at least one 'old: new' pair")

    def label(self, dataset, ctx):
        frame = dataset.frame.copy()
        frame[dataset.target] = frame[dataset.target].map(lambda v: self.config.mapping.get(str(v), v))
        classes = sorted({self.config.mapping.get(str(c), c) for c in dataset.classes or frame[dataset.target].unique()})
        return dataclasses.replace(dataset, frame=frame, classes=classes)


class TestRenameClassesContract(LabelerContract):
    labeler_cls = RenameClasses

    def invalid_config(self):
        return RenameClasses.Config(mapping={})


def test_the_small_labeler_really_relabels():
    from framework.testing.data import breast_cancer_splits

    dataset: Dataset = breast_cancer_splits().dataset
    labeled = RenameClasses().label(dataset, None)
    assert labeled.classes == ["negative", "positive"]
    assert set(labeled.frame[labeled.target]) == {"negative", "positive"}


class TestWeakSupervisionContract(LabelerContract):
    labeler_cls = WeakSupervision

    def make_config(self):
        return WeakSupervision.Config(functions=[
            {"name": "large", "type": "threshold", "column": "mean radius", "op": ">=", "value": 16, "label": "malignant"},
            {"name": "small", "type": "threshold", "column": "mean radius", "op": "<=", "value": 12, "label": "benign"},
            {"name": "smooth", "type": "threshold", "column": "worst concave points", "op": "<", "value": 0.1, "label": "benign"},
        ])

    def invalid_config(self):
        return WeakSupervision.Config(functions=[{"name": "x", "type": "regex", "column": "c", "pattern": "(a+)+", "label": "y"}])


class TestActiveLearningContract(LabelerContract):
    labeler_cls = ActiveLearning

    def make_config(self):
        return ActiveLearning.Config(strategy="entropy", batch_size=10, batches=2)

    def invalid_config(self):
        return ActiveLearning.Config(strategy="bravest")


class TestSchemaMigrationContract(LabelerContract):
    labeler_cls = SchemaMigration

    def make_config(self):
        return SchemaMigration.Config(migration={"merge": {"cancer": ["malignant"]}, "add": ["unclear"]})

    def invalid_config(self):
        return SchemaMigration.Config(migration={"split": {"benign": ["only_one"]}})
