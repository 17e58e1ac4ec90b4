"""Data and model versions: content-addressed, with lineage, aliases and diffs.

``Registry(uri)`` opens a local folder (files + SQLite catalogue) or an fsspec URL (files only).
A data version's table is stored as content-addressed Parquet chunks shared between versions
(``tables.py``); ``Registry.append_data`` adds batches, ``Registry.diff`` explains changes
(``diffs.py``).
"""
from .store import Appended, Registry
from .versions import Version

__all__ = ["Appended", "Registry", "Version"]
