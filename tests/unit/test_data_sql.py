"""The ``sqlite`` and ``duckdb`` data sources on real databases the tests create: read-only
connections, typed columns, describe() with LIMIT 0, errors naming the database and the query."""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from framework.errors import DataCheckError, RecipeError
from plugins.data_sql import DuckDBDataSource, SqliteDataSource, register_data_sources

ROWS = [
    # id, age, plan, fee, signup, churned
    (1, 34, "basic", 9.5, "2024-01-03", "no"),
    (2, None, "premium", 19.0, "2024-01-09", "yes"),
    (3, 51, "basic", None, "2024-02-11", "no"),
    (4, 27, None, 9.5, "2024-02-20", "yes"),
    (5, 45, "premium", 19.0, "2024-03-01", "no"),
    (6, 38, "basic", 9.5, "2024-03-15", "no"),
]
QUERY = "SELECT id, age, plan, fee, signup, churned\nFROM customers\nWHERE id > 0"


def source(cls, **options):
    config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls.Config), options))
    return cls(config)


@pytest.fixture
def shop_db(tmp_path):
    path = tmp_path / "shop.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, age INTEGER, plan TEXT, fee REAL, "
                    "signup TEXT, churned TEXT)")
        con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", ROWS)
    con.close()
    return path


@pytest.fixture
def shop_duckdb(tmp_path):
    import duckdb

    path = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE customers (id INTEGER, age INTEGER, plan VARCHAR, fee DOUBLE, signup DATE, churned VARCHAR)")
    con.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?)", [list(r) for r in ROWS])
    con.close()
    return path


def test_registered():
    assert register_data_sources() == [SqliteDataSource, DuckDBDataSource]
    assert (SqliteDataSource.name, DuckDBDataSource.name) == ("sqlite", "duckdb")


# ---------------------------------------------------------------------------------------------
# SQLite
# ---------------------------------------------------------------------------------------------
def test_sqlite_query_is_a_typed_dataset(shop_db, stage_ctx):
    ctx = stage_ctx("data")
    src = source(SqliteDataSource, database=str(shop_db), query=QUERY, target="churned", key="id", time="signup",
                 columns={"age": {"dtype": "int"}, "plan": {"dtype": "category"}})
    ds = src.load(ctx)
    assert ds.name == "shop" and ds.classes == ["no", "yes"] and ds.key == "id" and ds.time == "signup"
    assert ds.features == ["age", "plan", "fee"]
    assert {f.name: (f.dtype, f.nullable) for f in ds.schema.features} == {
        "age": ("int", True), "plan": ("category", True), "fee": ("float", True)}
    assert str(ds.frame["age"].dtype) == "Int64"
    assert pd.api.types.is_datetime64_any_dtype(ds.frame["signup"])
    assert ctx.metrics["rows"] == 6

    schema = src.describe()  # LIMIT 0: names from the cursor; types are the declared ones
    assert schema.names == ["id", "age", "plan", "fee", "signup", "churned"]
    assert schema.features == ds.features and schema.target == "churned" and schema.rows is None
    assert {c.name: c.dtype for c in schema.columns} == {
        "id": "unknown", "age": "int", "plan": "category", "fee": "unknown", "signup": "unknown", "churned": "unknown"}


def test_sqlite_regression_and_a_query_with_a_cte(shop_db):
    query = "WITH paying AS (SELECT * FROM customers WHERE fee IS NOT NULL)\nSELECT age, plan, fee FROM paying;"
    src = source(SqliteDataSource, database=str(shop_db), query=query, target="fee", task="regression")
    ds = src.load(None)
    assert ds.task == "regression" and ds.classes is None and ds.frame["fee"].dtype == np.float64
    assert len(ds.frame) == 5 and src.describe().names == ["age", "plan", "fee"]


def test_sqlite_is_opened_read_only(shop_db):
    src = source(SqliteDataSource, database=str(shop_db), query="DELETE FROM customers", target="churned")
    with pytest.raises(RecipeError) as info:
        src.load(None)
    msg = str(info.value)
    assert msg.startswith("data.query: SQLite database '") and "'DELETE FROM customers'" in msg and "read-only" in msg
    with sqlite3.connect(shop_db) as con:
        assert con.execute("SELECT count(*) FROM customers").fetchone()[0] == 6
    con.close()


def test_sqlite_errors_name_the_database_and_the_query(shop_db, tmp_path):
    with pytest.raises(RecipeError) as info:
        source(SqliteDataSource, database=str(shop_db), query="SELECT * FROM customer\nWHERE 1", target="churned").describe()
    msg = str(info.value)
    assert str(shop_db) in msg and "'SELECT * FROM customer ...'" in msg and "no such table: customer" in msg
    assert "nearest: 'customers'" in msg
    with pytest.raises(RecipeError, match=r"refused the query 'SELEC id FROM customers'.*syntax error"):
        source(SqliteDataSource, database=str(shop_db), query="SELEC id FROM customers", target="churned").load(None)
    with pytest.raises(RecipeError, match=r"data.database: no SQLite database file '.*shop2.db'; nearest: 'shop.db'"):
        source(SqliteDataSource, database=str(tmp_path / "shop2.db"), query=QUERY, target="churned").load(None)
    assert not (tmp_path / "shop2.db").exists()  # a read-only open never creates a file
    with pytest.raises(RecipeError, match=r"data.target: no column 'churn' in SQLite database .*nearest: 'churned'"):
        source(SqliteDataSource, database=str(shop_db), query=QUERY, target="churn").load(None)
    with pytest.raises(DataCheckError, match=r"data: SQLite database .* has no rows"):
        source(SqliteDataSource, database=str(shop_db), query="SELECT * FROM customers WHERE id < 0",
               target="churned").load(None)


def test_sqlite_corrupt_file(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database, just some bytes " * 40)
    with pytest.raises(DataCheckError, match=r"data.database: '.*broken.db' is not a SQLite database"):
        source(SqliteDataSource, database=str(path), query="SELECT * FROM t", target="y").load(None)


@pytest.mark.parametrize("options, message", [
    ({"database": "", "query": "SELECT 1"}, "data.database: missing"),
    ({"database": ":memory:", "query": "SELECT 1"}, "in-memory SQLite"),
    ({"database": "x.db", "query": "  ;  "}, "data.query: missing"),
])
def test_sqlite_options(options, message):
    with pytest.raises(RecipeError, match=message):
        source(SqliteDataSource, target="y", **options)


# ---------------------------------------------------------------------------------------------
# DuckDB
# ---------------------------------------------------------------------------------------------
def test_duckdb_database_file_read_only(shop_duckdb):
    src = source(DuckDBDataSource, database=str(shop_duckdb), query=QUERY, target="churned", key="id", time="signup")
    ds = src.load(None)
    assert ds.name == "shop" and ds.classes == ["no", "yes"]
    assert {f.name: (f.dtype, f.nullable) for f in ds.schema.features} == {
        "age": ("int", True), "plan": ("category", True), "fee": ("float", True)}
    assert ds.frame["id"].dtype == np.int64  # DuckDB's INTEGER arrives as int64, whatever its width
    assert pd.api.types.is_datetime64_any_dtype(ds.frame["signup"])

    schema = src.describe()
    described = {c.name: c.dtype for c in schema.columns}
    assert schema.names == list(ds.frame.columns)
    assert {f.name: f.dtype for f in ds.schema.features} == {n: described[n] for n in ds.features}
    assert described["signup"] == "unknown"

    with pytest.raises(RecipeError, match=r"DuckDB database '.*shop.duckdb' refused the query 'DROP TABLE customers'"):
        source(DuckDBDataSource, database=str(shop_duckdb), query="DROP TABLE customers", target="churned").load(None)
    assert len(src.load(None).frame) == 6


def test_duckdb_in_memory_query_reads_parquet_and_csv_files(tmp_path):
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "kind": ["a", None, "b", "a"], "y": [0, 1, 0, 1]})
    frame.iloc[:2].to_parquet(tmp_path / "part-0.parquet")
    frame.iloc[2:].to_parquet(tmp_path / "part-1.parquet")
    frame.to_csv(tmp_path / "all.csv", index=False)
    query = f"SELECT x, kind, y\nFROM read_parquet('{tmp_path}/part-*.parquet')\nORDER BY x"
    src = source(DuckDBDataSource, query=query, target="y", name="parts")
    ds = src.load(None)
    assert ds.name == "parts" and ds.frame["x"].tolist() == [1.0, 2.0, 3.0, 4.0] and ds.classes == [0, 1]
    assert [(c.name, c.dtype) for c in src.describe().columns] == [("x", "float"), ("kind", "category"), ("y", "int")]

    from_csv = source(DuckDBDataSource, database=":memory:", query=f"SELECT * FROM read_csv('{tmp_path}/all.csv')",
                      target="y").load(None)
    assert from_csv.frame["kind"].isna().sum() == 1 and len(from_csv.frame) == 4


def test_duckdb_errors_name_the_database_and_the_query(tmp_path, shop_duckdb):
    with pytest.raises(RecipeError) as info:
        source(DuckDBDataSource, database=str(shop_duckdb), query="SELECT *\nFROM customer", target="y").describe()
    msg = str(info.value)
    assert msg.startswith(f"data.query: DuckDB database '{shop_duckdb}' refused the query 'SELECT * ...'")
    assert "customer" in msg and "LINE 1" not in msg
    with pytest.raises(RecipeError, match=r"in-memory database refused the query 'SELECT \* FROM read_parquet"):
        source(DuckDBDataSource, query=f"SELECT * FROM read_parquet('{tmp_path}/none-*.parquet')", target="y").load(None)
    with pytest.raises(RecipeError, match=r"data.database: no DuckDB database file '.*shop.db'; nearest: 'shop.duckdb'"):
        source(DuckDBDataSource, database=str(tmp_path / "shop.db"), query="SELECT 1", target="y").load(None)
    assert not (tmp_path / "shop.db").exists()
    broken = tmp_path / "broken.duckdb"
    broken.write_bytes(b"not a duckdb file " * 500)
    with pytest.raises(DataCheckError, match=r"data.database: cannot open DuckDB database '.*broken.duckdb'"):
        source(DuckDBDataSource, database=str(broken), query="SELECT 1 AS y", target="y").load(None)
    with pytest.raises(RecipeError, match=r"data.query: missing"):
        source(DuckDBDataSource, target="y")


def test_a_query_is_never_python(tmp_path):
    """The query is SQL for the database; text that would run as Python is just a bad query."""
    marker = tmp_path / "ran"
    query = f"__import__('pathlib').Path('{marker}').touch()"
    for cls, options in ((DuckDBDataSource, {}), (SqliteDataSource, {"database": str(tmp_path / "e.db")})):
        if cls is SqliteDataSource:
            sqlite3.connect(tmp_path / "e.db").close()
        with pytest.raises(RecipeError, match="refused the query"):
            source(cls, query=query, target="y", **options).load(None)
    assert not marker.exists()
