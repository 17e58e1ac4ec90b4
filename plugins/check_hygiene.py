"""Data checks ``duplicates`` and ``leakage``: the same row twice, and the same row on both sides
of the split.

    checks:
      - type: duplicates
        severity: quarantine     # the first occurrence stays, every repeat is taken out
        near: 0.01               # also rows within 0.01 (standardised RMS distance) of an earlier one
      - type: leakage            # runs right after the split (check_splits)
        severity: quarantine     # validation / test rows equal to a training row leave their split

``duplicates`` compares the features and the target: an exact duplicate repeats an earlier row
in every one of them; with ``near`` set, a near duplicate has features within that distance of
an earlier row (numbers standardised, text one-hot; distance = Euclidean / sqrt(width), found
with a nearest-neighbour index) whatever its target. ``leakage`` hashes the feature values of
every row: a validation or test row whose features equal a training row's is a leak (the model
would be scored on what it learned), flagged in the part it sits in, so quarantine removes it
from the evaluation and the training rows stay.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from framework import CheckReport, DataCheck, DataSplits, Dataset, hookimpl
from framework.errors import RecipeError
from plugins.check_support import FeatureEncoder, flag


def row_hashes(frame: Any, columns: list[str]) -> Any:
    """One 64-bit hash per row of ``columns`` (values only, not the index)."""
    import pandas as pd

    return pd.util.hash_pandas_object(frame[columns], index=False)


class DuplicatesCheck(DataCheck):
    name = "duplicates"
    summary = "exact duplicate rows, and near duplicates (nearest neighbour within a distance); repeats flagged"

    @dataclass
    class Config:
        #: the columns compared for exact duplicates (default: the features and the target)
        columns: Optional[List[str]] = None
        #: near duplicates too: a row whose features lie within this standardised RMS distance of
        #: an earlier row's (None: exact duplicates only)
        near: Optional[float] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if config.near is not None and config.near <= 0:
            raise RecipeError(f"{key}.near: a distance > 0 (e.g. 0.01), or leave it out; got {config.near}")

    def check(self, dataset: Dataset, ctx) -> CheckReport:
        frame = dataset.frame
        columns = self.config.columns or list(dataset.features) + [dataset.target]
        hashes = row_hashes(frame, columns)
        repeat = hashes.duplicated(keep="first").to_numpy()
        first_of = dict(zip(hashes[~repeat].to_numpy().tolist(), frame.index[~repeat].tolist()))
        flagged, exact = [], []
        for label, h in zip(frame.index[repeat].tolist(), hashes[repeat].to_numpy().tolist()):
            exact.append(label)
            flagged.append(flag(label, "exact duplicate", evidence=f"same values as row {first_of[h]}"))
        near = self.near_duplicates(dataset, exclude=set(exact)) if self.config.near is not None else []
        flagged.extend(near)
        failures = []
        if exact:
            failures.append({"column": None, "check": "exact_duplicate", "count": len(exact), "rows": exact[:20]})
        if near:
            failures.append({"column": None, "check": f"near_duplicate({self.config.near})", "count": len(near),
                             "rows": [f["row"] for f in near[:20]]})
        details = {"columns": len(columns), "exact_duplicates": len(exact), "near_duplicates": len(near)}
        return CheckReport(self.name, not failures, len(frame), failures=failures, details=details, flagged=flagged)

    def near_duplicates(self, dataset: Dataset, exclude: set) -> list[dict]:
        """Rows within ``near`` of an earlier row (exact repeats excluded: they are flagged already)."""
        import numpy as np
        from sklearn.neighbors import NearestNeighbors

        frame = dataset.frame
        keep = ~frame.index.isin(list(exclude))
        rows = frame[keep]
        if len(rows) < 2:
            return []
        matrix = FeatureEncoder(dataset.features).fit_transform(rows)
        width = max(matrix.shape[1], 1)
        radius = self.config.near * np.sqrt(width)
        neighbours = NearestNeighbors(radius=radius).fit(matrix)
        distances, indices = neighbours.radius_neighbors(matrix, sort_results=True)
        labels = rows.index.tolist()
        out = []
        for i, (dist, idx) in enumerate(zip(distances, indices)):
            earlier = [(d, j) for d, j in zip(dist, idx) if j < i]
            if earlier:
                d, j = earlier[0]
                out.append(flag(labels[i], "near duplicate", score=float(d / np.sqrt(width)),
                                evidence=f"within {d / np.sqrt(width):.4g} of row {labels[j]}"))
        return out


class LeakageCheck(DataCheck):
    name = "leakage"
    summary = "validation/test rows whose features equal a training row's (after the split); flagged where they sit"

    @dataclass
    class Config:
        #: the parts compared with the training rows
        parts: List[str] = field(default_factory=lambda: ["val", "test"])
        #: the columns that make a row the same row (default: the features)
        columns: Optional[List[str]] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        wrong = [p for p in config.parts if p not in ("val", "test")]
        if wrong or not config.parts:
            raise RecipeError(f"{key}.parts: a list of 'val' and/or 'test' (compared with train), got {config.parts}")

    def check_splits(self, splits: DataSplits, ctx) -> CheckReport:
        columns = self.config.columns or list(splits.dataset.features)
        train_hashes = row_hashes(splits.train, columns)
        train_of = dict(zip(train_hashes.to_numpy().tolist(), splits.train.index.tolist()))
        failures, flagged, checked = [], [], len(splits.train)
        for part in self.config.parts:
            frame = getattr(splits, part)
            checked += len(frame)
            hashes = row_hashes(frame, columns).to_numpy().tolist()
            leaks = [(label, train_of[h]) for label, h in zip(frame.index.tolist(), hashes) if h in train_of]
            if leaks:
                failures.append({"column": None, "check": f"leak_train_{part}", "count": len(leaks),
                                 "rows": [label for label, _ in leaks[:20]]})
                flagged.extend(flag(label, f"leak ({part} row equals a training row)",
                                    evidence=f"same features as train row {twin}") for label, twin in leaks)
        details = {"columns": len(columns), "leaks": {f["check"]: f["count"] for f in failures}}
        return CheckReport(self.name, not failures, checked, failures=failures, details=details, flagged=flagged)


@hookimpl
def register_data_checks():
    return [DuplicatesCheck, LeakageCheck]
