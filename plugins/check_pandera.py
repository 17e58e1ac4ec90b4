"""Data check ``pandera_schema``: a real pandera DataFrameSchema built from the dataset.

Every feature column gets a dtype, nullability, finiteness and optional range check (defaults in
``features``, per-column overrides in ``columns``); the target must be one of the dataset's
classes. Columns are required; extra columns are allowed (the contract is features + target).
Validation is lazy so one run reports every failure, not just the first.

pandera is imported inside the methods: the core imports every plugin at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import DataCheckError, RecipeError

NAME = "pandera_schema"
SCHEMA_FILE = "pandera_schema.yaml"
#: rows listed per failing (column, check) in reports and messages
MAX_ROWS = 20

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


@dataclass
class FeatureRule:
    dtype: str = "float"
    nullable: bool = False
    #: reject +/-inf (NaN is the business of ``nullable``)
    finite: bool = True
    min: Optional[float] = None
    max: Optional[float] = None


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


def _plain(value: Any) -> Any:
    """A JSON-friendly Python scalar from a numpy/pandas one."""
    return value.item() if hasattr(value, "item") else value


class PanderaSchemaCheck(DataCheck):
    name = NAME
    summary = "pandera DataFrameSchema: dtype, nulls, finiteness, ranges per feature; target in classes"

    @dataclass
    class Config:
        features: FeatureRule = field(default_factory=FeatureRule)
        #: column name -> rule that replaces ``features`` for that column
        columns: Dict[str, FeatureRule] = field(default_factory=dict)
        target_in_classes: bool = True
        min_rows: int = 1
        #: a failure raises DataCheckError (stops the run) instead of only reporting
        blocking: bool = True

    # ----------------------------------------------------------------------------------------
    def build_schema(self, dataset: Dataset):
        import pandera.pandas as pa

        _register_checks()
        cfg = self.config
        unknown = sorted(set(cfg.columns) - set(dataset.features))
        if unknown:
            raise RecipeError(
                f"checks[{NAME}].columns: {unknown} are not features of dataset '{dataset.name}'"
            )
        columns = {}
        for feature in dataset.features:
            rule = cfg.columns.get(feature, cfg.features)
            if rule.dtype not in DTYPES:
                raise RecipeError(
                    f"checks[{NAME}]: dtype '{rule.dtype}' for column '{feature}' is unknown. "
                    f"Valid: {', '.join(DTYPES)}"
                )
            checks = []
            if rule.finite:
                checks.append(pa.Check.finite())
            if rule.min is not None:
                checks.append(pa.Check.ge(rule.min))
            if rule.max is not None:
                checks.append(pa.Check.le(rule.max))
            columns[feature] = pa.Column(
                DTYPES[rule.dtype], checks=checks, nullable=rule.nullable, required=True
            )
        target_checks = []
        if cfg.target_in_classes and dataset.classes is not None:
            target_checks.append(pa.Check.isin([_plain(c) for c in dataset.classes]))
        columns[dataset.target] = pa.Column(checks=target_checks, nullable=False, required=True)
        return pa.DataFrameSchema(
            columns,
            checks=[pa.Check.min_rows(n=cfg.min_rows)],
            strict=False,  # extra columns are allowed; missing ones fail (required=True)
            coerce=False,  # coercing would hide exactly the problems we look for
            name=dataset.name,
        )

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
            failures = self._failures(exc.failure_cases)
        else:
            failures = []
        report = CheckReport(
            check=NAME, passed=not failures, rows_checked=len(frame), failures=failures, details=details
        )
        ctx.metric("rows_checked", len(frame))
        ctx.metric("failures", len(failures))
        if failures and self.config.blocking:
            raise DataCheckError(self.message(failures), failures=failures)
        return report

    @staticmethod
    def _failures(cases) -> list[dict]:
        """One row per failing (column, check), from pandera's ``failure_cases`` table."""
        import pandas as pd

        rows: list[dict] = []
        order: dict[tuple, dict] = {}
        for case in cases.to_dict("records"):
            check = str(case["check"])
            index = case.get("index")
            if case["schema_context"] == "DataFrameSchema":
                # a missing column is reported by the table, with the column name as the case
                column = str(case["failure_case"]) if check == "column_in_dataframe" else None
            else:
                column = case["column"]
            key = (column, check)
            if key not in order:
                order[key] = {"column": column, "check": check, "rows": [], "count": 0, "cases": []}
                rows.append(order[key])
            entry = order[key]
            entry["count"] += 1
            if index is not None and not pd.isna(index):
                entry["rows"].append(_plain(index))
            elif check != "column_in_dataframe":
                entry["cases"].append(str(_plain(case["failure_case"])))

        # a value check cannot run on a column of the wrong dtype: its error is noise
        bad_dtype = {r["column"] for r in rows if r["check"].startswith("dtype(")}
        rows = [
            r for r in rows
            if not (r["column"] in bad_dtype and not r["check"].startswith("dtype(") and not r["rows"])
        ]
        for r in rows:
            r["rows"] = r["rows"][:MAX_ROWS]
            r["cases"] = r["cases"][:5]
            if not r["cases"]:
                del r["cases"]
        return rows

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
