"""The ``sklearn`` data source: real bundled tables, plain str feature names, int classes."""
from __future__ import annotations

import numpy as np
import pytest

from framework import Dataset
from framework.errors import RecipeError
from plugins.data_sklearn import DATASETS, SklearnDataSource, register_data_sources

EXPECTED = {
    # name: (rows, features, classes, a feature name)
    "breast_cancer": (569, 30, [0, 1], "mean radius"),
    "wine": (178, 13, [0, 1, 2], "alcohol"),
    "digits": (1797, 64, list(range(10)), "pixel_0_0"),
    "iris": (150, 4, [0, 1, 2], "sepal length (cm)"),
}


def load(name: str, ctx) -> Dataset:
    return SklearnDataSource(SklearnDataSource.Config(dataset=name)).load(ctx)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_dataset_loads(name, stage_ctx):
    rows, n_features, classes, a_feature = EXPECTED[name]
    ds = load(name, stage_ctx("data"))

    assert ds.name == name and ds.task == "classification" and ds.target == "target"
    assert ds.frame.shape == (rows, n_features + 1)
    assert len(ds.features) == n_features and a_feature in ds.features
    assert all(type(f) is str for f in ds.features)  # not numpy str_
    assert list(ds.frame.columns) == ds.features + ["target"]
    assert ds.classes == classes and all(type(c) is int for c in ds.classes)
    assert sorted(ds.frame["target"].unique().tolist()) == classes
    assert ds.frame["target"].dtype == np.int64
    assert all(ds.frame[f].dtype == np.float64 for f in ds.features)
    assert ds.description


def test_datasets_listed():
    # the classification tables above; diabetes (regression) is tested in test_data_packaged.py
    assert set(DATASETS) == set(EXPECTED) | {"diabetes"}
    assert SklearnDataSource.datasets() == sorted(set(EXPECTED) | {"diabetes"})
    assert register_data_sources() == [SklearnDataSource]
    assert SklearnDataSource.name == "sklearn"


def test_unknown_dataset_is_a_recipe_error(stage_ctx):
    with pytest.raises(RecipeError) as err:
        SklearnDataSource(SklearnDataSource.Config(dataset="mnist"))
    msg = str(err.value)
    assert "data.dataset" in msg and "'mnist'" in msg
    for name in EXPECTED:
        assert name in msg

    # also when the config is changed after construction
    source = SklearnDataSource()
    source.config.dataset = "titanic"
    with pytest.raises(RecipeError, match="titanic"):
        source.load(stage_ctx("data"))


def test_config_is_an_omegaconf_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.structured(SklearnDataSource.Config)
    assert cfg.dataset == "breast_cancer"
    merged = OmegaConf.to_object(OmegaConf.merge(cfg, {"dataset": "wine"}))
    assert SklearnDataSource(merged).load(None).name == "wine"
