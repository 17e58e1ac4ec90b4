"""Plan-time data checks: the columns a recipe names exist in the source, and the trainer's model
can do the data's task; checked by ``plan_recipe`` before anything runs, without loading rows."""
from __future__ import annotations

import sqlite3
import textwrap
from dataclasses import dataclass

import pandas as pd
import pytest

from framework import DataSource, SourceSchema
from framework.errors import PluginError, RecipeError
from framework.run import plan_recipe

CUSTOMERS = "Age,Plan,monthly_fee,signup,churned\n34,basic,9.5,2024-01-03,no\n51,premium,19.0,2024-01-09,yes\n"


@pytest.fixture
def recipes(tmp_path):
    """write(name, body) -> the overrides that plan recipes/NAME.yaml from tmp_path."""
    (tmp_path / "customers.csv").write_text(CUSTOMERS)
    folder = tmp_path / "recipes"
    folder.mkdir()

    def write(name: str, body: str) -> list[str]:
        text = "# @package _global_\n" + textwrap.dedent(body).replace("DATA", str(tmp_path))
        (folder / f"{name}.yaml").write_text(text)
        return [f"+recipe={name}", f"recipes_dir={folder}"]

    return write


CSV_RECIPE = """\
defaults:
  - override /data: csv
name: churn
data:
  path: DATA/customers.csv
  target: churned
serve:
  enabled: false
"""


def plan_error(overrides: list[str]) -> str:
    with pytest.raises(RecipeError) as info:
        plan_recipe(overrides)
    return str(info.value)


def test_a_csv_recipe_plans(recipes):
    plan = plan_recipe(recipes("churn", CSV_RECIPE) + ["data.time=signup"])
    data = plan.stage("data").component
    assert data.type == "csv" and data.plugin == "data_files"
    assert data.config.target == "churned" and data.config.time == "signup"


def test_a_check_naming_a_missing_column(recipes):
    body = CSV_RECIPE + """\
checks:
  - type: pandera_schema
    columns:
      age: {dtype: float}
"""
    msg = plan_error(recipes("churn", body))
    assert msg.startswith("checks[0].columns.age: no column 'age' in data (csv, path ")
    assert "customers.csv" in msg and msg.endswith("nearest: 'Age'")


@pytest.mark.parametrize("override, message", [
    ("data.target=Churned", "data.target: no column 'Churned' in data (csv, path "),
    ("data.features=[age,Plan]", "data.features[0]: no column 'age'"),
    ("data.key=customer_id", "data.key: no column 'customer_id'"),
    ("data.time=signed_up", "data.time: no column 'signed_up'"),
    ("+data.columns.fee.dtype=float", "data.columns.fee: no column 'fee'"),
])
def test_data_columns_the_recipe_names_must_exist(recipes, override, message):
    msg = plan_error(recipes("churn", CSV_RECIPE) + [override])
    assert message in msg and ("nearest:" in msg or "columns: 'Age', 'Plan'" in msg)


def test_a_missing_file_fails_at_plan_time(recipes, tmp_path):
    msg = plan_error(recipes("churn", CSV_RECIPE) + [f"data.path={tmp_path}/customer.csv"])
    assert msg.startswith("data.path: no such file or folder") and "nearest: 'customers.csv'" in msg


def test_sql_source_is_checked_through_its_query(recipes, tmp_path):
    with sqlite3.connect(tmp_path / "shop.db") as con:
        pd.read_csv(tmp_path / "customers.csv").to_sql("customers", con, index=False)
    con.close()
    body = """\
defaults:
  - override /data: sqlite
name: churn_sql
data:
  database: DATA/shop.db
  query: SELECT Age, Plan, churned FROM customers
  target: churned
serve:
  enabled: false
"""
    overrides = recipes("churn_sql", body)
    assert plan_recipe(overrides).stage("data").component.type == "sqlite"
    msg = plan_error(overrides + ["data.key=monthly_fee"])
    assert msg.startswith("data.key: no column 'monthly_fee' in data (sqlite, database ")
    assert "columns: 'Age', 'Plan', 'churned'" in msg


def test_a_task_the_model_cannot_do_is_refused(recipes):
    # the mlp regresses; the ranker does not
    plan_recipe(recipes("churn", CSV_RECIPE) + ["data.task=regression"])
    msg = plan_error(recipes("churn", CSV_RECIPE) + ["data.task=regression", "train=ranker"])
    assert msg.startswith("train.model: model 'ranker' can do classification and ranking, but the data's task is regression")
    msg = plan_error(["+recipe=quickstart", "data=diabetes", "train=ranker"])
    assert "train.model: model 'ranker'" in msg and "(data: sklearn, dataset diabetes)" in msg


#: the quickstart's model card slices name breast cancer columns
NO_SLICES = ["~register.card.slices.large_masses", "~register.card.slices.small_masses"]


def test_packaged_data_plans_with_the_mlp():
    plan = plan_recipe(["+recipe=quickstart", "data=seattle_weather", "serve.enabled=false", *NO_SLICES])
    assert plan.stage("data").component.config.dataset == "seattle-weather"
    msg = plan_error(["+recipe=quickstart", "data=cars", "serve.enabled=false", "data.target=origin", *NO_SLICES])
    assert msg.startswith("data.target: no column 'origin' in data (vega, dataset cars); nearest: 'Origin'")


def test_a_source_that_cannot_describe_itself_is_not_checked():
    from plugins.data_sklearn import SklearnDataSource

    assert SklearnDataSource().describe() is None
    plan_recipe(["+recipe=quickstart"])  # plans: nothing to compare the columns with


class _Broken(DataSource):
    name = "broken_describe"

    @dataclass
    class Config:
        target: str = "y"

    def describe(self) -> SourceSchema:
        raise KeyError("oops")


class _Described(DataSource):
    name = "described"

    @dataclass
    class Config:
        note: str = ""

    def describe(self) -> SourceSchema:
        from framework import ColumnInfo

        return SourceSchema([ColumnInfo("x", "float"), ColumnInfo("label", "category")], target="lable", features=["x"])


def _components_with(*classes):
    from framework import hookimpl
    from framework.plugins import Components, get_plugin_manager

    class Extra:
        @hookimpl
        def register_data_sources(self):
            return list(classes)

    return Components.collect(get_plugin_manager(extra=[Extra()]))


def test_a_third_party_schema_is_checked_and_a_broken_describe_names_the_plugin():
    components = _components_with(_Broken, _Described)
    msg = plan_error_with(components, ["+recipe=quickstart", "data={type: described}", "checks=none"])
    assert msg.startswith("data.target: no column 'lable' in data (described); nearest: 'label'")
    with pytest.raises(PluginError, match=r"data \(broken_describe, plugin .*\): describe\(\) failed: KeyError"):
        plan_recipe(["+recipe=quickstart", "data={type: broken_describe}", "checks=none"], components)


def plan_error_with(components, overrides: list[str]) -> str:
    with pytest.raises(RecipeError) as info:
        plan_recipe(overrides, components)
    return str(info.value)


def test_a_model_that_declares_its_tasks_is_taken_at_its_word(monkeypatch):
    """The proposed contract: ``Model.tasks``. A model that says it regresses plans on diabetes."""
    from plugins.model_mlp import MLPModel

    monkeypatch.setattr(MLPModel, "tasks", ("classification", "regression"), raising=False)
    plan = plan_recipe(["+recipe=quickstart", "data=diabetes", "serve.enabled=false"])
    assert plan.stage("data").component.config.dataset == "diabetes"
    monkeypatch.setattr(MLPModel, "tasks", ("regression",), raising=False)
    msg = plan_error(["+recipe=quickstart"])
    assert msg.startswith("train.model: model 'mlp' can do regression, but the data's task is classification")
    assert "declares no" not in msg


def test_model_card_slices_name_columns_of_the_data(recipes):
    """A slice query is parsed for the columns it names (never evaluated)."""
    msg = plan_error(["+recipe=quickstart", "data=seattle_weather", "serve.enabled=false"])
    assert msg.startswith("register.card.slices.large_masses: no column 'mean radius' in data (vega, dataset seattle-weather)")
    body = CSV_RECIPE + """\
register:
  card:
    slices:
      seniors: "age >= 60 and `Plan` == 'basic'"
"""
    msg = plan_error(recipes("churn", body))
    assert msg.startswith("register.card.slices.seniors: no column 'age'") and msg.endswith("nearest: 'Age'")
    plan_recipe(recipes("churn", body.replace("age >=", "Age >=")))
