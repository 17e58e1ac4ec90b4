"""The ``pandera_schema`` check: a real pandera schema on real breast-cancer data."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from framework import CheckReport, Dataset
from framework.errors import DataCheckError, RecipeError
from plugins.check_pandera import SCHEMA_FILE, FeatureRule, PanderaSchemaCheck, register_data_checks
from plugins.data_sklearn import SklearnDataSource

COL = "mean radius"


@pytest.fixture(scope="module")
def clean() -> Dataset:
    return SklearnDataSource().load(None)


def dirty(ds: Dataset, **changes) -> Dataset:
    """A copy of the dataset whose frame we can break."""
    return dataclasses.replace(ds, frame=ds.frame.copy(), **changes)


def run(ds: Dataset, ctx, **config) -> CheckReport:
    return PanderaSchemaCheck(PanderaSchemaCheck.Config(**config)).check(ds, ctx)


def failure(err_or_report, column, check_prefix) -> dict:
    found = [f for f in err_or_report.failures if f["column"] == column and f["check"].startswith(check_prefix)]
    assert found, err_or_report.failures
    return found[0]


def test_clean_breast_cancer_passes_and_writes_schema(clean, stage_ctx):
    ctx = stage_ctx("checks")
    report = run(clean, ctx)
    assert report.passed and report.failures == [] and report.rows_checked == 569
    assert report.check == "pandera_schema"

    text = (ctx.out_dir / SCHEMA_FILE).read_text()
    schema = yaml.safe_load(text)
    assert set(schema["columns"]) == set(clean.features) | {"target"}
    assert schema["columns"][COL]["dtype"] == "float64"
    assert schema["columns"]["target"]["isin"] == [0, 1]
    assert report.details["schema_file"] == SCHEMA_FILE

    # pandera reads it back into an equivalent schema
    import pandera.pandas as pa

    assert set(pa.DataFrameSchema.from_yaml(text).columns) == set(schema["columns"])


def test_nan_fails_not_nullable(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[[3, 17], COL] = np.nan
    with pytest.raises(DataCheckError) as err:
        run(ds, stage_ctx("checks"))
    f = failure(err.value, COL, "not_nullable")
    assert f["rows"] == [3, 17] and f["count"] == 2
    assert f"column '{COL}' check 'not_nullable' at rows [3, 17] (2 rows)" in str(err.value)
    assert str(err.value).startswith("pandera_schema failed: ")
    assert len(err.value.failures) == 1  # NaN is not also reported as "not finite"


def test_inf_fails_finite(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[5, "worst area"] = np.inf
    ds.frame.loc[9, "worst area"] = -np.inf
    with pytest.raises(DataCheckError) as err:
        run(ds, stage_ctx("checks"))
    f = failure(err.value, "worst area", "finite")
    assert f["rows"] == [5, 9]
    assert "column 'worst area' check 'finite' at rows [5, 9] (2 rows)" in str(err.value)


def test_string_in_numeric_column_fails_dtype(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame[COL] = ds.frame[COL].astype(object)  # pandas 3 refuses to upcast on assignment
    ds.frame.loc[42, COL] = "twelve"
    with pytest.raises(DataCheckError) as err:
        run(ds, stage_ctx("checks"))
    f = failure(err.value, COL, "dtype(")
    assert f["rows"] == [42]
    assert f"column '{COL}' check 'dtype('float64')' at rows [42]" in str(err.value)
    assert [x["column"] for x in err.value.failures] == [COL]


def test_unknown_target_class_fails_isin(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[[0, 1, 2], "target"] = 7
    with pytest.raises(DataCheckError) as err:
        run(ds, stage_ctx("checks"))
    f = failure(err.value, "target", "isin")
    assert f["rows"] == [0, 1, 2] and f["count"] == 3
    assert "column 'target' check 'isin([0, 1])' at rows [0, 1, 2] (3 rows)" in str(err.value)


def test_missing_column_fails(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame = ds.frame.drop(columns=["mean texture"])
    with pytest.raises(DataCheckError) as err:
        run(ds, stage_ctx("checks"))
    f = failure(err.value, "mean texture", "column_in_dataframe")
    assert f["rows"] == []
    assert "column 'mean texture' check 'column_in_dataframe': column is missing" in str(err.value)


def test_out_of_range_value_fails(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[11, COL] = -1.0
    ds.frame.loc[[20, 21], "mean texture"] = 1000.0
    rules = {"mean texture": FeatureRule(max=100.0)}
    with pytest.raises(DataCheckError) as err:
        run(ds, stage_ctx("checks"), features=FeatureRule(min=0.0), columns=rules)
    low = failure(err.value, COL, "greater_than_or_equal_to")
    high = failure(err.value, "mean texture", "less_than_or_equal_to")
    assert low["rows"] == [11] and high["rows"] == [20, 21]
    msg = str(err.value)
    assert f"column '{COL}' check 'greater_than_or_equal_to(0.0)' at rows [11] (1 row)" in msg
    assert "column 'mean texture' check 'less_than_or_equal_to(100.0)' at rows [20, 21] (2 rows)" in msg


def test_non_blocking_returns_failed_report(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[range(30), COL] = np.nan
    report = run(ds, stage_ctx("checks"), blocking=False)
    assert not report.passed and report.rows_checked == 569
    f = failure(report, COL, "not_nullable")
    assert f["count"] == 30 and f["rows"] == list(range(20))  # rows are capped at 20


def test_overrides_and_min_rows(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[3, COL] = np.nan
    # a per-column rule that allows nulls makes the same data pass
    assert run(ds, stage_ctx("checks"), columns={COL: FeatureRule(nullable=True)}).passed

    report = run(clean, stage_ctx("checks"), min_rows=1000, blocking=False)
    assert not report.passed
    assert report.failures[0]["column"] is None and report.failures[0]["check"].startswith("min_rows")
    assert "table check 'min_rows(n=1000)' failed" in PanderaSchemaCheck.message(report.failures)


def test_bad_config_is_a_recipe_error(clean, stage_ctx):
    with pytest.raises(RecipeError, match="decimal"):
        run(clean, stage_ctx("checks"), features=FeatureRule(dtype="decimal"))
    with pytest.raises(RecipeError, match="nope"):
        run(clean, stage_ctx("checks"), columns={"nope": FeatureRule()})


def test_config_is_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(PanderaSchemaCheck.Config)
    merged = OmegaConf.merge(cfg, {"columns": {COL: {"min": 0}}, "features": {"nullable": True}})
    obj = OmegaConf.to_object(merged)
    assert obj.columns[COL].min == 0.0 and obj.features.nullable is True
    assert register_data_checks() == [PanderaSchemaCheck]
