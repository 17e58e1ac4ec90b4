"""Data sources ``csv`` and ``parquet``: the user's own tables, from files.

``path`` is a file, a folder (every file of the format under it, sorted) or a glob, on the local
disk or at any fsspec URL (``file://``, ``memory://``, ``s3://`` with s3fs installed ...). Several
files are one table: they must have the same columns (in any order). Which column is what
(target, features, key, time, task, declared types) is ``data_tables.TableOptions``.

``describe()`` is cheap: CSV reads the header and a few rows of the first file; Parquet reads the
files' footers (schema, row counts, null counts), no rows.

pandas, pyarrow and fsspec are imported inside the methods: the core imports every plugin at
start-up.
"""
from __future__ import annotations

import glob as globbing
import os
import posixpath
from dataclasses import dataclass
from typing import Any, List, Optional

from framework import ColumnInfo, hookimpl
from framework.errors import DataCheckError, RecipeError

from plugins.data_tables import TableOptions, TableSource, column_info, dataset_name, nearest

#: rows of the first CSV file ``describe()`` reads to tell the column types
DESCRIBE_ROWS = 50
#: Parquet footers ``describe()`` reads for the row count; more files: rows unknown at plan time
DESCRIBE_MAX_FILES = 32
_COMPRESSED = ("", ".gz", ".bz2", ".xz", ".zst", ".zip")
CSV_SUFFIXES = tuple(s + c for s in (".csv", ".tsv", ".txt") for c in _COMPRESSED)
PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class FileSource(TableSource):
    """What CSV and Parquet share: finding the files behind ``path``."""

    format = ""
    suffixes: tuple[str, ...] = ()

    @classmethod
    def check_location(cls, config: Any, key: str) -> None:
        if not config.path:
            raise RecipeError(f"{key}.path: missing; give a file, a folder or a glob, e.g. 'path: data/train.{cls.format}'")

    def files(self) -> tuple[Any, list[str], list[str]]:
        """(filesystem, paths, how each path is shown) of the files behind ``path``; RecipeError
        naming ``data.path`` when there are none."""
        import fsspec.core
        from fsspec.implementations.local import LocalFileSystem

        path = self.config.path
        try:
            fs, root = fsspec.core.url_to_fs(path if "://" in path else os.path.expanduser(path))
        except (ImportError, ValueError) as exc:  # unknown protocol, or its package is not installed
            raise RecipeError(f"data.path: cannot open '{path}': {_reason(exc)}") from None
        local = isinstance(fs, LocalFileSystem)

        def shown(p: str) -> str:
            return p if local else fs.unstrip_protocol(p)

        if globbing.has_magic(root):
            found = sorted(p for p in fs.glob(root) if fs.isfile(p))
            if not found:
                base = root[: min(root.find(c) for c in "*?[" if c in root)].rsplit("/", 1)[0] or "/"
                raise RecipeError(f"data.path: no file matches '{path}'{self._folder_hint(fs, base, None)}")
            return fs, found, [shown(p) for p in found]
        if fs.isdir(root):
            found = sorted(
                p for p in fs.find(root)
                if p.lower().endswith(self.suffixes)
                and not any(part.startswith((".", "_")) for part in posixpath.relpath(p, root).split("/"))
            )
            if not found:
                raise RecipeError(f"data.path: folder '{path}' holds no {self.format} files "
                                  f"({', '.join(s for s in self.suffixes if '.' not in s[1:])})")
            return fs, found, [shown(p) for p in found]
        if fs.isfile(root):
            return fs, [root], [shown(root)]
        parent = root.rstrip("/").rsplit("/", 1)[0] or "/"
        raise RecipeError(f"data.path: no such file or folder '{path}'{self._folder_hint(fs, parent, root)}")

    @staticmethod
    def _folder_hint(fs: Any, folder: str, wanted: str | None) -> str:
        """The names in the folder nearest to ``wanted`` (None: what it holds), or that it does not exist."""
        try:
            if not fs.isdir(folder):
                return f" (folder '{folder}' does not exist)"
            entries = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(folder, detail=False))
        except OSError:
            return ""
        if not entries:
            return f" (folder '{folder}' is empty)"
        close = nearest(posixpath.basename(wanted.rstrip("/")), entries) if wanted else []
        if close:
            return "; nearest: " + ", ".join(f"'{c}'" for c in close)
        return f"; '{folder}' holds: {', '.join(entries[:10])}{' ...' if len(entries) > 10 else ''}"

    def read_file(self, fs: Any, path: str, shown: str) -> Any:
        raise NotImplementedError

    def read(self, ctx: Any) -> tuple[Any, str, str, str]:
        import pandas as pd

        fs, paths, shown = self.files()
        frames = []
        progress = ctx.progress(len(paths), f"reading {self.format}") if ctx is not None and len(paths) > 1 else None
        for path, label in zip(paths, shown):
            frame = self.read_file(fs, path, label)
            if frames and set(frame.columns) != set(frames[0].columns):
                first = frames[0].columns
                lacks = [c for c in first if c not in set(frame.columns)]
                extra = [c for c in frame.columns if c not in set(first)]
                raise DataCheckError(
                    f"data.path: '{label}' and '{shown[0]}' have different columns"
                    f"{f'; missing in {label!r}: {lacks}' if lacks else ''}"
                    f"{f'; only in {label!r}: {extra}' if extra else ''}. Files of one table need the same columns",
                    [{"column": c, "check": "same_columns", "rows": [], "file": label} for c in lacks + extra],
                )
            frames.append(frame[list(frames[0].columns)] if frames else frame)
            if progress is not None:
                progress.advance(1, label)
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        if ctx is not None:
            ctx.metric("files", len(paths))
        where = f"{self.format} '{shown[0]}'" if len(paths) == 1 else f"{self.format} '{self.config.path}' ({len(paths)} files)"
        stem = posixpath.basename(paths[0].rstrip("/")) if len(paths) == 1 else posixpath.basename(
            self.config.path.rstrip("/").split("*")[0].rstrip("/")) or "data"
        name = dataset_name(stem.split(".")[0] if len(paths) == 1 else stem)
        files = shown[0] if len(paths) == 1 else f"{len(paths)} files under '{self.config.path}'"
        return frame, name, f"{self.format} data from {files}", where


class CsvDataSource(FileSource):
    name = "csv"
    summary = "CSV files (a file, a folder or a glob; local or any fsspec URL) with typed columns"
    format = "csv"
    suffixes = CSV_SUFFIXES

    @dataclass
    class Config(TableOptions):
        #: a file, a folder or a glob; local or an fsspec URL
        path: str = ""
        sep: str = ","
        encoding: str = "utf-8"
        #: extra strings read as missing (pandas' defaults "", "NA", "NaN", "null" ... still count)
        na_values: Optional[List[str]] = None
        #: the header's row number; null: the file has no header (give ``names``)
        header: Optional[int] = 0
        #: column names for a file without a header
        names: Optional[List[str]] = None

    @classmethod
    def check_location(cls, config: Any, key: str) -> None:
        super().check_location(config, key)
        if not config.sep:
            raise RecipeError(f"{key}.sep: empty; the column separator, e.g. ',' or ';' or '\\t'")
        if config.header is not None and config.header < 0:
            raise RecipeError(f"{key}.header: must be a row number >= 0, or null for a file without a header")
        if config.header is None and not config.names:
            raise RecipeError(f"{key}.names: a file without a header (header: null) needs its column names")

    def _read_csv(self, fs: Any, path: str, shown: str, nrows: int | None = None) -> Any:
        import pandas as pd

        cfg = self.config
        # declared categories are read as text: a zip code keeps its leading zeros
        text = {c: str for c, declared in cfg.columns.items() if declared.dtype == "category"}
        if cfg.names:
            text = {c: t for c, t in text.items() if c in cfg.names}
        try:
            if fs.size(path) == 0:
                raise pd.errors.EmptyDataError("the file has 0 bytes")
            with fs.open(path, "rb", compression="infer") as handle:
                frame = pd.read_csv(handle, sep=cfg.sep, encoding=cfg.encoding, na_values=cfg.na_values,
                                    header=cfg.header, names=cfg.names, nrows=nrows, dtype=text or None)
        except pd.errors.EmptyDataError:
            raise DataCheckError(f"data.path: '{shown}' is empty: no header and no rows",
                                 [{"column": None, "check": "not_empty", "rows": [], "file": shown}]) from None
        except (pd.errors.ParserError, ValueError, LookupError, OSError, EOFError) as exc:
            # ValueError covers UnicodeDecodeError; LookupError an unknown encoding; OSError/EOFError a broken archive
            raise DataCheckError(
                f"data.path: cannot read '{shown}' as CSV (sep {cfg.sep!r}, encoding {cfg.encoding!r}): {_reason(exc)}",
                [{"column": None, "check": "readable", "rows": [], "file": shown}],
            ) from None
        frame.columns = [str(c) for c in frame.columns]
        return frame

    def read_file(self, fs: Any, path: str, shown: str) -> Any:
        return self._read_csv(fs, path, shown)

    def peek(self) -> tuple[list[ColumnInfo], int | None]:
        fs, paths, shown = self.files()
        sample = self._read_csv(fs, paths[0], shown[0], nrows=DESCRIBE_ROWS)
        # a few rows cannot show that a value is never missing: nullable stays "may be"
        return [column_info(c, sample[c], nullable=True) for c in sample.columns], None


class ParquetDataSource(FileSource):
    name = "parquet"
    summary = "Parquet files (a file, a folder or a glob; local or any fsspec URL) with typed columns"
    format = "parquet"
    suffixes = PARQUET_SUFFIXES

    @dataclass
    class Config(TableOptions):
        #: a file, a folder or a glob; local or an fsspec URL
        path: str = ""

    @staticmethod
    def _guard(shown: str, action: Any) -> Any:
        import pyarrow as pa

        try:
            return action()
        except (pa.ArrowException, OSError) as exc:
            raise DataCheckError(f"data.path: cannot read '{shown}' as Parquet: {_reason(exc)}",
                                 [{"column": None, "check": "readable", "rows": [], "file": shown}]) from None

    @staticmethod
    def _check_not_empty(fs: Any, path: str, shown: str) -> None:
        if fs.size(path) == 0:
            raise DataCheckError(f"data.path: '{shown}' is empty (0 bytes)",
                                 [{"column": None, "check": "not_empty", "rows": [], "file": shown}])

    def read_file(self, fs: Any, path: str, shown: str) -> Any:
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._check_not_empty(fs, path, shown)

        def read() -> Any:
            with fs.open(path, "rb") as handle:
                return pq.read_table(handle)

        table = self._guard(shown, read)
        # integers with missing values stay integers (Int64), as describe() reports them
        return table.to_pandas(types_mapper=lambda t: pd.Int64Dtype() if pa.types.is_integer(t) else None)

    def peek(self) -> tuple[list[ColumnInfo], int | None]:
        import pyarrow.parquet as pq

        fs, paths, shown = self.files()
        footers = []
        for path, label in list(zip(paths, shown))[:DESCRIBE_MAX_FILES]:
            self._check_not_empty(fs, path, label)

            def footer(path: str = path) -> Any:
                with fs.open(path, "rb") as handle:
                    return pq.ParquetFile(handle).metadata

            footers.append(self._guard(label, footer))
        schema = footers[0].schema.to_arrow_schema()
        nulls = _null_counts(footers)
        columns = [ColumnInfo(f.name, _arrow_dtype(f.type), nulls.get(f.name, 1) != 0) for f in schema]
        rows = sum(m.num_rows for m in footers) if len(paths) <= DESCRIBE_MAX_FILES else None
        return columns, rows


def _arrow_dtype(arrow_type: Any) -> str:
    """The FEATURE_TYPES name of an Arrow type ("unknown": dates, lists, structs ...)."""
    import pyarrow as pa

    if pa.types.is_dictionary(arrow_type):
        arrow_type = arrow_type.value_type
    if pa.types.is_boolean(arrow_type):
        return "bool"
    if pa.types.is_integer(arrow_type):
        return "int"
    if pa.types.is_floating(arrow_type) or pa.types.is_decimal(arrow_type):
        return "float"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "category"
    return "unknown"


def _null_counts(footers: list[Any]) -> dict[str, int]:
    """Top-level column -> missing values in all the files, from the footers' statistics; a
    column whose statistics are absent anywhere is left out (it may have missing values)."""
    counts: dict[str, int] = {}
    unknown: set[str] = set()
    for meta in footers:
        for g in range(meta.num_row_groups):
            group = meta.row_group(g)
            for c in range(group.num_columns):
                chunk = group.column(c)
                name = chunk.path_in_schema
                stats = chunk.statistics
                if stats is None or not stats.has_null_count:
                    unknown.add(name)
                else:
                    counts[name] = counts.get(name, 0) + stats.null_count
    return {name: n for name, n in counts.items() if name not in unknown}


@hookimpl
def register_data_sources():
    return [CsvDataSource, ParquetDataSource]
