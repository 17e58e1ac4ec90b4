"""framework.tuning: YAML search spaces -> ray.tune samplers, and the recipe errors on the way."""
from __future__ import annotations

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from framework.errors import RecipeError
from framework.tuning import SAMPLERS, search_space_from_config, validate_search_space

SPACE = {
    "hidden": {"choice": [16, 32, 64]},
    "lr": {"loguniform": [1e-3, 3e-2]},
    "dropout": {"uniform": [0, 0.3]},
    "layers": {"randint": [1, 3]},
    "act": {"grid": ["relu", "tanh"]},
    "batch": 32,
    "name": "mlp",
    "flag": True,
    "nothing": None,
}


def test_every_sampler_becomes_its_ray_tune_object():
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform, Uniform

    space = search_space_from_config(SPACE)
    assert isinstance(space["hidden"], Categorical) and space["hidden"].categories == [16, 32, 64]
    assert isinstance(space["lr"], Float) and isinstance(space["lr"].get_sampler(), LogUniform)
    assert (space["lr"].lower, space["lr"].upper) == (1e-3, 3e-2)
    assert isinstance(space["dropout"], Float) and isinstance(space["dropout"].get_sampler(), Uniform)
    assert (space["dropout"].lower, space["dropout"].upper) == (0, 0.3)
    assert isinstance(space["layers"], Integer) and (space["layers"].lower, space["layers"].upper) == (1, 3)
    assert space["act"] == {"grid_search": ["relu", "tanh"]}
    assert (space["batch"], space["name"], space["flag"], space["nothing"]) == (32, "mlp", True, None)


def test_samples_stay_in_bounds():
    space = search_space_from_config(SPACE)
    for _ in range(200):
        assert space["hidden"].sample() in (16, 32, 64)
        assert 1e-3 <= space["lr"].sample() <= 3e-2
        assert 0 <= space["dropout"].sample() <= 0.3
        assert space["layers"].sample() in (1, 2)  # high is exclusive, as in ray.tune.randint


def test_omegaconf_containers_become_plain_python():
    cfg = OmegaConf.create({"hidden": {"choice": [16, 32]}, "lr": 0.01})
    checked = validate_search_space(cfg)
    assert checked == {"hidden": {"choice": [16, 32]}, "lr": 0.01}
    assert type(checked["hidden"]["choice"]) is list
    assert search_space_from_config(cfg)["hidden"].categories == [16, 32]


def test_empty_or_missing_space_is_allowed():
    assert validate_search_space(None) == {}
    assert search_space_from_config({}) == {}


def test_validation_does_not_import_ray():
    code = (
        "import sys; from framework.tuning import validate_search_space as v;"
        "v({'a': {'choice': [1, 2]}, 'b': {'uniform': [0, 1]}});"
        "assert 'ray' not in sys.modules, 'ray imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize(
    "param, spec, expected",
    [
        # unknown sampler: names the key, the bad sampler, a close match and the valid ones
        ("lr", {"logunifrom": [1e-3, 1e-1]},
         "train.search_space.lr: unknown sampler 'logunifrom'. Did you mean 'loguniform'? "
         "Valid samplers: choice, grid, loguniform, randint, uniform"),
        ("lr", {"normal": [0, 1]}, "train.search_space.lr: unknown sampler 'normal'. Valid samplers: choice, grid"),
        # not exactly one sampler key
        ("lr", {"uniform": [0, 1], "loguniform": [0.1, 1]},
         "train.search_space.lr: exactly one sampler key expected, found 2 (uniform, loguniform)"),
        ("lr", {}, "train.search_space.lr: exactly one sampler key expected, found 0 (none)"),
        # bare list
        ("hidden", [16, 32], "train.search_space.hidden: a bare list is ambiguous; write {choice: [16, 32]}"),
        # choice / grid need a non-empty list
        ("hidden", {"choice": []}, "train.search_space.hidden: 'choice' takes a non-empty list of values; got []"),
        ("hidden", {"choice": 16}, "train.search_space.hidden: 'choice' takes a non-empty list of values; got 16"),
        ("act", {"grid": "relu"}, "train.search_space.act: 'grid' takes a non-empty list of values; got 'relu'"),
        # arity and types of ranges
        ("dropout", {"uniform": [0.1]}, "train.search_space.dropout: 'uniform' takes [low, high] numbers"),
        ("dropout", {"uniform": [0, 0.1, 0.2]}, "train.search_space.dropout: 'uniform' takes [low, high] numbers"),
        ("dropout", {"uniform": ["a", "b"]}, "train.search_space.dropout: 'uniform' takes [low, high] numbers"),
        ("dropout", {"uniform": [False, True]}, "train.search_space.dropout: 'uniform' takes [low, high] numbers"),
        ("dropout", {"uniform": 0.1}, "train.search_space.dropout: 'uniform' takes [low, high] numbers"),
        ("layers", {"randint": [1.5, 3]}, "train.search_space.layers: 'randint' takes [low, high] integers"),
        # bounds
        ("dropout", {"uniform": [0.3, 0.3]}, "train.search_space.dropout: 'uniform' needs low < high; got low=0.3, high=0.3"),
        ("lr", {"loguniform": [0.1, 0.01]}, "train.search_space.lr: 'loguniform' needs low < high; got low=0.1, high=0.01"),
        ("lr", {"loguniform": [0, 0.1]}, "train.search_space.lr: 'loguniform' needs 0 < low (it samples in log space); got low=0"),
        ("lr", {"loguniform": [-1, 0.1]}, "train.search_space.lr: 'loguniform' needs 0 < low"),
        ("layers", {"randint": [3, 1]}, "train.search_space.layers: 'randint' needs low < high; got low=3, high=1"),
        ("layers", {"randint": [2, 2]}, "train.search_space.layers: 'randint' needs low < high"),
        # other value types
        ("hidden", 3j, "train.search_space.hidden: expected a constant or {SAMPLER: ARGS}, got complex"),
    ],
)
def test_errors_name_the_key_and_the_problem(param, spec, expected):
    with pytest.raises(RecipeError) as err:
        validate_search_space({param: spec})
    assert str(err.value).startswith(expected), str(err.value)
    # search_space_from_config validates first, with the same message
    with pytest.raises(RecipeError) as err2:
        search_space_from_config({param: spec})
    assert str(err2.value) == str(err.value)


def test_prefix_is_used_in_messages():
    with pytest.raises(RecipeError, match=r"^recipe\.tune\.space\.lr: unknown sampler 'foo'"):
        validate_search_space({"lr": {"foo": [1, 2]}}, "recipe.tune.space")


def test_space_itself_must_be_a_mapping():
    with pytest.raises(RecipeError, match=r"^train\.search_space: expected a mapping .* got list"):
        validate_search_space([1, 2])


def test_valid_sampler_list_matches_the_messages():
    with pytest.raises(RecipeError) as err:
        validate_search_space({"x": {"bogus": [1]}})
    for name in SAMPLERS:
        assert name in str(err.value)
