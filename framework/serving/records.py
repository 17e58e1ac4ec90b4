"""The served rows an ingress replica keeps for monitors (``GET -/records``): a bounded ring buffer.

A later change replaces this with a durable append-only log; the interface is kept to what that
log needs too: ``append`` one request's rows, read everything back as ``columns``.
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

    def append(
        self, rows: Iterable[Sequence[Any]], predictions: Iterable[Any], model_version: str, arm: str,
        latency_ms: float, request_id: str,
    ) -> None:
        """One request's instances (feature values in schema order), each with its prediction."""
        now = time.time()
        append = self._rows.append
        for row, label in zip(rows, predictions):
            # tuples of plain values get untracked by the GC: 10k buffered rows add no GC pauses
            append((tuple(row), label, model_version, arm, latency_ms, request_id, now))

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
