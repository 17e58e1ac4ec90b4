"""The train/val/test split says what it needs: too few rows, a class too small to stratify and a
test part too small for the classes are DataCheckErrors with numbers, not scikit-learn's raw
ValueError; regression targets are not stratified."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework import Dataset
from framework.errors import DataCheckError
from framework.run import plan_recipe
from framework.stages.data import split


@pytest.fixture(scope="module")
def plan():
    return plan_recipe(["+recipe=quickstart"])  # split.val 0.15, split.test 0.15, stratified


def table(labels, task="classification", name="tiny") -> Dataset:
    frame = pd.DataFrame({"x": np.arange(len(labels), dtype=float), "y": labels})
    classes = None if task == "regression" else sorted(set(labels))
    return Dataset(name, frame, ["x"], "y", task=task, classes=classes)


def test_too_few_rows_for_the_fractions(plan):
    with pytest.raises(DataCheckError) as info:
        split(plan, table([0, 1], task="regression"))
    msg = str(info.value)
    assert msg.startswith("split: data 'tiny' has 2 rows; split.val=0.15 and split.test=0.15 would leave 0 train")
    assert "needs at least 3 rows" in msg
    assert info.value.failures[0]["rows_needed"] == 3
    parts = split(plan, table([0.5, 1.5, 2.5], task="regression"))
    assert (len(parts.train), len(parts.val), len(parts.test)) == (1, 1, 1)


def test_a_class_with_one_row_is_named(plan):
    labels = ["cat"] * 10 + ["dog"] * 10 + ["axolotl"]
    with pytest.raises(DataCheckError) as info:
        split(plan, table(labels))
    msg = str(info.value)
    assert "stratified on 'y'" in msg and "'axolotl' (1 row)" in msg and "at least 2 rows of every class" in msg
    assert "split.stratify=false" in msg
    assert info.value.failures[0]["classes"] == {"axolotl": 1}


def test_a_test_part_too_small_for_the_classes(plan):
    labels = [c for c in range(10) for _ in range(2)]  # 10 classes of 2 rows: 3 test rows for 10 classes
    with pytest.raises(DataCheckError) as info:
        split(plan, table(labels))
    msg = str(info.value)
    assert "the test part of the whole table (20 rows) would get 3 rows" in msg
    assert "each of the 10 classes" in msg and "10 classes need at least 62 rows in all (the data has 20)" in msg


def test_stratification_can_be_switched_off(plan):
    labels = ["cat"] * 10 + ["dog"] * 10 + ["axolotl"]
    plan.recipe.split.stratify = False
    try:
        parts = split(plan, table(labels))
    finally:
        plan.recipe.split.stratify = True
    assert len(parts.train) + len(parts.val) + len(parts.test) == 21


def test_regression_is_not_stratified(plan):
    rng = np.random.default_rng(0)
    values = list(rng.normal(size=40))  # a value per row: stratifying would fail
    parts = split(plan, table(values, task="regression"))
    assert (len(parts.train), len(parts.val), len(parts.test)) == (28, 6, 6)


def test_a_normal_table_splits_as_before(plan):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    raw = load_iris(as_frame=True).frame
    ds = Dataset("iris", raw, [c for c in raw.columns if c != "target"], "target", classes=[0, 1, 2])
    parts = split(plan, ds)
    rest, test = train_test_split(raw, test_size=0.15, random_state=plan.recipe.seed, stratify=raw["target"])
    assert list(parts.test.index) == list(test.index)
    assert len(parts.train) + len(parts.val) == len(rest)
    assert set(parts.val["target"]) == {0, 1, 2}


def test_a_class_too_small_after_the_test_part_is_named(plan):
    labels = ["a"] * 10 + ["b"] * 2 + ["c"] * 2  # two rows each: one goes to test, one is left
    seed = plan.recipe.seed
    plan.recipe.seed = 0
    try:
        with pytest.raises(DataCheckError) as info:
            split(plan, table(labels))
    finally:
        plan.recipe.seed = seed
    msg = str(info.value)
    assert "in the rows left after the test part, 1 class has fewer than 2 rows: 'b' (1 row)" in msg
    assert "3 to put one in each of train, val and test" in msg
