"""The row-filter grammar of recipes (model card slices): parsed by us, never evaluated as Python.

Regression of the [harden] finding "a recipe string runs arbitrary code": a slice such as
``@np.lib._datasource.os.system("id > FILE") == 0 or ...`` was handed to ``DataFrame.query``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from framework.expressions import MAX_DEPTH, ExpressionError, parse_filter
from framework.model_card import slice_metrics


@pytest.fixture
def frame():
    return pd.DataFrame({
        "mean radius": [10.0, 15.0, 20.0, np.nan],
        "age": [30, 61, 75, 45],
        "region": ["north", "south", "north", None],
        "smoker": [True, False, True, False],
    })


@pytest.mark.parametrize("text,rows", [
    ("`mean radius` > 15", [2]),
    ("`mean radius` <= 15", [0, 1]),
    ("age >= 60 and region == 'north'", [2]),
    ("age < 40 or region == \"south\"", [0, 1]),
    ("not (age < 40)", [1, 2, 3]),
    ("~(age < 40) & smoker", [2]),
    ("region in ['north', 'east']", [0, 2]),
    ("region not in ('north',)", [1, 3]),
    ("40 < age < 70", [1, 3]),
    ("age == -1 | `mean radius` != 10", [1, 2, 3]),
    ("smoker", [0, 2]),
    ("smoker == True", [0, 2]),
    ("age > 1e1 and age < 1_0" if False else "age > 1e1 and age < 100", [0, 1, 2, 3]),
])
def test_filters_select_the_rows_pandas_would(frame, text, rows):
    assert list(frame.index[parse_filter(text).mask(frame)]) == rows


def test_columns_are_found_without_evaluating():
    assert parse_filter("age >= 60 and `Plan` == 'basic' or x in [1, 2]").columns() == ["age", "Plan", "x"]


HOSTILE = [
    '@np.lib._datasource.os.system("id > /tmp/pwned") == 0 or `mean radius` > 0',
    "__import__('os').system('id')",
    "age.__class__ == 1",
    "age[0] == 1",
    "open('/etc/passwd') == 1",
    "(lambda: 1)() == 1",
    "age + 1 > 2",
    "age > 1; import os",
    "`mean radius` > 15 #",
    "age == 0x10",
    "age > 1e999",
    "age > " + "9" * 100,
    "region == 'unclosed",
    "`unclosed > 1",
    "age >",
    "1 == 1",
    "'a'",
    "age in region",
    "age in []",
    "(" * (MAX_DEPTH + 5) + "age > 1" + ")" * (MAX_DEPTH + 5),
    "not " * 1000 + "age > 1",
    "",
    "   ",
    "x" * 5000,
    "age > 1 and",
    "f'{age}' == 1",
    "age if age else age",
    "[age] == 1",
    "age == {1: 2}",
    "age is None",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_filters_are_refused_with_a_position(text):
    with pytest.raises(ExpressionError) as info:
        parse_filter(text)
    assert 0 <= info.value.position <= len(text)
    assert "at character" in str(info.value)


def test_the_finding_no_longer_runs_a_shell_command(tmp_path, frame):
    marker = tmp_path / "pwned"
    text = f'@np.lib._datasource.os.system("id > {marker}") == 0 or `mean radius` > 0'
    with pytest.raises(ValueError) as info:
        slice_metrics(lambda x: np.zeros((len(x), 2)), frame.assign(label=0), ["age"], "label", [0, 1], {"evil": text})
    assert "slice 'evil'" in str(info.value) and "'@'" in str(info.value)
    assert not marker.exists()


def test_evaluation_errors_name_the_position(frame):
    with pytest.raises(ExpressionError) as info:
        parse_filter("age > 1 and ghost == 2").mask(frame)
    assert info.value.position == 12 and "ghost" in str(info.value)
    with pytest.raises(ExpressionError) as info:
        parse_filter("region > 3").mask(frame)
    assert "cannot compare" in str(info.value)
    with pytest.raises(ExpressionError):
        parse_filter("age").mask(frame)  # not a boolean column


# ---------------------------------------------------------------------------------------------
# Fuzz: any string is either a filter of the grammar or an ExpressionError; never anything else,
# never a side effect. Sprinkled with Python's own dangerous tokens.
# ---------------------------------------------------------------------------------------------
PIECES = ["`mean radius`", "age", "region", "smoker", "and", "or", "not", "in", "==", "!=", "<", ">=", "(", ")",
          "[", "]", ",", "'north'", '"s"', "1", "-2.5", "1e3", "True", "@", "__import__", "os", ".", "system",
          "lambda", ":", "+", "*", "**", "~", "&", "|", "`", "'", "\\", "\x00", "é", "{", "}", "#", ";"]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.lists(st.sampled_from(PIECES), max_size=30).map(" ".join)))
def test_fuzz_any_string_parses_or_is_refused(text):
    frame = pd.DataFrame({"mean radius": [1.0, 20.0], "age": [1, 70], "region": ["north", "s"], "smoker": [True, False]})
    try:
        row_filter = parse_filter(text)
    except ExpressionError as exc:
        assert 0 <= exc.position <= max(len(text), 1)
        return
    try:
        mask = row_filter.mask(frame)
    except ExpressionError:
        return
    assert mask.dtype == bool and len(mask) == 2


# ---------------------------------------------------------------------------------------------
# At plan time: every expression-taking recipe key (register.card.slices.NAME) refuses what is
# outside the grammar with a RecipeError naming the key and the position, before anything runs.
# ---------------------------------------------------------------------------------------------
def _plan_with_slice(tmp_path, text: str):
    import json

    from framework.run import plan_recipe

    folder = tmp_path / "recipes"
    folder.mkdir(exist_ok=True)
    body = ("# @package _global_\ndefaults:\n  - override /data: breast_cancer\n  - override /train: mlp\n"
            "name: sliced\nserve:\n  enabled: false\nregister:\n  card:\n    slices:\n"
            f"      probe: {json.dumps(text)}\n")
    (folder / "sliced.yaml").write_text(body)
    return plan_recipe(["+recipe=sliced", f"recipes_dir={folder}"])


def test_the_finding_is_refused_at_plan_time(tmp_path):
    from framework.errors import RecipeError

    marker = tmp_path / "pwned"
    with pytest.raises(RecipeError) as info:
        _plan_with_slice(tmp_path, f'@np.lib._datasource.os.system("id > {marker}") == 0 or `mean radius` > 0')
    assert str(info.value).startswith("register.card.slices.probe: at character 1 of")
    assert not marker.exists()
    plan = _plan_with_slice(tmp_path, "`mean radius` > 15 and `mean texture` in [1, 2]")
    assert plan.recipe.register.card.slices["probe"].startswith("`mean radius`")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(HOSTILE[:20]) | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_fuzz_slices_at_plan_time_are_a_recipe_error_naming_the_key(tmp_path, text):
    from framework.errors import RecipeError

    try:
        _plan_with_slice(tmp_path, text)
    except RecipeError as exc:
        assert str(exc).startswith("register.card.slices.probe"), str(exc)
