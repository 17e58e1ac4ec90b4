"""Helpers shared by the data-check plugins (a support module: no hook, not an entry point).

Reference versions from the registry, the numeric matrix model-based checks learn from, and the
shape of a flagged row. Heavy imports (pandas, scikit-learn) stay inside the functions.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from framework.errors import RecipeError

#: ``reference:`` of a check that compares with a registered data version
REFERENCE_RE = re.compile(r"^(previous|[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+|:[0-9a-f]{6,64}))$")


def check_reference(reference: str, key: str) -> None:
    """Plan-time: ``previous``, ``NAME@ALIAS`` or ``NAME:ID``; RecipeError naming ``key`` otherwise."""
    if not REFERENCE_RE.match(str(reference)):
        raise RecipeError(f"{key}.reference: '{reference}' is not a data version; use 'previous' (the newest stored "
                          "version of the same dataset), 'NAME@ALIAS' or 'NAME:VERSION_ID'")


def reference_data(ctx: Any, dataset: Any, reference: str) -> tuple[Any, str | None]:
    """(the reference frame, its ref) through ``ctx.registered_data``; for ``previous`` the newest
    stored version of ``dataset.name``, and (None, None) when there is none yet (a first run)."""
    from framework.errors import StageError

    ref = f"{dataset.name}@latest" if reference == "previous" else reference
    try:
        data = ctx.registered_data(ref)
    except StageError as exc:
        if reference == "previous" and "unknown data" in str(exc):
            return None, None
        raise
    return data.frame, data.ref


def flag(row: Any, reason: str, score: float | None = None, evidence: str | None = None) -> dict:
    """One ``CheckReport.flagged`` entry (JSON-friendly)."""
    entry = {"row": row.item() if hasattr(row, "item") else row, "reason": reason}
    if score is not None:
        entry["score"] = float(score)
    if evidence is not None:
        entry["evidence"] = evidence
    return entry


def is_numeric(column: Any) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)


class FeatureEncoder:
    """Features as one float matrix for the model-based checks: numbers standardised (missing
    values imputed by the median), everything else one-hot (missing is its own value). Fitted
    on one frame (the training rows), applied to others."""

    def __init__(self, features: Sequence[str]):
        self.features = list(features)

    def fit(self, frame: Any) -> "FeatureEncoder":
        self.numeric = [f for f in self.features if is_numeric(frame[f])]
        self.categorical = [f for f in self.features if f not in self.numeric]
        numbers = frame[self.numeric].astype("float64")
        self.median = numbers.median()
        filled = numbers.fillna(self.median)
        self.mean = filled.mean()
        self.std = filled.std(ddof=0).replace(0.0, 1.0).fillna(1.0)
        self.levels = {f: sorted(frame[f].astype(str).unique().tolist()) for f in self.categorical}
        return self

    def transform(self, frame: Any) -> Any:
        import numpy as np

        numbers = frame[self.numeric].astype("float64").fillna(self.median)
        parts = [((numbers - self.mean) / self.std).to_numpy(dtype=np.float64)]
        for f in self.categorical:
            values = frame[f].astype(str).to_numpy()
            parts.append(np.stack([values == level for level in self.levels[f]], axis=1).astype(np.float64)
                         if self.levels[f] else np.zeros((len(frame), 0)))
        matrix = np.concatenate(parts, axis=1) if parts else np.zeros((len(frame), 0))
        return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)

    def fit_transform(self, frame: Any) -> Any:
        return self.fit(frame).transform(frame)


def encoded_labels(series: Any, classes: Sequence[Any] | None) -> tuple[Any, list]:
    """(int labels 0..k-1, the classes in that order) for a classification target."""
    import numpy as np

    classes = list(classes) if classes is not None else sorted(series.unique().tolist())
    index = {c: i for i, c in enumerate(classes)}
    return np.asarray([index.get(v, -1) for v in series], dtype=np.int64), classes
