"""Datasets shipped inside packages: scikit-learn's diabetes (regression) and vega_datasets' cars
and seattle-weather (strings, missing values, dates), read from the installed wheels."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf

from framework.errors import DataCheckError, RecipeError
from plugins.data_packaged import DATASETS, VegaDataSource, register_data_sources
from plugins.data_sklearn import SklearnDataSource

CONF = Path(__file__).resolve().parents[2] / "conf" / "data"


def source(cls, **options):
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), options))
    return cls(config)


def from_group(name: str):
    """The source a recipe gets with ``data: NAME`` (conf/data/NAME.yaml)."""
    options = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    cls = {"sklearn": SklearnDataSource, "vega": VegaDataSource}[options.pop("type")]
    return source(cls, **options)


def test_diabetes_is_a_regression_table(stage_ctx):
    ds = from_group("diabetes").load(stage_ctx("data"))
    assert ds.name == "diabetes" and ds.task == "regression" and ds.classes is None
    assert ds.frame.shape == (442, 11) and ds.features[:3] == ["age", "sex", "bmi"]
    assert ds.frame["target"].dtype == np.float64 and ds.frame["target"].nunique() > 100
    assert SklearnDataSource.planned_task(SklearnDataSource.Config(dataset="diabetes")) == "regression"
    assert SklearnDataSource.planned_task(SklearnDataSource.Config(dataset="wine")) == "classification"


def test_vega_registered_and_listed():
    assert register_data_sources() == [VegaDataSource]
    assert VegaDataSource.datasets() == ["cars", "seattle-weather"] == sorted(DATASETS)


def test_cars_has_strings_and_missing_values(stage_ctx):
    ds = from_group("cars").load(stage_ctx("data"))
    assert ds.name == "cars" and ds.task == "classification" and ds.classes == ["Europe", "Japan", "USA"]
    assert len(ds.frame) == 406 and ds.time == "Year"
    assert pd.api.types.is_datetime64_any_dtype(ds.frame["Year"]) and ds.frame["Year"].dt.year.min() == 1970
    schema = {f.name: (f.dtype, f.nullable) for f in ds.schema.features}
    assert schema["Miles_per_Gallon"] == ("float", True) and schema["Horsepower"] == ("float", True)
    assert schema["Cylinders"] == ("int", False)
    assert ds.frame["Horsepower"].isna().sum() == 6 and ds.frame["Miles_per_Gallon"].isna().sum() == 8


def test_cars_miles_per_gallon_regression_drops_and_counts_rows_without_a_target(stage_ctx):
    ctx = stage_ctx("data")
    ds = from_group("cars_mpg").load(ctx)
    assert ds.task == "regression" and ds.classes is None and ds.target == "Miles_per_Gallon"
    assert len(ds.frame) == 398 and ctx.metrics["rows_dropped_missing_target"] == 8
    origin = next(f for f in ds.schema.features if f.name == "Origin")
    assert origin.dtype == "category" and origin.categories == ["Europe", "Japan", "USA"]
    with pytest.raises(DataCheckError, match=r"'Miles_per_Gallon' has no value in 8 of 406 rows of vega dataset 'cars'"):
        source(VegaDataSource, dataset="cars", target="Miles_per_Gallon", task="regression").load(None)


def test_seattle_weather_is_dated():
    src = from_group("seattle_weather")
    ds = src.load(None)
    assert ds.name == "seattle_weather" and ds.time == "date" and len(ds.frame) == 1461
    assert ds.classes == ["drizzle", "fog", "rain", "snow", "sun"]
    assert ds.frame["date"].min() == pd.Timestamp("2012-01-01") and ds.frame["date"].is_monotonic_increasing
    assert ds.features == ["precipitation", "temp_max", "temp_min", "wind"]


def test_defaults_are_the_dataset_own_target_and_time():
    ds = source(VegaDataSource, dataset="seattle-weather").load(None)
    assert (ds.target, ds.time) == ("weather", "date") and "date" not in ds.features
    untimed = source(VegaDataSource, dataset="seattle-weather", time="").load(None)
    assert untimed.time is None and "date" in untimed.features
    assert source(VegaDataSource).load(None).target == "Origin"


@pytest.mark.parametrize("group", ["cars", "cars_mpg", "seattle_weather"])
def test_describe_agrees_with_load(group):
    src = from_group(group)
    schema, ds = src.describe(), src.load(None)
    assert schema.target == ds.target and schema.features == ds.features
    assert set(ds.frame.columns) <= set(schema.names)
    described = {c.name: (c.dtype, c.nullable) for c in schema.columns}
    assert {f.name: (f.dtype, f.nullable) for f in ds.schema.features} == {n: described[n] for n in ds.features}
    assert schema.rows == {"cars": 406, "cars_mpg": 406, "seattle_weather": 1461}[group]


def test_vega_errors():
    with pytest.raises(RecipeError, match=r"data.dataset: unknown vega dataset 'seattle_weather'. Did you mean 'seattle-weather'"):
        source(VegaDataSource, dataset="seattle_weather")
    with pytest.raises(RecipeError, match=r"data.target: no column 'origin' in vega dataset 'cars'; nearest: 'Origin'"):
        source(VegaDataSource, dataset="cars", target="origin").load(None)


def test_files_come_from_the_installed_wheel_not_the_network(monkeypatch):
    """vega_datasets' own loaders (which may download) are never called."""
    import vega_datasets.core

    def refuse(*args, **kwargs):
        raise AssertionError("the vega_datasets loader API was called")

    monkeypatch.setattr(vega_datasets.core.Dataset, "raw", refuse, raising=False)
    monkeypatch.setattr(vega_datasets.core.Dataset, "__call__", refuse, raising=False)
    assert len(source(VegaDataSource, dataset="cars").load(None).frame) == 406
