"""Data and model versions: content-addressed, with lineage, aliases and diffs.

``Registry(uri)`` opens a local folder (files + SQLite catalogue) or an fsspec URL (files only).
"""
from .store import Registry
from .versions import Version

__all__ = ["Registry", "Version"]
