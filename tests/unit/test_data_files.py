"""The ``csv`` and ``parquet`` data sources on files the tests write: strings, missing values,
several files, globs, folders, fsspec URLs; typed columns; every error names the path."""
from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from framework import Dataset, SourceSchema
from framework.errors import DataCheckError, RecipeError
from plugins.data_files import CsvDataSource, ParquetDataSource, register_data_sources

CUSTOMERS = """id,age,plan,monthly_fee,active,signup,churned
1,34,basic,9.5,true,2024-01-03,no
2,,premium,19.0,false,2024-01-09,yes
3,51,basic,,true,2024-02-11,no
4,27,,9.5,true,2024-02-20,yes
5,45,premium,19.0,false,2024-03-01,no
6,38,basic,9.5,true,2024-03-15,no
"""


def source(cls, **options):
    """A source built as the planner builds it: the options merged into its structured Config."""
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), options))
    return cls(config)


def csv_source(**options) -> CsvDataSource:
    return source(CsvDataSource, **options)


def parquet_source(**options) -> ParquetDataSource:
    return source(ParquetDataSource, **options)


@pytest.fixture
def customers_csv(tmp_path):
    path = tmp_path / "customers.csv"
    path.write_text(CUSTOMERS)
    return path


@pytest.fixture
def customers_frame():
    return pd.DataFrame({
        "id": [1, 2, 3, 4, 5, 6],
        "age": pd.array([34, None, 51, 27, 45, 38], dtype="Int64"),
        "plan": ["basic", "premium", "basic", None, "premium", "basic"],
        "monthly_fee": [9.5, 19.0, None, 9.5, 19.0, 9.5],
        "active": [True, False, True, True, False, True],
        "churned": ["no", "yes", "no", "yes", "no", "no"],
    })


def features_of(ds: Dataset) -> dict:
    return {f.name: (f.dtype, f.nullable) for f in ds.schema.features}


def test_registered_and_configs_are_structured():
    assert register_data_sources() == [CsvDataSource, ParquetDataSource]
    assert (CsvDataSource.name, ParquetDataSource.name) == ("csv", "parquet")
    assert OmegaConf.structured(CsvDataSource.Config).sep == ","


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------
def test_csv_with_strings_and_missing_values_is_typed(customers_csv, stage_ctx):
    ctx = stage_ctx("data")
    ds = csv_source(path=str(customers_csv), target="churned", key="id", time="signup").load(ctx)

    assert ds.name == "customers" and ds.task == "classification" and ds.target == "churned"
    assert ds.key == "id" and ds.time == "signup"
    assert ds.features == ["age", "plan", "monthly_fee", "active"]  # key and time are not features
    assert ds.classes == ["no", "yes"]
    assert features_of(ds) == {
        "age": ("float", True),  # a CSV integer column with a gap reads as float unless declared
        "plan": ("category", True),
        "monthly_fee": ("float", True),
        "active": ("bool", False),
    }
    assert ds.schema.features[1].categories == ["basic", "premium"]
    assert pd.api.types.is_datetime64_any_dtype(ds.frame["signup"])
    assert ds.frame["id"].dtype == np.int64 and ds.frame["id"].is_unique
    assert ctx.metrics["rows"] == 6 and ctx.metrics["files"] == 1
    assert str(customers_csv) in ds.description


def test_csv_declared_columns_convert_and_are_the_schema(customers_csv):
    ds = csv_source(
        path=str(customers_csv), target="churned", features=["age", "plan", "active"],
        columns={"age": {"dtype": "int", "nullable": True}, "plan": {"dtype": "category"},
                 "active": {"dtype": "bool", "nullable": False}},
    ).load(None)
    assert ds.features == ["age", "plan", "active"]
    assert list(ds.frame.columns) == ["age", "plan", "active", "churned"]  # unused columns are left out
    assert str(ds.frame["age"].dtype) == "Int64" and ds.frame["age"].isna().sum() == 1
    assert features_of(ds) == {"age": ("int", True), "plan": ("category", True), "active": ("bool", False)}


def test_csv_declared_category_keeps_text_as_written(tmp_path):
    path = tmp_path / "zip.csv"
    path.write_text("zip,flag,label\n02139,yes,a\n10001,no,b\n02139,yes,a\n")
    ds = csv_source(path=str(path), target="label",
                    columns={"zip": {"dtype": "category"}, "flag": {"dtype": "bool"}}).load(None)
    assert ds.frame["zip"].tolist() == ["02139", "10001", "02139"]  # leading zeros kept
    assert ds.frame["flag"].tolist() == [True, False, True] and ds.frame["flag"].dtype == bool


def test_csv_options_sep_encoding_na_values_header(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_bytes("größe;stadt;ziel\n1,5;Köln;ja\n-;München;nein\n2,0;Köln;ja\n".replace(",", ".").encode("latin-1"))
    ds = csv_source(path=str(path), sep=";", encoding="latin-1", na_values=["-"], target="ziel").load(None)
    assert ds.frame["größe"].isna().tolist() == [False, True, False]
    assert ds.frame["stadt"].tolist() == ["Köln", "München", "Köln"]

    headless = tmp_path / "headless.csv"
    headless.write_text("1.0,a,x\n2.0,b,y\n")
    ds = csv_source(path=str(headless), header=None, names=["v", "w", "label"], target="label").load(None)
    assert ds.features == ["v", "w"] and ds.classes == ["x", "y"]
    with pytest.raises(RecipeError, match=r"data.names: a file without a header"):
        csv_source(path=str(headless), header=None, target="label")


def test_csv_regression_keeps_classes_none(tmp_path):
    path = tmp_path / "houses.csv"
    path.write_text("rooms,area,price\n3,70.5,250000\n4,95,310000.5\n2,48,180000\n")
    ds = csv_source(path=str(path), target="price", task="regression").load(None)
    assert ds.task == "regression" and ds.classes is None
    assert ds.frame["price"].dtype == np.float64


def test_csv_several_files_folders_and_globs_are_one_table(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    (folder / "2024-01.csv").write_text("a,b,y\n1,x,p\n2,y,q\n")
    (folder / "2024-02.csv").write_text("b,a,y\nz,3,p\n")  # same columns, another order
    with gzip.open(folder / "2024-03.csv.gz", "wt") as f:
        f.write("a,b,y\n4,w,q\n")
    (folder / "notes.md").write_text("not data")
    (folder / "_SUCCESS").write_text("")

    whole = csv_source(path=str(folder), target="y").load(None)
    assert whole.frame["a"].tolist() == [1, 2, 3, 4] and whole.frame["b"].tolist() == ["x", "y", "z", "w"]
    assert whole.name == "parts"
    globbed = csv_source(path=str(folder / "2024-0[12].csv"), target="y").load(None)
    assert globbed.frame["a"].tolist() == [1, 2, 3]
    by_url = csv_source(path=f"file://{folder}/*.csv", target="y").load(None)
    assert by_url.frame["a"].tolist() == [1, 2, 3]


def test_csv_files_with_different_columns_name_both_files(tmp_path):
    (tmp_path / "a.csv").write_text("a,b,y\n1,2,p\n")
    (tmp_path / "b.csv").write_text("a,c,y\n1,2,p\n")
    with pytest.raises(DataCheckError) as info:
        csv_source(path=str(tmp_path / "*.csv"), target="y").load(None)
    msg = str(info.value)
    assert "a.csv" in msg and "b.csv" in msg and "missing in" in msg and "['b']" in msg and "['c']" in msg


def test_memory_url_reads_like_a_file():
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/framework-tests/shop/orders.csv", b"amount,country,fraud\n10.5,FR,0\n99.0,,1\n12.0,DE,0\n")
    fs.pipe("/framework-tests/shop/more.csv", b"amount,country,fraud\n15.0,FR,0\n")
    try:
        ds = csv_source(path="memory://framework-tests/shop/orders.csv", target="fraud").load(None)
        assert ds.classes == [0, 1] and ds.frame["country"].isna().sum() == 1
        both = csv_source(path="memory://framework-tests/shop/", target="fraud").load(None)
        assert len(both.frame) == 4
        schema = csv_source(path="memory://framework-tests/shop/*.csv", target="fraud").describe()
        assert schema.names == ["amount", "country", "fraud"]
        with pytest.raises(RecipeError, match=r"memory://framework-tests/shop/nothing\*"):
            csv_source(path="memory://framework-tests/shop/nothing*", target="fraud").load(None)
    finally:
        fs.rm("/framework-tests", recursive=True)


# ---------------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------------
def test_parquet_keeps_file_types_and_describes_from_footers(tmp_path, customers_frame):
    path = tmp_path / "customers.parquet"
    customers_frame.to_parquet(path)
    src = parquet_source(path=str(path), target="churned", key="id")
    ds = src.load(None)
    assert features_of(ds) == {
        "age": ("int", True),  # Parquet knows it is an integer column with a gap
        "plan": ("category", True),
        "monthly_fee": ("float", True),
        "active": ("bool", False),
    }
    assert str(ds.frame["age"].dtype) == "Int64" and ds.frame["id"].dtype == np.int64

    schema = src.describe()
    assert isinstance(schema, SourceSchema) and schema.rows == 6
    assert schema.names == list(customers_frame.columns)
    assert schema.target == "churned" and schema.features == ds.features
    described = {c.name: (c.dtype, c.nullable) for c in schema.columns}
    assert {n: described[n] for n in ds.features} == features_of(ds)  # describe() agrees with load()


def test_parquet_folder_of_parts(tmp_path, customers_frame):
    folder = tmp_path / "table"
    folder.mkdir()
    customers_frame.iloc[:3].to_parquet(folder / "part-0.parquet")
    customers_frame.iloc[3:].to_parquet(folder / "part-1.parquet")
    (folder / ".part-1.parquet.crc").write_text("x")
    src = parquet_source(path=str(folder), target="churned")
    assert len(src.load(None).frame) == 6 and src.describe().rows == 6


def test_parquet_on_memory_url(customers_frame):
    import fsspec

    fs = fsspec.filesystem("memory")
    with fs.open("/framework-tests/c.parquet", "wb") as f:
        customers_frame.to_parquet(f)
    try:
        ds = parquet_source(path="memory://framework-tests/c.parquet", target="churned").load(None)
        assert len(ds.frame) == 6
    finally:
        fs.rm("/framework-tests", recursive=True)


# ---------------------------------------------------------------------------------------------
# describe() agrees with load()
# ---------------------------------------------------------------------------------------------
def test_csv_describe_reads_a_few_rows_and_agrees_with_load(customers_csv):
    src = csv_source(path=str(customers_csv), target="churned", key="id", time="signup",
                     columns={"age": {"dtype": "int"}})
    schema = src.describe()
    ds = src.load(None)
    assert schema.names == ["id", "age", "plan", "monthly_fee", "active", "signup", "churned"]
    assert schema.target == ds.target and schema.features == ds.features and schema.rows is None
    described = {c.name: c.dtype for c in schema.columns}
    assert {f.name: f.dtype for f in ds.schema.features} == {n: described[n] for n in ds.features}


# ---------------------------------------------------------------------------------------------
# Errors: each names the path (or the key) and what to do
# ---------------------------------------------------------------------------------------------
def test_missing_file_names_the_path_and_the_nearest_file(tmp_path, customers_csv):
    with pytest.raises(RecipeError) as info:
        csv_source(path=str(tmp_path / "customer.csv"), target="churned").describe()
    msg = str(info.value)
    assert msg.startswith("data.path: no such file or folder") and "customer.csv" in msg
    assert "nearest: 'customers.csv'" in msg
    with pytest.raises(RecipeError, match="does not exist"):
        csv_source(path=str(tmp_path / "nope" / "x.csv"), target="y").load(None)


def test_glob_matching_nothing_and_empty_folder(tmp_path, customers_csv):
    with pytest.raises(RecipeError) as info:
        csv_source(path=str(tmp_path / "*.tsv"), target="y").load(None)
    assert "no file matches" in str(info.value) and "holds: customers.csv" in str(info.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RecipeError, match="holds no parquet files"):
        parquet_source(path=str(empty), target="y").load(None)


def test_empty_and_corrupt_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataCheckError, match=r"'.*empty.csv' is empty"):
        csv_source(path=str(empty), target="y").load(None)
    header_only = tmp_path / "header.csv"
    header_only.write_text("a,y\n")
    with pytest.raises(DataCheckError, match="has no rows"):
        csv_source(path=str(header_only), target="y").load(None)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,y\n1,2\n1,2,3,4\n")
    with pytest.raises(DataCheckError, match=r"cannot read '.*ragged.csv' as CSV"):
        csv_source(path=str(ragged), target="y").load(None)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("a,y\n1,é\n".encode("latin-1"))
    with pytest.raises(DataCheckError, match=r"encoding 'utf-8'"):
        csv_source(path=str(latin), target="y").load(None)

    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet at all")
    with pytest.raises(DataCheckError, match=r"cannot read '.*bad.parquet' as Parquet"):
        parquet_source(path=str(bad), target="y").load(None)
    with pytest.raises(DataCheckError, match=r"cannot read '.*bad.parquet' as Parquet"):
        parquet_source(path=str(bad), target="y").describe()
    zero = tmp_path / "zero.parquet"
    zero.write_bytes(b"")
    with pytest.raises(DataCheckError, match="is empty"):
        parquet_source(path=str(zero), target="y").load(None)


def test_missing_target_and_columns_name_the_nearest(customers_csv):
    with pytest.raises(RecipeError) as info:
        csv_source(path=str(customers_csv), target="Churned").load(None)
    assert str(info.value).startswith("data.target: no column 'Churned' in csv '") and "nearest: 'churned'" in str(info.value)
    with pytest.raises(RecipeError, match=r"data.features\[1\]: no column 'plans'.*nearest: 'plan'"):
        csv_source(path=str(customers_csv), target="churned", features=["age", "plans"]).load(None)
    with pytest.raises(RecipeError, match=r"data.columns.fee: no column 'fee'"):
        csv_source(path=str(customers_csv), target="churned", columns={"fee": {"dtype": "float"}}).load(None)
    with pytest.raises(RecipeError, match=r"data.time: no column 'signed'"):
        csv_source(path=str(customers_csv), target="churned", time="signed").load(None)


def test_values_that_do_not_fit_the_declared_type(customers_csv, tmp_path):
    with pytest.raises(DataCheckError) as info:
        csv_source(path=str(customers_csv), target="churned", columns={"plan": {"dtype": "float"}}).load(None)
    assert "data.columns.plan.dtype" in str(info.value) and "'basic'" in str(info.value)
    with pytest.raises(DataCheckError, match=r"data.columns.age.nullable: false.*1 of 6 rows"):
        csv_source(path=str(customers_csv), target="churned", columns={"age": {"nullable": False}}).load(None)
    with pytest.raises(DataCheckError, match=r"declared int"):
        csv_source(path=str(customers_csv), target="churned", columns={"monthly_fee": {"dtype": "int"}}).load(None)
    with pytest.raises(DataCheckError, match=r"declared bool"):
        csv_source(path=str(customers_csv), target="churned", columns={"plan": {"dtype": "bool"}}).load(None)
    dup = tmp_path / "dup.csv"
    dup.write_text("id,x,y\n1,1,a\n1,2,b\n")
    with pytest.raises(DataCheckError, match=r"data.key: 'id' must identify each row"):
        csv_source(path=str(dup), target="y", key="id").load(None)
    bad_time = tmp_path / "time.csv"
    bad_time.write_text("when,x,y\n2024-01-01,1,a\nsoon,2,b\n")
    with pytest.raises(DataCheckError, match=r"data.time: 'when'.*'soon'"):
        csv_source(path=str(bad_time), target="y", time="when").load(None)


def test_missing_target_values_error_or_drop(tmp_path, stage_ctx):
    path = tmp_path / "gaps.csv"
    path.write_text("x,y\n1,a\n2,\n3,b\n4,a\n")
    with pytest.raises(DataCheckError) as info:
        csv_source(path=str(path), target="y").load(None)
    assert "no value in 1 of 4 rows" in str(info.value) and "missing_target: drop" in str(info.value)
    ctx = stage_ctx("data")
    ds = csv_source(path=str(path), target="y", missing_target="drop").load(ctx)
    assert len(ds.frame) == 3 and ctx.metrics["rows_dropped_missing_target"] == 1


def test_task_and_target_that_disagree(tmp_path):
    path = tmp_path / "prices.csv"
    path.write_text("x,price,colour\n1,10.25,red\n2,11.5,blue\n")
    with pytest.raises(RecipeError, match=r"data.task: classification needs class labels.*task: regression"):
        csv_source(path=str(path), target="price").load(None)
    with pytest.raises(RecipeError, match=r"data.task: regression needs a numeric target"):
        csv_source(path=str(path), target="colour", task="regression").load(None)


@pytest.mark.parametrize("options, message", [
    ({"target": ""}, "data.target: missing"),
    ({"target": "y", "task": "regresion"}, "Did you mean 'regression'"),
    ({"target": "y", "features": ["a", "y"]}, r"data.features\[1\]: 'y' is the target column"),
    ({"target": "y", "features": ["a", "a"]}, r"data.features\[1\]: 'a' is listed twice"),
    ({"target": "y", "key": "y"}, "data.target: 'y' is already the key column"),
    ({"target": "y", "columns": {"a": {"dtype": "string"}}}, r"data.columns.a.dtype: must be one of"),
    ({"target": "y", "missing_target": "skip"}, "data.missing_target"),
    ({"target": "y", "name": "my data"}, "data.name"),
    ({"target": "y", "path": ""}, "data.path: missing"),
])
def test_options_are_checked_when_the_source_is_built(options, message):
    with pytest.raises(RecipeError, match=message):
        csv_source(**{"path": "x.csv", **options})


def test_unknown_protocol_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"data.path: cannot open 'nosuchproto://x.csv'"):
        csv_source(path="nosuchproto://x.csv", target="y").describe()


def test_a_home_relative_path(monkeypatch, tmp_path, customers_csv):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert len(csv_source(path="~/customers.csv", target="churned").load(None).frame) == 6
