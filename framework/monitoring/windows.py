"""Served rows cut per model version and per window (rows or seconds of served time)."""
from __future__ import annotations

from typing import Any, Iterator

from ..errors import RecipeError


def check_window(window_rows: Any, window_seconds: Any, key: str) -> None:
    if window_rows is not None and window_rows < 1:
        raise RecipeError(f"{key}.window_rows: a number of rows >= 1, got {window_rows}")
    if window_seconds is not None and not window_seconds > 0:
        raise RecipeError(f"{key}.window_seconds: a duration > 0, got {window_seconds}")
    if window_rows is not None and window_seconds is not None:
        raise RecipeError(f"{key}: give window_rows or window_seconds, not both")


def by_version(frame: Any) -> Iterator[tuple[str, Any]]:
    """(model version, its rows) of a served frame; one group "all" without a version column."""
    if "model_version" not in frame.columns:
        yield "all", frame
        return
    for version, rows in frame.groupby(frame["model_version"].astype(str), sort=True):
        yield str(version), rows


def cut_windows(rows: Any, window_rows: int | None = None, window_seconds: float | None = None) -> Iterator[tuple[Any, Any, Any]]:
    """(start, end, rows) of each window, oldest first: ``window_rows`` rows each, or
    ``window_seconds`` of served time each (from the first row), or everything as one window.
    start / end are the ISO times of the window's first and last rows (None without timestamps)."""
    import pandas as pd

    if "timestamp" in rows.columns and len(rows):
        rows = rows.sort_values("timestamp", kind="stable")
        times = pd.to_datetime(rows["timestamp"], utc=True)
    else:
        times = None
    n = len(rows)

    def bounds(part_times):
        if part_times is None or not len(part_times):
            return None, None
        return part_times.iloc[0].isoformat(), part_times.iloc[-1].isoformat()

    if window_rows:
        size = int(window_rows)
        for i in range(0, n, size):
            yield (*bounds(None if times is None else times.iloc[i:i + size]), rows.iloc[i:i + size])
    elif window_seconds and times is not None:
        seconds = (times - times.iloc[0]).dt.total_seconds()
        index = (seconds // float(window_seconds)).astype(int).to_numpy()
        for w in sorted(set(index.tolist())):
            mask = index == w
            yield (*bounds(times[mask]), rows[mask])
    else:
        yield (*bounds(times), rows)
