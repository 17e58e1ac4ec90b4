"""Hygiene checks on real tables: exact and near duplicates, train/test leakage, label issues
(cleanlab), outliers / suspected poisoning and KNN-Shapley valuation. Faults are injected into
scikit-learn's breast cancer and digits tables; clean tables must pass (or flag next to nothing)."""
from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pandas as pd
import pytest

from framework import Dataset
from framework.errors import RecipeError
from framework.testing.data import breast_cancer_splits
from plugins.check_hygiene import DuplicatesCheck, LeakageCheck
from plugins.check_labels import LabelIssuesCheck
from plugins.check_outliers import OutliersCheck
from plugins.check_valuation import DataValuationCheck, knn_shapley
from plugins.data_sklearn import SklearnDataSource


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    return SklearnDataSource().load(None)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return SklearnDataSource(SklearnDataSource.Config(dataset="digits")).load(None)


def with_frame(ds: Dataset, frame: pd.DataFrame) -> Dataset:
    return dataclasses.replace(ds, frame=frame)


def flip_labels(ds: Dataset, share: float, seed: int) -> tuple[Dataset, set]:
    rng = np.random.default_rng(seed)
    frame = ds.frame.copy()
    rows = rng.choice(len(frame), int(share * len(frame)), replace=False)
    y = frame["target"].to_numpy().copy()
    for i in rows:
        y[i] = rng.choice([c for c in ds.classes if c != y[i]])
    frame["target"] = y
    return with_frame(ds, frame), set(frame.index[rows].tolist())


# ---------------------------------------------------------------------------------------------
def test_exact_duplicates_flag_every_repeat_and_keep_the_first(cancer, stage_ctx):
    assert DuplicatesCheck().check(cancer, stage_ctx()).passed
    repeats = cancer.frame.loc[[10, 10, 42]].copy()
    repeats.index = [700, 701, 702]
    report = DuplicatesCheck().check(with_frame(cancer, pd.concat([cancer.frame, repeats])), stage_ctx())
    assert not report.passed and [f["row"] for f in report.flagged] == [700, 701, 702]
    assert [f["evidence"] for f in report.flagged] == ["same values as row 10", "same values as row 10",
                                                       "same values as row 42"]
    assert report.failures == [{"column": None, "check": "exact_duplicate", "count": 3, "rows": [700, 701, 702]}]


def test_near_duplicates_are_found_by_distance(cancer, stage_ctx):
    rng = np.random.default_rng(0)
    near = cancer.frame.loc[[3, 8]].copy()
    features = cancer.features
    near[features] = near[features] * (1 + rng.normal(0, 1e-4, size=near[features].shape))  # tiny jitter
    near.index = [800, 801]
    ds = with_frame(cancer, pd.concat([cancer.frame, near]))
    assert DuplicatesCheck().check(ds, stage_ctx()).passed  # not exact
    report = DuplicatesCheck(DuplicatesCheck.Config(near=0.01)).check(ds, stage_ctx())
    assert [f["row"] for f in report.flagged] == [800, 801]
    assert report.flagged[0]["reason"] == "near duplicate" and report.flagged[0]["evidence"].endswith("of row 3")
    assert report.flagged[0]["score"] < 0.01
    clean = DuplicatesCheck(DuplicatesCheck.Config(near=0.01)).check(cancer, stage_ctx())
    assert clean.passed, clean.flagged
    with pytest.raises(RecipeError, match="checks.near: a distance > 0"):
        DuplicatesCheck.check_config(DuplicatesCheck.Config(near=0.0), "checks")


def test_leakage_flags_evaluation_rows_equal_to_training_rows(stage_ctx):
    splits = breast_cancer_splits()
    assert LeakageCheck().check_splits(splits, stage_ctx()).passed
    leaked = splits.train.iloc[:4].copy()
    leaked.index = [900, 901, 902, 903]
    leaked["diagnosis"] = "malignant"  # the label does not matter: the features are the leak
    test = pd.concat([splits.test, leaked])
    report = LeakageCheck().check_splits(dataclasses.replace(splits, test=test), stage_ctx())
    assert [f["row"] for f in report.flagged] == [900, 901, 902, 903]
    assert report.flagged[0]["evidence"] == f"same features as train row {splits.train.index[0]}"
    assert report.failures[0]["check"] == "leak_train_test"
    assert LeakageCheck.checks_splits() and not LeakageCheck.checks_dataset()
    with pytest.raises(RecipeError, match="checks.parts"):
        LeakageCheck.check_config(LeakageCheck.Config(parts=["train"]), "checks")


# ---------------------------------------------------------------------------------------------
def test_label_issues_find_flipped_labels(cancer, stage_ctx):
    clean = LabelIssuesCheck().check(cancer, stage_ctx())
    assert len(clean.flagged) <= 3  # breast cancer's own label noise: next to none
    noisy, flipped = flip_labels(cancer, 0.05, seed=1)
    report = LabelIssuesCheck().check(noisy, stage_ctx())
    found = {f["row"] for f in report.flagged}
    assert len(found & flipped) / len(flipped) >= 0.8  # recall
    assert len(found & flipped) / len(found) >= 0.7  # precision (random flagging: 0.05)
    first = report.flagged[0]
    assert first["reason"] == "label issue" and 0 <= first["score"] < 0.5
    assert "model suggests" in first["evidence"]
    assert report.failures[0]["column"] == "target" and report.failures[0]["count"] == len(found)


def test_label_issues_cap_and_config(digits, stage_ctx):
    noisy, flipped = flip_labels(digits, 0.05, seed=2)
    report = LabelIssuesCheck(LabelIssuesCheck.Config(max_share=0.02)).check(noisy, stage_ctx())
    assert len(report.flagged) == int(0.02 * len(digits.frame)) and report.details["capped_at"] == len(report.flagged)
    assert len({f["row"] for f in report.flagged} & flipped) / len(report.flagged) >= 0.8  # the surest come first
    with pytest.raises(RecipeError, match="checks.model: 'svm' is unknown"):
        LabelIssuesCheck.check_config(LabelIssuesCheck.Config(model="svm"), "checks")
    regression = dataclasses.replace(digits, task="regression")
    assert LabelIssuesCheck().check(regression, stage_ctx()).passed


# ---------------------------------------------------------------------------------------------
def test_outliers_flag_injected_poison_and_show_the_model_moving(cancer, stage_ctx):
    clean = OutliersCheck().check(cancer, stage_ctx())
    assert clean.passed, clean.flagged
    # poison: a cluster of five far-off malignant tumours (features doubled) labelled benign
    poison = cancer.frame[cancer.frame["target"] == 0].iloc[:5].copy()
    poison[cancer.features] = poison[cancer.features] * 2.0
    poison["target"] = 1
    poison.index = [950, 951, 952, 953, 954]
    report = OutliersCheck().check(with_frame(cancer, pd.concat([cancer.frame, poison])), stage_ctx())
    assert {f["row"] for f in report.flagged} == set(poison.index)
    assert report.flagged[0]["reason"] == "suspected poisoning" and report.flagged[0]["score"] <= 0.05
    shift = report.details["model_shift"]
    assert shift["weights_relative_change"] > 0.05
    assert shift["kept_rows_log_loss_without"] < shift["kept_rows_log_loss_with"]


# ---------------------------------------------------------------------------------------------
def brute_force_shapley(x_train, y_train, x_val, y_val, k):
    """The Shapley value by enumerating every ordering (tiny sets only)."""
    def utility(subset):
        if not subset:
            return 0.0
        total = 0.0
        for xv, yv in zip(x_val, y_val):
            d = [np.sum((x_train[i] - xv) ** 2) for i in subset]
            nearest = [subset[i] for i in np.argsort(d, kind="stable")[:k]]
            total += sum(y_train[i] == yv for i in nearest) / k
        return total / len(x_val)

    n = len(x_train)
    values = np.zeros(n)
    for order in itertools.permutations(range(n)):
        seen: list = []
        for i in order:
            before = utility(seen)
            seen = seen + [i]
            values[i] += utility(seen) - before
    return values / math.factorial(n)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_knn_shapley_closed_form_equals_the_definition(k):
    rng = np.random.default_rng(k)
    x_train, y_train = rng.normal(size=(6, 3)), rng.integers(0, 2, 6)
    x_val, y_val = rng.normal(size=(4, 3)), rng.integers(0, 2, 4)
    exact = brute_force_shapley(x_train, y_train, x_val, y_val, k)
    assert np.allclose(knn_shapley(x_train, y_train, x_val, y_val, k), exact)


def test_data_valuation_flags_flipped_training_rows(stage_ctx):
    splits = breast_cancer_splits()
    rng = np.random.default_rng(3)
    train = splits.train.copy()
    flipped = train.index[rng.choice(len(train), 20, replace=False)]
    train.loc[flipped, "diagnosis"] = train.loc[flipped, "diagnosis"].map({"malignant": "benign", "benign": "malignant"})
    report = DataValuationCheck().check_splits(dataclasses.replace(splits, train=train), stage_ctx())
    found = {f["row"] for f in report.flagged}
    # ~85 validation rows see only the flips that sit near them: few found, but few mistakes
    assert len(found & set(flipped)) >= 5 and len(found & set(flipped)) / len(found) >= 0.75
    assert all(f["score"] < -0.5 for f in report.flagged)
    assert report.flagged == sorted(report.flagged, key=lambda f: f["score"])  # most harmful first
    assert report.details["most_harmful"][0]["row"] == report.flagged[0]["row"]
    # the values add up to the KNN's validation utility (correct neighbour votes)
    clean = DataValuationCheck().check_splits(splits, stage_ctx())
    assert 0 < clean.details["value_sum"] <= len(splits.val)
    assert len(clean.flagged) <= 3
