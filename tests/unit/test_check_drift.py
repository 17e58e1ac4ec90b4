"""Checks against a reference data version in a real store: per-column shift (KS / chi-square,
Holm), missing-rate jumps, row-count bounds and new categories, on the wine and breast cancer
tables (shifts injected)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from framework import Dataset
from framework.errors import RecipeError, StageError
from framework.sequential import holm_adjusted as holm
from plugins.check_drift import DriftCheck, NewCategoriesCheck
from plugins.data_sklearn import SklearnDataSource

SCHEMA = {"features": [], "target": "target"}


@pytest.fixture()
def store(tmp_path):
    from framework.registry import Registry

    return Registry(tmp_path / "store")


@pytest.fixture()
def ctx(tmp_path, store):
    from framework.context import RunStageContext

    return RunStageContext("checks", tmp_path / "checks", registry=store)


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    return SklearnDataSource().load(None)


def with_frame(ds: Dataset, frame: pd.DataFrame) -> Dataset:
    return dataclasses.replace(ds, frame=frame)


def test_holm_matches_the_step_down_procedure():
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([]) == []


def test_previous_reference_missing_passes_and_says_so(cancer, ctx):
    report = DriftCheck().check(cancer, ctx)
    assert report.passed and report.details == {"reference": None, "note": "no previous version"}


def test_same_distribution_does_not_drift_and_a_shift_does(cancer, ctx, store):
    reference = cancer.frame.sample(frac=0.5, random_state=0)
    version = store.put_data("breast_cancer", reference, schema=SCHEMA)
    current = cancer.frame.drop(index=reference.index)  # the other half: same population
    report = DriftCheck().check(with_frame(cancer, current), ctx)
    assert report.passed, report.failures
    assert report.details["reference"] == version.ref and len(report.details["columns"]) == 30

    shifted = current.copy()
    shifted["mean radius"] += shifted["mean radius"].std()  # one standard deviation
    shifted.loc[shifted.index[:40], "worst area"] = np.nan  # 14% missing, none before
    report = DriftCheck().check(with_frame(cancer, shifted), ctx)
    checks = {(f["column"], f["check"]) for f in report.failures}
    assert checks == {("mean radius", "shift_ks"), ("worst area", "missing_rate_jump")}
    stats = report.details["columns"]["mean radius"]
    assert stats["p_holm"] < 0.01 and stats["effect"] > 0.3
    assert all(f["rows"] == [] for f in report.failures)  # table-wide: nothing to quarantine


def test_named_reference_and_row_count_bounds(cancer, ctx, store):
    store.put_data("cancer_ref", cancer.frame, schema=SCHEMA)
    store.set_alias("data", "cancer_ref", "prod", store.get("cancer_ref", "data").id)
    small = cancer.frame.sample(n=200, random_state=1)
    config = DriftCheck.Config(reference="cancer_ref@prod", min_rows_ratio=0.5)
    report = DriftCheck(config).check(with_frame(cancer, small), ctx)
    assert [f["check"] for f in report.failures] == ["row_count_ratio(0.5, 2.0)"]
    assert report.failures[0]["ratio"] == round(200 / 569, 4)
    with pytest.raises(StageError, match="unknown alias 'staging'"):
        DriftCheck(DriftCheck.Config(reference="cancer_ref@staging")).check(cancer, ctx)


def test_categorical_shift_uses_chi_square(ctx, store):
    rng = np.random.default_rng(0)
    ref = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], 3000, p=[0.5, 0.3, 0.2]),
                        "target": rng.integers(0, 2, 3000)})
    store.put_data("paint", ref, schema=SCHEMA)
    same = pd.DataFrame({"colour": rng.choice(["red", "green", "blue"], 3000, p=[0.5, 0.3, 0.2]),
                         "target": rng.integers(0, 2, 3000)})
    ds = Dataset("paint", same, ["colour"], "target", classes=[0, 1])
    assert DriftCheck().check(ds, ctx).passed
    moved = same.assign(colour=rng.choice(["red", "green", "blue"], 3000, p=[0.3, 0.3, 0.4]))
    report = DriftCheck().check(dataclasses.replace(ds, frame=moved), ctx)
    assert report.failures[0]["check"] == "shift_chi2"
    assert report.details["columns"]["colour"]["effect"] == pytest.approx(0.2, abs=0.03)  # total variation


def test_new_categories_are_flagged_row_by_row(ctx, store):
    ref = pd.DataFrame({"country": ["FR", "DE", "US"] * 20, "x": np.arange(60.0), "target": [0, 1] * 30})
    store.put_data("users", ref, schema=SCHEMA)
    now = pd.DataFrame({"country": ["FR", "XX", "US", "YY", None, "XX"], "x": np.arange(6.0), "target": [0, 1] * 3},
                       index=[10, 11, 12, 13, 14, 15])
    ds = Dataset("users", now, ["country", "x"], "target", classes=[0, 1])
    report = NewCategoriesCheck().check(ds, ctx)
    assert [f["row"] for f in report.flagged] == [11, 13, 15]
    assert {f["reason"] for f in report.flagged} == {"new category (country)"}
    assert report.failures == [{"column": "country", "check": "new_category", "count": 3, "rows": [11, 13, 15]}]
    assert report.details["new_values"] == {"country": {"XX": 2, "YY": 1}}


def test_references_are_validated_at_plan_time():
    for bad in ("latest", "users@", "users:XYZ", "a b@prod"):
        with pytest.raises(RecipeError, match=r"checks.reference: .* is not a data version"):
            DriftCheck.check_config(DriftCheck.Config(reference=bad), "checks")
    with pytest.raises(RecipeError, match="checks.alpha"):
        DriftCheck.check_config(DriftCheck.Config(alpha=1.5), "checks")
    NewCategoriesCheck.check_config(NewCategoriesCheck.Config(reference="users:0123abcd"), "checks")
