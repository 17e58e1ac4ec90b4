"""The served rows an ingress replica keeps for monitors (``GET -/records``): a bounded ring buffer.

The durable copy is the record log (``recordlog.py``); on a replica's start this buffer is
refilled from it, so ``-/records`` still shows what was served before a restart.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Iterable, Sequence

from .types import RECORD_FIELDS


class RecordBuffer:
    """The last ``capacity`` served instances (at least 1), oldest dropped first."""

    def __init__(self, feature_names: Sequence[str], capacity: int):
        self.feature_names = list(feature_names)
        # raw tuples only: the request path pays one deque.append per instance, nothing more
        self._rows: deque[tuple] = deque(maxlen=max(1, int(capacity)))

    @property
    def capacity(self) -> int:
        return self._rows.maxlen or 0

    def append(
        self, rows: Iterable[Sequence[Any]], predictions: Iterable[Any], model_version: str, arm: str,
        latency_ms: float, request_id: str, correlation_id: str | None = None, timestamp: float | None = None,
    ) -> None:
        """One request's instances (feature values in schema order), each with its prediction."""
        now = time.time() if timestamp is None else timestamp
        append = self._rows.append
        for row, label in zip(rows, predictions):
            # tuples of plain values get untracked by the GC: 10k buffered rows add no GC pauses
            append((tuple(row), label, model_version, arm, latency_ms, request_id, now, correlation_id))

    def columns(self) -> dict[str, list]:
        """Everything held, as JSON columns: features..., then ``RECORD_FIELDS``."""
        return records_columns(list(self._rows), self.feature_names)


def records_columns(rows: Sequence[tuple], feature_names: Sequence[str]) -> dict[str, list]:
    """Rows of ``(features tuple, *RECORD_FIELDS)`` as columns: one list per feature, then per field."""
    columns: dict[str, list] = {name: [] for name in feature_names}
    if rows:
        for name, values in zip(feature_names, zip(*(r[0] for r in rows))):
            columns[name] = list(values)
    for i, name in enumerate(RECORD_FIELDS, start=1):
        columns[name] = [r[i] for r in rows]
    return columns


def answers_frame(answers: Sequence[dict], feature_names: Sequence[str]) -> Any:
    """The answers of a record log (``recordlog.read_records``: deduplicated by request id) as
    the served rows a monitor looks at: one row per instance, the features then
    ``RECORD_FIELDS`` (timestamp as UTC datetimes) and ``confidence``, in served order. A record whose rows do not
    have the schema's width is skipped (a replica of another deployment)."""
    import pandas as pd

    width = len(feature_names)
    rows: list[tuple] = []
    confidence: list[float] = []
    for a in answers:
        predictions = a.get("predictions") or ()
        probabilities = a.get("probabilities") or ()
        for i, (row, label) in enumerate(zip(a.get("rows") or (), predictions)):
            if len(row) != width:
                continue
            rows.append((tuple(row), label, a.get("model_version"), a.get("arm"), a.get("latency_ms"),
                         a.get("request_id"), a.get("time"), a.get("correlation_id")))
            p = probabilities[i] if i < len(probabilities) else None
            confidence.append(float(max(p)) if isinstance(p, list) and p else float("nan"))
    frame = pd.DataFrame(records_columns(rows, feature_names))
    # the model's probability of the class it answered (classification; NaN otherwise)
    frame["confidence"] = pd.Series(confidence, dtype="float64")
    numeric = [c for c in feature_names if pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    if numeric:
        frame[numeric] = frame[numeric].astype("float64")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], unit="s", utc=True)
    return frame
