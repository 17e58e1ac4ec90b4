"""Data source ``acme_jsonl``: a table in a JSON Lines file, one JSON object per row.

The recipe names the file, the target column and optionally the feature columns (default: every
numeric column but the target). Without a file the source reads the sample table this package
ships (``acme_plugins/data/widgets.jsonl``). The file is checked at plan time, so a typo in the
path fails before Ray starts. pandas is imported inside ``load``: the core imports every plugin
when it starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from framework import DataSource, Dataset, RecipeError, StageError, hookimpl

from acme_plugins import SAMPLE_TABLE

SUFFIXES = (".jsonl", ".ndjson", ".json")


class JsonLinesSource(DataSource):
    name = "acme_jsonl"
    summary = "a table in a JSON Lines file (default: ACME's sample widgets)"

    @dataclass
    class Config:
        #: the JSON Lines file; null: the sample table this package ships
        path: Optional[str] = None
        #: the column to predict
        target: str = "label"
        #: feature columns in model order; null: every numeric column but the target
        features: Optional[List[str]] = None

    @classmethod
    def check_config(cls, config, key, refs=None):
        if config.path is not None:
            path = Path(config.path).expanduser()
            if path.suffix not in SUFFIXES:
                raise RecipeError(f"{key}.path: '{config.path}' is not a JSON Lines file ({', '.join(SUFFIXES)})")
            if not path.is_file():
                raise RecipeError(f"{key}.path: no file '{path}'; give an existing JSON Lines file, or null for the sample")
        if not config.target:
            raise RecipeError(f"{key}.target: name the column to predict")
        if config.features is not None:
            if not config.features:
                raise RecipeError(f"{key}.features: an empty list; give feature columns, or null for every numeric one")
            if config.target in config.features:
                raise RecipeError(f"{key}.features: lists the target '{config.target}'")
            if len(set(config.features)) != len(config.features):
                raise RecipeError(f"{key}.features: a column is listed twice")

    @property
    def path(self) -> Path:
        return Path(self.config.path).expanduser() if self.config.path else SAMPLE_TABLE

    def load(self, ctx) -> Dataset:
        import pandas as pd
        from pandas.api.types import is_numeric_dtype

        path, target = self.path, self.config.target
        try:
            frame = pd.read_json(path, lines=True)
        except (OSError, ValueError) as exc:
            raise StageError(f"data (acme_jsonl): cannot read {path} as JSON Lines: {exc}") from None
        if target not in frame.columns:
            raise StageError(f"data (acme_jsonl): {path} has no column '{target}'; columns: {', '.join(map(str, frame.columns))}")
        if self.config.features is None:
            features = [str(c) for c in frame.columns if c != target and is_numeric_dtype(frame[c])]
        else:
            features = list(self.config.features)
            missing = [f for f in features if f not in frame.columns]
            if missing:
                raise StageError(f"data (acme_jsonl): {path} has no column(s) {missing}")
            text = [f for f in features if not is_numeric_dtype(frame[f])]
            if text:
                raise StageError(f"data (acme_jsonl): feature column(s) {text} of {path} are not numeric")
        frame[features] = frame[features].astype("float64")  # models see float32 either way
        classes = sorted(frame[target].dropna().unique().tolist())
        if ctx is not None:
            ctx.metric("rows", len(frame))
            ctx.metric("features", len(features))
        return Dataset(name=path.stem, frame=frame, features=features, target=target, classes=classes,
                       description=f"{len(frame)} rows of {path.name} (JSON Lines)")


@hookimpl
def register_data_sources():
    return [JsonLinesSource]
