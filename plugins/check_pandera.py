"""Data check ``pandera_schema``: a schema written in YAML, validated by a real pandera schema.

The schema is a small format of ours, written inline in the recipe or in a YAML file
(``schema_file``); our code translates it into a pandera ``DataFrameSchema`` (nothing in it is
ever evaluated as code: no pandera ``Check`` lambdas from YAML)::

    checks:
      - type: pandera_schema
        severity: quarantine          # the core's: fail (default), warn or quarantine
        min_rows: 100                 # row-count bounds of the table
        max_rows: 5000000
        strict: false                 # true: columns beyond features, target and `columns` fail
        features: {dtype: float, nullable: false, finite: true}   # the rule of every feature ...
        columns:                      # ... unless a column has its own (any column of the frame)
          age:     {dtype: int, min: 0, max: 130}
          country: {dtype: str, allowed: [FR, DE, US]}
          user_id: {dtype: str, unique: true}
          email:   {dtype: str, nullable: true, regex: '^[^@\\s]+@[^@\\s]+\\.[A-Za-z]{2,}$'}

A rule's keys: ``dtype`` (float, float32, int, int32, str, bool, any), ``nullable``, ``finite``
(numbers: no +/-inf), ``min``/``max`` (inclusive), ``allowed`` (the values it may take),
``unique`` (every later repeat of a value fails; the first stays), ``regex`` (pandera's
``str_matches``: a match anchored at the start of the value), ``required`` (default true: a
missing column fails). ``schema_file`` holds the same mapping (features, columns, min_rows,
max_rows, strict, target_in_classes) in a file; then those keys are not given inline.

Validation is lazy, so one run reports every failure: one per (column, check) with its
``count`` and a bounded sample of row labels; ``CheckReport.flagged`` lists every failing row, so
severity ``quarantine`` takes exactly those out. Reports never carry cell values.

pandera is imported inside the methods: the core imports every plugin at start-up.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import RecipeError

NAME = "pandera_schema"
SCHEMA_FILE = "pandera_schema.yaml"
#: rows listed per failing (column, check) in reports and messages
MAX_ROWS = 20

log = logging.getLogger("framework.plugins.check_pandera")

#: recipe dtype -> pandera dtype (None: no dtype check)
DTYPES: dict[str, Any] = {
    "float": "float64",
    "float64": "float64",
    "float32": "float32",
    "int": "int64",
    "int64": "int64",
    "int32": "int32",
    "str": str,
    "bool": bool,
    "any": None,
}
NUMERIC = {"float", "float64", "float32", "int", "int64", "int32"}


@dataclass
class FeatureRule:
    """What one column must hold (every key optional)."""

    dtype: str = "float"
    nullable: bool = False
    #: reject +/-inf (NaN is the business of ``nullable``); numeric dtypes only
    finite: bool = True
    min: Optional[float] = None
    max: Optional[float] = None
    #: the only values the column may take
    allowed: Optional[List[Any]] = None
    #: every repeat of a value after its first occurrence fails
    unique: bool = False
    #: the values must match this regular expression from their start (pandera ``str_matches``)
    regex: Optional[str] = None
    #: a missing column fails
    required: bool = True


@dataclass
class SchemaSpec:
    """The schema keys, inline in the recipe or in ``schema_file``."""

    features: FeatureRule = field(default_factory=FeatureRule)
    #: column name -> rule that replaces ``features`` for that column
    columns: Dict[str, FeatureRule] = field(default_factory=dict)
    target_in_classes: bool = True
    min_rows: int = 1
    max_rows: Optional[int] = None
    #: columns beyond the features, the target and ``columns`` fail
    strict: bool = False


SCHEMA_KEYS = tuple(f.name for f in fields(SchemaSpec))


def _register_checks() -> None:
    """Register our checks with pandera once, so they serialise into the schema YAML by name."""
    import numpy as np
    import pandas as pd
    import pandera.pandas as pa
    from pandera import extensions

    if not hasattr(pa.Check, "finite"):

        @extensions.register_check_method()
        def finite(series):
            # strings are the dtype check's to report; coerce them away instead of erroring here
            return ~np.isinf(pd.to_numeric(series, errors="coerce").astype("float64"))

    if not hasattr(pa.Check, "min_rows"):

        @extensions.register_check_method(statistics=["n"], supported_types=pd.DataFrame)
        def min_rows(frame, *, n):
            return len(frame) >= n

    if not hasattr(pa.Check, "max_rows"):

        @extensions.register_check_method(statistics=["n"], supported_types=pd.DataFrame)
        def max_rows(frame, *, n):
            return len(frame) <= n


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar from a numpy/pandas one."""
    return value.item() if hasattr(value, "item") else value


def load_schema_file(path: str, key: str) -> SchemaSpec:
    """``schema_file`` read with ``yaml.safe_load`` and validated against :class:`SchemaSpec`;
    RecipeError naming the file and the key otherwise."""
    import yaml
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    where = Path(path).expanduser()
    try:
        data = yaml.safe_load(where.read_text())
    except OSError as exc:
        raise RecipeError(f"{key}.schema_file: cannot read '{where}': {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(f"{key}.schema_file: '{where}' is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise RecipeError(f"{key}.schema_file: '{where}' must hold a mapping with keys {', '.join(SCHEMA_KEYS)}")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SchemaSpec), data))
    except OmegaConfBaseException as exc:
        full = getattr(exc, "full_key", None) or "?"
        raise RecipeError(f"{key}.schema_file: '{where}' key '{full}': {exc.msg if hasattr(exc, 'msg') else exc}. "
                          f"Accepted keys: {', '.join(SCHEMA_KEYS)}; a column rule takes "
                          f"{', '.join(f.name for f in fields(FeatureRule))}") from None


def check_rule(rule: FeatureRule, key: str) -> None:
    """Plan-time validation of one rule: a known dtype, bounds in order, a regex that compiles."""
    if rule.dtype not in DTYPES:
        raise RecipeError(f"{key}.dtype: '{rule.dtype}' is unknown. Valid: {', '.join(DTYPES)}")
    if rule.min is not None and rule.max is not None and rule.min > rule.max:
        raise RecipeError(f"{key}: min {rule.min} > max {rule.max}")
    if rule.regex is not None:
        try:
            re.compile(rule.regex)
        except re.error as exc:
            raise RecipeError(f"{key}.regex: not a valid regular expression ({exc})") from None
    if rule.allowed is not None and not rule.allowed:
        raise RecipeError(f"{key}.allowed: an empty list would fail every row; leave the key out instead")


class PanderaSchemaCheck(DataCheck):
    name = NAME
    summary = "a YAML schema (dtype, nulls, ranges, allowed values, unique, regex, row counts) validated by pandera"

    @dataclass
    class Config(SchemaSpec):
        #: a YAML file holding the schema keys (features, columns, min_rows ...) instead
        schema_file: Optional[str] = None
        #: deprecated and ignored: the core's ``severity`` decides (``blocking: false`` used to
        #: report and go on: that is ``severity: warn``)
        blocking: Optional[bool] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if config.blocking is not None:  # the check only reports now: failing safe, a failure stops the run
            log.warning("%s.blocking is deprecated and ignored: the core's %s.severity decides (fail, the default, "
                        "stops the run; warn reports and goes on; quarantine takes the failing rows out)",
                        key, key.split(".")[0] if key.startswith("checks[") else key)
        spec = cls.spec_of(config, key)
        check_rule(spec.features, f"{key}.features")
        for column, rule in spec.columns.items():
            check_rule(rule, f"{key}.columns.{column}")
        if spec.min_rows < 0 or (spec.max_rows is not None and spec.max_rows < spec.min_rows):
            raise RecipeError(f"{key}: row bounds must satisfy 0 <= min_rows <= max_rows, got {spec.min_rows}, {spec.max_rows}")

    @staticmethod
    def spec_of(config: Any, key: str = "checks") -> SchemaSpec:
        """The schema: the inline keys, or ``schema_file``'s (then the inline ones are defaults)."""
        if config.schema_file is None:
            return config
        default = SchemaSpec()
        given = [k for k in SCHEMA_KEYS if getattr(config, k) != getattr(default, k)]
        if given:
            raise RecipeError(f"{key}: give the schema inline or in schema_file, not both (inline: {', '.join(given)})")
        return load_schema_file(config.schema_file, key)

    # ----------------------------------------------------------------------------------------
    def build_schema(self, dataset: Dataset):
        import pandera.pandas as pa

        _register_checks()
        spec = self.spec_of(self.config)
        frame_columns = set(dataset.frame.columns)
        unknown = sorted(c for c in spec.columns if c not in frame_columns and c not in dataset.features
                         and c != dataset.target)
        if unknown:
            raise RecipeError(f"checks[{NAME}].columns: {unknown} are not columns of dataset '{dataset.name}'")
        columns = {}
        for column in list(dataset.features) + [c for c in spec.columns if c not in dataset.features]:
            rule = spec.columns.get(column, spec.features)
            check_rule(rule, f"checks[{NAME}].columns.{column}")
            columns[column] = self.column(rule)
        if dataset.target not in columns:
            target_checks = []
            if spec.target_in_classes and dataset.classes is not None:
                target_checks.append(pa.Check.isin([_plain(c) for c in dataset.classes]))
            columns[dataset.target] = pa.Column(checks=target_checks, nullable=False, required=True)
        table_checks = [pa.Check.min_rows(n=spec.min_rows)]
        if spec.max_rows is not None:
            table_checks.append(pa.Check.max_rows(n=spec.max_rows))
        return pa.DataFrameSchema(
            columns,
            checks=table_checks,
            strict=spec.strict,
            coerce=False,  # coercing would hide exactly the problems we look for
            name=dataset.name,
        )

    @staticmethod
    def column(rule: FeatureRule):
        """One rule as a pandera Column: only built-in checks, parameters from the rule's values."""
        import pandera.pandas as pa

        checks = []
        if rule.finite and rule.dtype in NUMERIC:
            checks.append(pa.Check.finite())
        if rule.min is not None:
            checks.append(pa.Check.ge(rule.min))
        if rule.max is not None:
            checks.append(pa.Check.le(rule.max))
        if rule.allowed is not None:
            checks.append(pa.Check.isin(list(rule.allowed)))
        if rule.regex is not None:
            checks.append(pa.Check.str_matches(rule.regex))
        return pa.Column(DTYPES[rule.dtype], checks=checks, nullable=rule.nullable, required=rule.required,
                         unique=rule.unique, report_duplicates="exclude_first")

    def _write_schema(self, schema, ctx) -> Optional[str]:
        path = ctx.out_dir / SCHEMA_FILE
        try:
            path.write_text(schema.to_yaml())
        except Exception as exc:  # serialisation is a convenience, never a reason to fail
            ctx.logger.warning("pandera could not serialise the schema: %r", exc)
            return None
        return SCHEMA_FILE

    # ----------------------------------------------------------------------------------------
    def check(self, dataset: Dataset, ctx) -> CheckReport:
        import pandera.pandas as pa

        schema = self.build_schema(dataset)
        schema_file = self._write_schema(schema, ctx)
        frame = dataset.frame
        details: dict[str, Any] = {"schema_file": schema_file, "columns": len(schema.columns)}
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            failures, flagged = self.failures(exc.failure_cases)
        else:
            failures, flagged = [], []
        return CheckReport(check=NAME, passed=not failures, rows_checked=len(frame), failures=failures,
                           details=details, flagged=flagged)

    @staticmethod
    def failures(cases) -> tuple[list[dict], list[dict]]:
        """One failure per failing (column, check) from pandera's ``failure_cases`` table, and every
        failing row (``flagged``: reason "CHECK (COLUMN)"). Vectorised: a million-row frame with
        many failures must not cost a Python loop per failing cell."""
        import pandas as pd

        cases = cases.reset_index(drop=True)
        check = cases["check"].astype(str)
        table = cases["schema_context"].eq("DataFrameSchema")
        # a missing column is reported by the table, with the column name as the case
        column = cases["column"].astype(object).where(~table, None)
        missing = table & check.eq("column_in_dataframe")
        column = column.where(~missing, cases["failure_case"].astype(str))
        has_row = cases["index"].notna()
        keyed = pd.DataFrame({"column": column, "check": check, "row": cases["index"], "has_row": has_row,
                              "case": cases["failure_case"]})
        rows: list[dict] = []
        flagged: list[dict] = []
        for (col, chk), group in keyed.groupby(["column", "check"], sort=False, dropna=False):
            col = None if pd.isna(col) else col
            labels = group.loc[group["has_row"], "row"].tolist()
            entry = {"column": col, "check": chk, "count": int(len(group)), "rows": [_plain(r) for r in labels[:MAX_ROWS]]}
            if not labels and chk != "column_in_dataframe":
                # column- or table-level facts (a dtype name, False for a row count), not cell values
                entry["cases"] = [str(_plain(c)) for c in group["case"].head(5)]
            rows.append(entry)
        # a value check cannot run on a column of the wrong dtype: its error is noise
        bad_dtype = {r["column"] for r in rows if r["check"].startswith("dtype(")}
        rows = [r for r in rows if not (r["column"] in bad_dtype and not r["check"].startswith("dtype(") and not r["rows"])]
        kept = {(r["column"], r["check"]) for r in rows}
        for (col, chk), group in keyed[has_row].groupby(["column", "check"], sort=False, dropna=False):
            col = None if pd.isna(col) else col
            if (col, chk) not in kept:
                continue
            reason = f"{chk} ({col})" if col is not None else chk
            flagged.extend({"row": _plain(r), "reason": reason} for r in group["row"].tolist())
        return rows, flagged

    @staticmethod
    def message(failures: list[dict]) -> str:
        parts = []
        for f in failures:
            where = f"column '{f['column']}'"
            if f["column"] is None:  # a table-wide check (min_rows)
                parts.append(f"table check '{f['check']}' failed")
            elif f["check"] == "column_in_dataframe":
                parts.append(f"{where} check 'column_in_dataframe': column is missing")
            elif f["rows"]:
                parts.append(f"{where} check '{f['check']}' at rows {f['rows']} ({f['count']} row{'s' if f['count'] != 1 else ''})")
            else:
                parts.append(f"{where} check '{f['check']}' failed: {', '.join(f.get('cases', []))}")
        return f"{NAME} failed: " + "; ".join(parts)


@hookimpl
def register_data_checks():
    return [PanderaSchemaCheck]
