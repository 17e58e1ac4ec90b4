"""The ``pandera_schema`` check: a real pandera schema on real breast-cancer data. The check only
reports; the core enforces its severity (tests/unit/test_quarantine.py)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

from framework import CheckReport, Dataset
from framework.errors import RecipeError
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


def failure(report, column, check_prefix) -> dict:
    found = [f for f in report.failures if f["column"] == column and f["check"].startswith(check_prefix)]
    assert found, report.failures
    return found[0]


def failed(ds: Dataset, ctx, **config) -> tuple[CheckReport, str]:
    """The failed report and the message the core shows for it."""
    report = run(ds, ctx, **config)
    assert not report.passed and report.failures
    return report, PanderaSchemaCheck.message(report.failures)


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
    report, msg = failed(ds, stage_ctx("checks"))
    f = failure(report, COL, "not_nullable")
    assert f["rows"] == [3, 17] and f["count"] == 2
    assert f"column '{COL}' check 'not_nullable' at rows [3, 17] (2 rows)" in msg
    assert msg.startswith("pandera_schema failed: ")
    assert len(report.failures) == 1  # NaN is not also reported as "not finite"


def test_inf_fails_finite(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[5, "worst area"] = np.inf
    ds.frame.loc[9, "worst area"] = -np.inf
    report, msg = failed(ds, stage_ctx("checks"))
    f = failure(report, "worst area", "finite")
    assert f["rows"] == [5, 9]
    assert "column 'worst area' check 'finite' at rows [5, 9] (2 rows)" in msg


def test_string_in_numeric_column_fails_dtype(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame[COL] = ds.frame[COL].astype(object)  # pandas 3 refuses to upcast on assignment
    ds.frame.loc[42, COL] = "twelve"
    report, msg = failed(ds, stage_ctx("checks"))
    f = failure(report, COL, "dtype(")
    assert f["rows"] == [42]
    assert f"column '{COL}' check 'dtype('float64')' at rows [42]" in msg
    assert [x["column"] for x in report.failures] == [COL]


def test_unknown_target_class_fails_isin(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[[0, 1, 2], "target"] = 7
    report, msg = failed(ds, stage_ctx("checks"))
    f = failure(report, "target", "isin")
    assert f["rows"] == [0, 1, 2] and f["count"] == 3
    assert "column 'target' check 'isin([0, 1])' at rows [0, 1, 2] (3 rows)" in msg


def test_missing_column_fails(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame = ds.frame.drop(columns=["mean texture"])
    report, msg = failed(ds, stage_ctx("checks"))
    f = failure(report, "mean texture", "column_in_dataframe")
    assert f["rows"] == []
    assert "column 'mean texture' check 'column_in_dataframe': column is missing" in msg


def test_out_of_range_value_fails(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[11, COL] = -1.0
    ds.frame.loc[[20, 21], "mean texture"] = 1000.0
    rules = {"mean texture": FeatureRule(max=100.0)}
    report, msg = failed(ds, stage_ctx("checks"), features=FeatureRule(min=0.0), columns=rules)
    low = failure(report, COL, "greater_than_or_equal_to")
    high = failure(report, "mean texture", "less_than_or_equal_to")
    assert low["rows"] == [11] and high["rows"] == [20, 21]
    assert f"column '{COL}' check 'greater_than_or_equal_to(0.0)' at rows [11] (1 row)" in msg
    assert "column 'mean texture' check 'less_than_or_equal_to(100.0)' at rows [20, 21] (2 rows)" in msg


def test_failures_sample_their_rows_and_flagged_lists_every_one(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[range(30), COL] = np.nan
    report = run(ds, stage_ctx("checks"))
    assert not report.passed and report.rows_checked == 569
    f = failure(report, COL, "not_nullable")
    assert f["count"] == 30 and f["rows"] == list(range(20))  # rows are capped at 20
    assert [x["row"] for x in report.flagged] == list(range(30))  # quarantine takes every one
    assert {x["reason"] for x in report.flagged} == {f"not_nullable ({COL})"}


def test_overrides_and_min_rows(clean, stage_ctx):
    ds = dirty(clean)
    ds.frame.loc[3, COL] = np.nan
    # a per-column rule that allows nulls makes the same data pass
    assert run(ds, stage_ctx("checks"), columns={COL: FeatureRule(nullable=True)}).passed

    report = run(clean, stage_ctx("checks"), min_rows=1000)
    assert not report.passed
    assert report.failures[0]["column"] is None and report.failures[0]["check"].startswith("min_rows")
    assert "table check 'min_rows(n=1000)' failed" in PanderaSchemaCheck.message(report.failures)


def test_bad_config_is_a_recipe_error(clean, stage_ctx):
    with pytest.raises(RecipeError, match="decimal"):
        run(clean, stage_ctx("checks"), features=FeatureRule(dtype="decimal"))
    with pytest.raises(RecipeError, match=r"checks.columns.x.regex: not a valid regular expression"):
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(columns={"x": FeatureRule(dtype="str", regex="(")}), "checks")
    with pytest.raises(RecipeError, match="min 5 > max 1"):
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(columns={"x": FeatureRule(min=5, max=1)}), "checks")
    with pytest.raises(RecipeError, match="nope"):
        run(clean, stage_ctx("checks"), columns={"nope": FeatureRule()})


def test_config_is_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(PanderaSchemaCheck.Config)
    merged = OmegaConf.merge(cfg, {"columns": {COL: {"min": 0}}, "features": {"nullable": True}})
    obj = OmegaConf.to_object(merged)
    assert obj.columns[COL].min == 0.0 and obj.features.nullable is True
    assert register_data_checks() == [PanderaSchemaCheck]


# ---------------------------------------------------------------------------------------------
# The YAML schema format: allowed values, unique, regex, row bounds, strict, schema_file
# ---------------------------------------------------------------------------------------------
SCHEMA_YAML = """\
min_rows: 100
max_rows: 10000
features: {dtype: float, min: 0}
columns:
  diagnosis: {dtype: str, allowed: [malignant, benign]}
  patient_id: {dtype: str, unique: true, regex: '^P[0-9]{4}$'}
"""


@pytest.fixture()
def labelled(clean) -> Dataset:
    """Breast cancer with its diagnosis names and a patient id: string columns for the rules."""
    ds = dirty(clean)
    ds.frame["diagnosis"] = np.where(ds.frame["target"] == 0, "malignant", "benign")
    ds.frame["patient_id"] = [f"P{i:04d}" for i in range(len(ds.frame))]
    return ds


def spec(text: str) -> dict:
    return yaml.safe_load(text)


def test_schema_written_inline_passes_clean_data(labelled, stage_ctx):
    from omegaconf import OmegaConf

    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(PanderaSchemaCheck.Config), spec(SCHEMA_YAML)))
    report = PanderaSchemaCheck(config).check(labelled, stage_ctx("checks"))
    assert report.passed, report.failures


def test_allowed_unique_regex_and_row_bounds_each_name_their_rows(labelled, stage_ctx, tmp_path):
    ds = labelled
    ds.frame.loc[[4, 8], "diagnosis"] = "unsure"
    ds.frame.loc[10, "patient_id"] = "P0003"  # a repeat of row 3's id: the repeat fails, not row 3
    ds.frame.loc[12, "patient_id"] = "p-12"
    path = tmp_path / "schema.yaml"
    path.write_text(SCHEMA_YAML.replace("max_rows: 10000", "max_rows: 500"))
    report, msg = failed(ds, stage_ctx("checks"), schema_file=str(path))
    assert failure(report, "diagnosis", "isin")["rows"] == [4, 8]
    assert failure(report, "patient_id", "field_uniqueness")["rows"] == [10]
    assert failure(report, "patient_id", "str_matches")["rows"] == [12]
    table = failure(report, None, "max_rows")
    assert table["rows"] == [] and "table check 'max_rows(n=500)' failed" in msg
    assert sorted({f["row"] for f in report.flagged}) == [4, 8, 10, 12]
    # reports carry row labels and check names, never the values that failed
    assert "unsure" not in str(report) and "p-12" not in str(report)


def test_strict_refuses_undeclared_columns(labelled, stage_ctx):
    report, _ = failed(labelled, stage_ctx("checks"), strict=True,
                       columns={"diagnosis": FeatureRule(dtype="str")})
    assert failure(report, None, "column_in_schema")["count"] == 1  # patient_id


def test_schema_file_errors_name_the_file_and_key(tmp_path, labelled, stage_ctx):
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns:\n  x: {dtyp: int}\n")
    with pytest.raises(RecipeError, match=r"checks.schema_file: '.*bad.yaml' key 'columns.x.dtyp'"):
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(schema_file=str(bad)), "checks")
    with pytest.raises(RecipeError, match="cannot read"):
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(schema_file=str(tmp_path / "none.yaml")), "checks")
    # YAML is read with safe_load: a tag that would build a Python object is refused, not run
    evil = tmp_path / "evil.yaml"
    evil.write_text("columns: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(schema_file=str(evil)), "checks")
    good = tmp_path / "good.yaml"
    good.write_text(SCHEMA_YAML)
    with pytest.raises(RecipeError, match=r"inline or in schema_file, not both \(inline: min_rows\)"):
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(schema_file=str(good), min_rows=3), "checks")


def test_blocking_is_deprecated_and_the_core_severity_decides(caplog, clean, stage_ctx):
    for blocking in (True, False):
        caplog.clear()
        PanderaSchemaCheck.check_config(PanderaSchemaCheck.Config(blocking=blocking), "checks[0]")
        assert "checks[0].blocking is deprecated and ignored: the core's checks[0].severity decides" in caplog.text
    ds = dirty(clean)
    ds.frame.loc[3, COL] = np.nan
    report = run(ds, stage_ctx("checks"), blocking=True)  # reports; stopping is the core's business
    assert not report.passed and report.flagged == [{"row": 3, "reason": f"not_nullable ({COL})"}]
