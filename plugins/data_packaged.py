"""Data source ``vega``: real, dirty tables that ship inside the ``vega_datasets`` wheel.

``cars`` (406 cars of 1970-1982: strings, missing values; target ``Origin`` or, for regression,
``Miles_per_Gallon``) and ``seattle-weather`` (1461 dated days; target ``weather``, time
``date``). The files are read from the installed package through ``importlib.resources``, not
through vega_datasets' pandas-based loaders; nothing is downloaded. Which column is what is
``data_tables.TableOptions``; a dataset's own target and time column are the defaults.
"""
from __future__ import annotations

import dataclasses
import difflib
import io
import json
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional

from framework import ColumnInfo, hookimpl
from framework.errors import RecipeError

from plugins.data_tables import TableOptions, TableSource, column_info

PACKAGE = "vega_datasets"


class VegaTable(NamedTuple):
    file: str  # under vega_datasets/_data/
    target: str
    time: Optional[str]
    summary: str


DATASETS: dict[str, VegaTable] = {
    "cars": VegaTable("cars.json", "Origin", None,
                      "406 cars (1970-1982): names, 6 numbers with missing values, model year, origin"),
    "seattle-weather": VegaTable("seattle-weather.csv", "weather", "date",
                                 "1461 days of Seattle weather (2012-2015): precipitation, temperatures, wind, weather"),
}


def _data_file(dataset: str) -> Any:
    """The packaged file as an importlib.resources Traversable."""
    import importlib.resources

    try:
        root = importlib.resources.files(PACKAGE)
    except ModuleNotFoundError:
        raise RecipeError(f"data.dataset: '{dataset}' ships in the '{PACKAGE}' package, which is not installed; "
                          f"pip install vega_datasets") from None
    return root / "_data" / DATASETS[dataset].file


class VegaDataSource(TableSource):
    name = "vega"
    summary = "a table that ships inside vega_datasets (cars, seattle-weather): strings, missing values, dates"
    target_required = False

    @dataclass
    class Config(TableOptions):
        #: one of ``DATASETS``
        dataset: str = "cars"
        #: the dataset's time column when not given; "" (an empty string): no time column
        time: Optional[str] = None

    @classmethod
    def datasets(cls) -> list[str]:
        return sorted(DATASETS)

    @classmethod
    def check_location(cls, config: Any, key: str) -> None:
        if config.dataset not in DATASETS:
            close = difflib.get_close_matches(config.dataset, list(DATASETS), n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RecipeError(f"{key}.dataset: unknown vega dataset '{config.dataset}'.{hint} "
                              f"Valid names: {', '.join(sorted(DATASETS))}")

    @classmethod
    def options(cls, config: Any) -> TableOptions:
        table = DATASETS.get(config.dataset)
        if table is None:
            return config
        time = table.time if config.time is None else (config.time or None)
        return dataclasses.replace(config, target=config.target or table.target, time=time)

    def _where(self) -> str:
        return f"vega dataset '{self.config.dataset}'"

    def _read(self, nrows: int | None = None) -> Any:
        import pandas as pd

        self.check_location(self.config, "data")
        table = DATASETS[self.config.dataset]
        resource = _data_file(self.config.dataset)
        if table.file.endswith(".json"):
            frame = pd.DataFrame.from_records(json.loads(resource.read_text(encoding="utf-8")))
            return frame.head(nrows) if nrows else frame
        text = {c: str for c, declared in self.config.columns.items() if declared.dtype == "category"}
        return pd.read_csv(io.StringIO(resource.read_text(encoding="utf-8")), nrows=nrows, dtype=text or None)

    def read(self, ctx: Any) -> tuple[Any, str, str, str]:
        table = DATASETS[self.config.dataset]
        frame = self._read()
        name = self.config.dataset.replace("-", "_")
        return frame, name, f"{table.summary} ({PACKAGE}/_data/{table.file})", self._where()

    def peek(self) -> tuple[list[ColumnInfo], int | None]:
        frame = self._read()  # small files in the wheel: the whole file is the cheap answer
        return [column_info(c, frame[c], nullable=bool(frame[c].isna().any())) for c in frame.columns], len(frame)


@hookimpl
def register_data_sources():
    return [VegaDataSource]
