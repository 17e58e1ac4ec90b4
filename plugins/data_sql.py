"""Data sources ``sqlite`` and ``duckdb``: a table as the result of a SQL query.

``sqlite`` opens a database file with the standard library, read-only (``mode=ro``). ``duckdb``
is embedded (no server): a database file opened ``read_only``, or an in-memory database whose
query reads files itself (``SELECT * FROM read_parquet('data/*.parquet')``). The query is SQL
text handed to the database, as the recipe's author wrote it; nothing in it is evaluated as
Python. Which column is what (target, features, key, time, task, declared types) is
``data_tables.TableOptions``.

``describe()`` asks the database for the query's columns with ``LIMIT 0``: no rows are read.

pandas and duckdb are imported inside the methods: the core imports every plugin at start-up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from framework import ColumnInfo, hookimpl
from framework.errors import DataCheckError, RecipeError

from plugins.data_tables import TableOptions, TableSource, dataset_name, first_line, nearest

IN_MEMORY = ":memory:"


def _engine_message(exc: BaseException) -> str:
    """The engine's own words, without the echo of the query it adds (duckdb's ``LINE 1: ...``)."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    kept = [line.strip() for line in lines if not line.startswith("LINE ") and set(line.strip()) != {"^"}]
    return " ".join(kept[:2]) or type(exc).__name__


def _limit_zero(query: str) -> str:
    return f"SELECT * FROM (\n{query}\n) AS framework_describe LIMIT 0"


def _strip(query: str) -> str:
    """The query without trailing semicolons and blanks (it is wrapped in a subquery)."""
    return re.sub(r"[\s;]+$", "", query)


class SqlSource(TableSource):
    """What SQLite and DuckDB share: a database, a query, errors that name both."""

    engine = ""

    @classmethod
    def check_location(cls, config: Any, key: str) -> None:
        if not _strip(config.query or "").strip():
            raise RecipeError(f"{key}.query: missing; the SQL query whose rows are the table, "
                              f"e.g. 'query: SELECT * FROM customers'")

    # a subclass implements these three
    def connect(self) -> Any:
        raise NotImplementedError

    def database_label(self) -> str:
        raise NotImplementedError

    def refused(self, con: Any, exc: BaseException) -> Exception:
        """The framework error for an engine error raised by the query."""
        raise NotImplementedError

    def _database_file(self, path: str) -> Path:
        """The database file, which must exist (opening a missing one would create it)."""
        file = Path(path).expanduser()
        if not file.is_file():
            parent = file.parent
            hint = ""
            if parent.is_dir():
                close = nearest(file.name, [p.name for p in parent.iterdir()])
                hint = "; nearest: " + ", ".join(f"'{c}'" for c in close) if close else ""
            else:
                hint = f" (folder '{parent}' does not exist)"
            raise RecipeError(f"data.database: no {self.engine} database file '{path}'{hint}")
        return file

    def where(self) -> str:
        return f"{self.engine} {self.database_label()}, query '{first_line(self.config.query)}'"

    def _columns(self, cursor: Any) -> list[str]:
        if cursor.description is None:
            raise RecipeError(f"data.query: {self.engine} {self.database_label()}: the query "
                              f"'{first_line(self.config.query)}' returns no rows; it must be a SELECT")
        return [str(d[0]) for d in cursor.description]

    def run(self, con: Any, query: str) -> Any:
        try:
            return con.execute(query)
        except Exception as exc:
            if self.is_engine_error(exc):
                raise self.refused(con, exc) from None
            raise

    def is_engine_error(self, exc: BaseException) -> bool:
        raise NotImplementedError

    def describe_cursor(self, con: Any) -> Any:
        """A cursor over no rows whose description lists the query's columns."""
        query = _strip(self.config.query)
        try:
            return con.execute(_limit_zero(query))
        except Exception as exc:
            if not self.is_engine_error(exc):
                raise
        # the query cannot be a subquery (a PRAGMA, SHOW ...): its own description, or its own error
        return self.run(con, query)

    def rows_query(self) -> str:
        return _strip(self.config.query)

    def message(self, exc: BaseException) -> str:
        return (f"data.query: {self.engine} {self.database_label()} refused the query "
                f"'{first_line(self.config.query)}': {_engine_message(exc)}")


class SqliteDataSource(SqlSource):
    name = "sqlite"
    summary = "the rows of a SQL query on a SQLite database file (standard library, read-only)"
    engine = "SQLite"

    @dataclass
    class Config(TableOptions):
        #: the database file (opened read-only)
        database: str = ""
        #: SQL; its result is the table
        query: str = ""

    @classmethod
    def check_location(cls, config: Any, key: str) -> None:
        if not config.database:
            raise RecipeError(f"{key}.database: missing; the SQLite database file, e.g. 'database: data/shop.db'")
        if config.database == IN_MEMORY:
            raise RecipeError(f"{key}.database: an in-memory SQLite database holds no data; give a database file")
        super().check_location(config, key)

    def database_label(self) -> str:
        return f"database '{self.config.database}'"

    def connect(self) -> Any:
        import sqlite3

        file = self._database_file(self.config.database)
        try:
            return sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise DataCheckError(f"data.database: cannot open SQLite database '{self.config.database}': {exc}") from None

    def is_engine_error(self, exc: BaseException) -> bool:
        import sqlite3

        return isinstance(exc, sqlite3.Error)

    def refused(self, con: Any, exc: BaseException) -> Exception:
        import sqlite3

        text = str(exc)
        if isinstance(exc, sqlite3.DatabaseError) and "not a database" in text:
            return DataCheckError(f"data.database: '{self.config.database}' is not a SQLite database, or it is "
                                  f"corrupt: {text}", [{"column": None, "check": "readable", "rows": []}])
        message = self.message(exc)
        missing = re.match(r"no such table: (\S+)", text)
        if missing:
            try:
                tables = [r[0] for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') ORDER BY name")]
            except sqlite3.Error:
                tables = []
            close = nearest(missing.group(1).split(".")[-1], tables)
            if close:
                message += "; nearest: " + ", ".join(f"'{c}'" for c in close)
            elif tables:
                message += f"; tables: {', '.join(tables[:20])}"
            else:
                message += "; the database has no tables"
        if "readonly" in text:
            message += " (the database is opened read-only: a recipe's query only reads)"
        return RecipeError(message)

    def read(self, ctx: Any) -> tuple[Any, str, str, str]:
        import pandas as pd

        con = self.connect()
        try:
            cursor = self.run(con, self.rows_query())
            names = self._columns(cursor)
            try:
                rows = cursor.fetchall()
            except Exception as exc:  # an error met while stepping through the rows
                if self.is_engine_error(exc):
                    raise self.refused(con, exc) from None
                raise
        finally:
            con.close()
        frame = pd.DataFrame.from_records(rows, columns=names, coerce_float=True)
        name = dataset_name(Path(self.config.database).stem)
        return frame, name, f"SQLite query on {self.config.database}: {first_line(self.config.query)}", self.where()

    def peek(self) -> tuple[list[ColumnInfo], int | None]:
        con = self.connect()
        try:
            names = self._columns(self.describe_cursor(con))
        finally:
            con.close()
        # SQLite columns have no fixed type: the declared types (``columns:``) say what they hold
        return [ColumnInfo(n, "unknown") for n in names], None


#: DuckDB type name (its first word) -> FEATURE_TYPES
_DUCKDB_TYPES = {
    "BOOLEAN": "bool",
    "TINYINT": "int", "SMALLINT": "int", "INTEGER": "int", "BIGINT": "int", "HUGEINT": "int",
    "UTINYINT": "int", "USMALLINT": "int", "UINTEGER": "int", "UBIGINT": "int", "UHUGEINT": "int",
    "FLOAT": "float", "DOUBLE": "float", "DECIMAL": "float",
    "VARCHAR": "category", "ENUM": "category",
}


class DuckDBDataSource(SqlSource):
    name = "duckdb"
    summary = "the rows of a SQL query on DuckDB (embedded): a database file (read-only) or in-memory over Parquet/CSV files"
    engine = "DuckDB"

    @dataclass
    class Config(TableOptions):
        #: a database file (opened read-only); null or ':memory:': an in-memory database, for a
        #: query that reads files itself (read_parquet, read_csv)
        database: Optional[str] = None
        #: SQL; its result is the table
        query: str = ""

    @property
    def in_memory(self) -> bool:
        return self.config.database in (None, "", IN_MEMORY)

    def database_label(self) -> str:
        return "in-memory database" if self.in_memory else f"database '{self.config.database}'"

    def connect(self) -> Any:
        import duckdb

        if self.in_memory:
            return duckdb.connect(IN_MEMORY)
        file = self._database_file(self.config.database)
        try:
            return duckdb.connect(str(file), read_only=True)
        except duckdb.Error as exc:
            raise DataCheckError(
                f"data.database: cannot open DuckDB database '{self.config.database}' (read-only): {_engine_message(exc)}",
                [{"column": None, "check": "readable", "rows": []}],
            ) from None

    def is_engine_error(self, exc: BaseException) -> bool:
        import duckdb

        return isinstance(exc, duckdb.Error)

    def refused(self, con: Any, exc: BaseException) -> Exception:
        message = self.message(exc)
        if "read-only" in str(exc).lower() or "read_only" in str(exc).lower():
            message += " (the database is opened read-only: a recipe's query only reads)"
        return RecipeError(message)

    def read(self, ctx: Any) -> tuple[Any, str, str, str]:
        con = self.connect()
        try:
            cursor = self.run(con, self.rows_query())
            self._columns(cursor)
            try:
                frame = cursor.df()
            except Exception as exc:
                if self.is_engine_error(exc):
                    raise self.refused(con, exc) from None
                raise
        finally:
            con.close()
        name = "query" if self.in_memory else Path(self.config.database).stem
        origin = "in-memory DuckDB" if self.in_memory else f"DuckDB {self.config.database}"
        return frame, dataset_name(name), f"{origin} query: {first_line(self.config.query)}", self.where()

    def peek(self) -> tuple[list[ColumnInfo], int | None]:
        con = self.connect()
        try:
            cursor = self.describe_cursor(con)
            names = self._columns(cursor)
            types = [str(d[1]).split("(")[0].split(" ")[0].upper() for d in cursor.description]
        finally:
            con.close()
        return [ColumnInfo(n, _DUCKDB_TYPES.get(t, "unknown")) for n, t in zip(names, types)], None


@hookimpl
def register_data_sources():
    return [SqliteDataSource, DuckDBDataSource]
