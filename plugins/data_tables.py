"""What the table data sources share: the recipe options that say which column is what, and the
typing of a loaded frame into a ``Dataset``.

``data_files`` (csv, parquet), ``data_sql`` (sqlite, duckdb) and ``data_packaged`` (vega) build
on :class:`TableSource`. This module registers nothing: it is not a plugin of its own.

What a source delivers (the frame's dtypes, whatever the reader produced):

* ``float`` columns are float64 (NaN when missing); ``int`` columns int64, or pandas ``Int64``
  when values are missing; ``bool`` columns bool, or ``boolean`` when values are missing;
  ``category`` columns hold strings (NaN when missing);
* the ``time`` column is a datetime when it was text (a numeric one, a year or epoch seconds, is
  left as it is); the ``key`` column has a value in every row and no duplicates;
* ``Dataset.schema`` types every feature: declared (``columns:``) or inferred
  (``framework.components.infer_feature``);
* classification and ranking targets have ``classes`` (sorted); a regression target is float64
  and ``classes`` is None. A missing target is an error, or dropped and counted
  (``missing_target: drop``).

pandas is imported inside the functions: the core imports every plugin at start-up.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

from framework import ColumnInfo, DataSource, Dataset, InputSchema, SourceSchema
from framework.components import FEATURE_TYPES, TASKS, infer_feature
from framework.errors import DataCheckError, RecipeError

#: rows a message lists as examples
SHOWN_ROWS = 10
MISSING_TARGET = ("error", "drop")
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


@dataclass
class ColumnType:
    """A column's declared type; what is left None is inferred from the data."""

    #: float | int | bool | category
    dtype: Optional[str] = None
    #: false: a missing value is an error; true: the model must accept missing values
    nullable: Optional[bool] = None


@dataclass
class TableOptions:
    """Which column is what: the options every table source shares."""

    #: the column to predict
    target: str = ""
    #: the input columns; None: every other column except ``key`` and ``time``
    features: Optional[List[str]] = None
    #: a column that identifies a row across versions (unique, never missing)
    key: Optional[str] = None
    #: the column that says when a row happened
    time: Optional[str] = None
    #: classification | regression | ranking
    task: str = "classification"
    #: column name -> {dtype, nullable}; columns not named here are inferred. A column named here
    #: that is not a feature stays in the table (text a labeling function reads, say)
    columns: Dict[str, ColumnType] = field(default_factory=dict)
    #: rows without a target: "error" stops the load naming them; "drop" drops and counts them
    missing_target: str = "error"
    #: the dataset's name in versions and model cards; None: from the file or database name
    name: Optional[str] = None


# ---------------------------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------------------------
def nearest(name: str, names: Sequence[str], n: int = 3) -> list[str]:
    """The names closest to ``name``, case differences counting for nothing."""
    lowered: dict[str, str] = {}
    for candidate in names:
        lowered.setdefault(candidate.lower(), candidate)
    close = difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.6)
    return [lowered[c] for c in close]


def missing_column(key_path: str, name: str, names: Sequence[str], where: str) -> RecipeError:
    """``data.target: no column 'Orign' in csv 'cars.csv'; nearest: 'Origin'``."""
    close = nearest(name, names)
    if close:
        hint = "nearest: " + ", ".join(f"'{c}'" for c in close)
    else:
        shown = ", ".join(f"'{c}'" for c in list(names)[:20])
        hint = f"columns: {shown}{' ...' if len(names) > 20 else ''}" if names else "it has no columns"
    return RecipeError(f"{key_path}: no column '{name}' in {where}; {hint}")


def first_line(text: str, width: int = 80) -> str:
    """The first non-blank line of a query, shortened: what an error message quotes."""
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    line = lines[0] if lines else ""
    more = len(lines) > 1 or len(line) > width
    return (line[:width] + (" ..." if more else "")) if line else ""


def dataset_name(raw: str) -> str:
    """A file or database stem as a version name (letters, digits, ``_ . -``)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]+", "_", raw).strip("._-")[:128]
    return cleaned or "data"


def _rows(mask: Any) -> list:
    return [_plain(i) for i in mask[mask].index[:SHOWN_ROWS]]


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# ---------------------------------------------------------------------------------------------
# Plan time: options only, no I/O
# ---------------------------------------------------------------------------------------------
def check_table_options(config: TableOptions, key: str, target_required: bool = True) -> None:
    """What is wrong in the options themselves (RecipeError naming ``key``)."""
    if config.task not in TASKS:
        close = difflib.get_close_matches(str(config.task), TASKS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RecipeError(f"{key}.task: must be one of {', '.join(TASKS)}; got '{config.task}'.{hint}")
    if config.missing_target not in MISSING_TARGET:
        raise RecipeError(f"{key}.missing_target: must be 'error' or 'drop'; got '{config.missing_target}'")
    if target_required and not config.target:
        raise RecipeError(f"{key}.target: missing; name the column to predict, e.g. 'target: price'")
    if config.name is not None and (not _NAME_RE.match(config.name) or config.name.startswith(".")):
        raise RecipeError(f"{key}.name: use 1-128 letters, digits, '_', '.', '-' (not starting with '.'); got '{config.name}'")
    roles = {"target": config.target, "key": config.key, "time": config.time}
    for role, column in roles.items():
        for other, column2 in roles.items():
            if role < other and column and column == column2:
                raise RecipeError(f"{key}.{other}: '{column2}' is already the {role} column; one column, one role")
    if config.features is not None:
        if not config.features:
            raise RecipeError(f"{key}.features: empty; name the input columns, or leave it out to use every other column")
        seen: set[str] = set()
        for i, feature in enumerate(config.features):
            if feature in seen:
                raise RecipeError(f"{key}.features[{i}]: '{feature}' is listed twice")
            seen.add(feature)
            for role, column in roles.items():
                if column and feature == column:
                    raise RecipeError(f"{key}.features[{i}]: '{feature}' is the {role} column; it cannot be a feature too")
    for column, declared in config.columns.items():
        if declared.dtype is not None and declared.dtype not in FEATURE_TYPES:
            close = difflib.get_close_matches(str(declared.dtype), FEATURE_TYPES, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RecipeError(f"{key}.columns.{column}.dtype: must be one of {', '.join(FEATURE_TYPES)}; "
                              f"got '{declared.dtype}'.{hint}")


def resolve_features(config: TableOptions, names: Sequence[str]) -> list[str]:
    """The declared features, or every column but the target, key and time."""
    if config.features is not None:
        return list(config.features)
    roles = {config.target, config.key, config.time}
    return [n for n in names if n not in roles]


def check_columns_exist(config: TableOptions, names: Sequence[str], key: str, where: str) -> None:
    """Every column the options name is one of ``names`` (RecipeError with the nearest names)."""
    present = set(names)
    named: list[tuple[str, str]] = [(f"{key}.target", config.target)] if config.target else []
    named += [(f"{key}.features[{i}]", f) for i, f in enumerate(config.features or [])]
    named += [(f"{key}.{role}", getattr(config, role)) for role in ("key", "time") if getattr(config, role)]
    named += [(f"{key}.columns.{c}", c) for c in config.columns]
    for key_path, column in named:
        if column not in present:
            raise missing_column(key_path, column, list(names), where)


def source_schema(config: TableOptions, columns: list[ColumnInfo], rows: int | None = None) -> SourceSchema:
    """A SourceSchema of the columns a source found, with the recipe's declared types applied."""
    typed = []
    for info in columns:
        declared = config.columns.get(info.name)
        if declared is not None:
            info = dataclasses.replace(
                info,
                dtype=declared.dtype or info.dtype,
                nullable=info.nullable if declared.nullable is None else declared.nullable,
            )
        typed.append(info)
    names = [c.name for c in typed]
    return SourceSchema(columns=typed, target=config.target or None, features=resolve_features(config, names), rows=rows,
                        key=getattr(config, "key", None) or None, time=getattr(config, "time", None) or None)


def column_info(name: str, column: Any, nullable: bool | None = None) -> ColumnInfo:
    """A ColumnInfo from a few rows of a column: the dtype ``load`` would infer for it."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(column):
        dtype = "unknown"
    else:
        dtype = infer_feature(name, normalize(column)).dtype
    return ColumnInfo(name, dtype, True if nullable is None else nullable)


# ---------------------------------------------------------------------------------------------
# Load time: a frame typed into a Dataset
# ---------------------------------------------------------------------------------------------
def normalize(column: Any) -> Any:
    """One dtype per kind of value, whatever the reader produced (see the module docstring)."""
    import numpy as np
    import pandas as pd

    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype):
        return as_text(column.astype(object))
    if pd.api.types.is_bool_dtype(dtype):
        return column.astype(bool) if not column.isna().any() else column.astype("boolean")
    if pd.api.types.is_integer_dtype(dtype):
        return column.astype(np.int64) if not column.isna().any() else column.astype("Int64")
    if pd.api.types.is_float_dtype(dtype):
        return column.astype(np.float64)
    return column


def as_text(column: Any) -> Any:
    """Strings, missing values kept missing (``1.0`` from a float column reads ``1``)."""
    import pandas as pd

    values = column
    if pd.api.types.is_float_dtype(column.dtype):
        present = column.dropna()
        if len(present) and (present == present.round()).all():
            values = column.astype("Int64")
    return pd.Series([v if pd.isna(v) else str(v) for v in values], index=column.index, dtype=str, name=column.name)


def convert(column: Any, dtype: str, key_path: str, where: str) -> Any:
    """A column converted to its declared ``dtype``; values that do not convert are a DataCheckError."""
    import numpy as np
    import pandas as pd

    name = column.name
    present = column.notna()
    if dtype == "category":
        return as_text(column)
    if dtype == "bool":
        if pd.api.types.is_bool_dtype(column.dtype):
            return normalize(column)

        def to_bool(value: Any) -> Any:
            if pd.isna(value):
                return None
            text = str(value).strip().lower()
            if text.endswith(".0"):  # 1.0 / 0.0 from a float column
                text = text[:-2]
            return True if text in _TRUE else False if text in _FALSE else "?"

        mapped = column.map(to_bool)
        bad = present & (mapped == "?")
        if bad.any():
            raise _bad_values(key_path, where, name, "bool (true/false, yes/no, 1/0)", column, bad)
        out = mapped.astype("boolean")
        return out.astype(bool) if not out.isna().any() else out
    numbers = pd.to_numeric(column, errors="coerce") if not pd.api.types.is_numeric_dtype(column.dtype) else column
    bad = present & numbers.isna()
    if bad.any():
        raise _bad_values(key_path, where, name, dtype, column, bad)
    numbers = numbers.astype(np.float64)
    if dtype == "float":
        return numbers
    fractional = numbers.notna() & (numbers != numbers.round())
    if fractional.any():
        raise _bad_values(key_path, where, name, "int", column, fractional)
    return numbers.astype(np.int64) if not numbers.isna().any() else numbers.astype("Int64")


def _bad_values(key_path: str, where: str, name: str, wanted: str, column: Any, bad: Any) -> DataCheckError:
    examples = sorted({repr(_plain(v)) for v in column[bad].head(SHOWN_ROWS)})[:5]
    rows = _rows(bad)
    return DataCheckError(
        f"{key_path}: column '{name}' in {where} is declared {wanted}, but {int(bad.sum())} rows hold other "
        f"values, e.g. {', '.join(examples)} (rows {rows}); fix the data or the declared dtype",
        [{"column": name, "check": f"dtype({wanted})", "rows": rows}],
    )


def to_dataset(frame: Any, config: TableOptions, *, name: str, where: str, description: str = "", ctx: Any = None,
               key: str = "data") -> Dataset:
    """A loaded frame typed into a Dataset, following the recipe's options (see the module docstring).

    ``where`` names the source in messages ("csv 'data/cars.csv'"); ``key`` is the recipe key path."""
    import numpy as np
    import pandas as pd

    frame = frame.copy()
    frame.columns = [str(c) for c in frame.columns]
    duplicated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if duplicated:
        raise DataCheckError(f"{key}: {where} has several columns named {duplicated}; give each column its own name",
                             [{"column": c, "check": "unique_column_names", "rows": []} for c in duplicated])
    names = list(frame.columns)
    check_columns_exist(config, names, key, where)
    features = resolve_features(config, names)
    if not features:
        raise RecipeError(f"{key}.features: {where} has no column left to learn from besides the target, key and time")
    target = config.target
    # a column typed in `columns` but not a feature is kept as well: a labeling function reads it
    used = [c for c in names if c in set(features) | {target, config.key, config.time} | set(config.columns)]
    frame = frame[used]

    for column, declared in config.columns.items():
        if declared.dtype is not None and column in frame.columns:
            frame[column] = convert(frame[column], declared.dtype, f"{key}.columns.{column}.dtype", where)
    for column in frame.columns:
        if column not in config.columns or config.columns[column].dtype is None:
            frame[column] = normalize(frame[column])

    missing = frame[target].isna()
    if missing.any():
        if config.missing_target == "error":
            raise DataCheckError(
                f"{key}.target: '{target}' has no value in {int(missing.sum())} of {len(frame)} rows of {where} "
                f"(rows {_rows(missing)}); fill or filter them, or set {key}.missing_target: drop",
                [{"column": target, "check": "target_present", "rows": _rows(missing)}],
            )
        frame = frame[~missing]
        if ctx is not None:
            ctx.logger.warning("data: dropped %d rows of %s without a target '%s'", int(missing.sum()), where, target)
            ctx.metric("rows_dropped_missing_target", int(missing.sum()))
    if frame.empty:
        raise DataCheckError(f"{key}: {where} has no rows{' with a target' if missing.any() else ''}",
                             [{"column": None, "check": "not_empty", "rows": []}])

    classes = None
    values = frame[target]
    if config.task == "regression":
        if not pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            numbers = pd.to_numeric(values, errors="coerce")
            bad = values.notna() & numbers.isna()
            if bad.any() or pd.api.types.is_bool_dtype(values.dtype):
                raise RecipeError(
                    f"{key}.task: regression needs a numeric target, but '{target}' in {where} holds values like "
                    f"{', '.join(sorted({repr(_plain(v)) for v in values[bad | values.notna()].head(5)}))}; "
                    f"use task: classification, or another target"
                )
            values = numbers
        frame[target] = values.astype(np.float64)
    else:
        if pd.api.types.is_float_dtype(values.dtype):
            fractional = values != values.round()
            if fractional.any():
                raise RecipeError(
                    f"{key}.task: {config.task} needs class labels, but '{target}' in {where} holds numbers like "
                    f"{_plain(values[fractional].iloc[0])!r} ({values.nunique()} distinct values); "
                    f"is it a regression target? Set {key}.task: regression"
                )
            frame[target] = values = values.astype(np.int64)
        elif pd.api.types.is_bool_dtype(values.dtype) or pd.api.types.is_integer_dtype(values.dtype):
            # the rows without a target are gone: the nullable dtype is no longer needed
            frame[target] = values = values.astype(bool if pd.api.types.is_bool_dtype(values.dtype) else np.int64)
        distinct = [_plain(v) for v in values.unique()]
        try:
            classes = sorted(distinct)
        except TypeError:  # mixed kinds of labels: a stable order all the same
            classes = sorted(distinct, key=lambda v: (type(v).__name__, str(v)))

    if config.key:
        ids = frame[config.key]
        bad = ids.isna() | ids.duplicated(keep=False)
        if bad.any():
            raise DataCheckError(
                f"{key}.key: '{config.key}' must identify each row of {where}, but {int(bad.sum())} rows have a "
                f"missing or repeated value, e.g. {sorted({repr(_plain(v)) for v in ids[bad].head(5)})} "
                f"(rows {_rows(bad)})",
                [{"column": config.key, "check": "unique_key", "rows": _rows(bad)}],
            )
    if config.time:
        when = frame[config.time]
        if not (pd.api.types.is_datetime64_any_dtype(when.dtype) or pd.api.types.is_numeric_dtype(when.dtype)):
            try:
                parsed = pd.to_datetime(when, errors="coerce")
            except (TypeError, ValueError):
                parsed = pd.Series(pd.NaT, index=when.index)
            bad = when.notna() & parsed.isna()
            if bad.any():
                raise DataCheckError(
                    f"{key}.time: '{config.time}' in {where} holds values that are not dates or times, e.g. "
                    f"{sorted({repr(_plain(v)) for v in when[bad].head(5)})} (rows {_rows(bad)})",
                    [{"column": config.time, "check": "datetime", "rows": _rows(bad)}],
                )
            frame[config.time] = parsed

    specs = []
    for feature in features:
        spec = infer_feature(feature, frame[feature])
        declared = config.columns.get(feature)
        if declared is not None and declared.nullable is not None:
            absent = frame[feature].isna()
            if declared.nullable is False and absent.any():
                raise DataCheckError(
                    f"{key}.columns.{feature}.nullable: false, but '{feature}' has no value in {int(absent.sum())} of "
                    f"{len(frame)} rows of {where} (rows {_rows(absent)})",
                    [{"column": feature, "check": "not_nullable", "rows": _rows(absent)}],
                )
            spec.nullable = declared.nullable
        specs.append(spec)
    if ctx is not None:
        ctx.metric("rows", len(frame))
        ctx.metric("features", len(features))
    return Dataset(
        name=name, frame=frame, features=features, target=target, task=config.task, classes=classes,
        description=description, schema=InputSchema(specs), key=config.key, time=config.time,
    )


# ---------------------------------------------------------------------------------------------
# The base of the table sources
# ---------------------------------------------------------------------------------------------
class TableSource(DataSource):
    """A source of one table whose Config extends :class:`TableOptions`.

    A subclass implements ``check_location`` (its own options, no I/O), ``read`` (the whole table
    as a pandas frame, a name, a description and ``where`` for messages) and ``peek`` (the columns
    and, if cheap, the row count, without reading the rows)."""

    #: False when the source has a default target (a packaged dataset)
    target_required = True

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        check_table_options(cls.options(config), key, cls.target_required)
        cls.check_location(config, key)

    @classmethod
    def check_location(cls, config: Any, key: str) -> None:
        """Validate where the table is (path, database, query) without touching it."""

    @classmethod
    def options(cls, config: Any) -> TableOptions:
        """The table options in effect (a packaged dataset fills in its defaults)."""
        return config

    @classmethod
    def planned_task(cls, config: Any) -> str | None:
        """The task the loaded Dataset will have, known at plan time."""
        return cls.options(config).task

    def read(self, ctx: Any) -> tuple[Any, str, str, str]:
        """(frame, dataset name, description, where) of the whole table."""
        raise NotImplementedError

    def peek(self) -> tuple[list[ColumnInfo], int | None]:
        """The columns (declared types not yet applied) and the row count if known cheaply."""
        raise NotImplementedError

    def load(self, ctx: Any) -> Dataset:
        frame, name, description, where = self.read(ctx)
        options = self.options(self.config)
        return to_dataset(frame, options, name=options.name or name, where=where, description=description, ctx=ctx)

    def describe(self) -> SourceSchema:
        columns, rows = self.peek()
        return source_schema(self.options(self.config), columns, rows)
