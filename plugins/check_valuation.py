"""Data check ``data_valuation``: which training rows help or hurt the validation split, by
KNN-Shapley (Jia et al., "Efficient Task-Specific Data Valuation for Nearest Neighbor
Algorithms", VLDB 2019), and the most harmful ones flagged with their value as evidence.

    checks:
      - type: data_valuation     # runs right after the split (check_splits)
        severity: quarantine     # the harmful training rows leave the training split
        k: 5                     # neighbours of the K-nearest-neighbour utility
        max_value: -0.5          # flag rows worth less than this (in validation rows, see below)
        max_share: 0.05          # never flag more than this share of the training rows

The Shapley value of a training row for a K-nearest-neighbour classifier's validation accuracy
has a closed form (Theorem 1 of the paper): for one validation row, sort the N training rows by
distance (alpha_1 nearest ... alpha_N farthest), then

    s(alpha_N) = 1[y(alpha_N) = y_val] / N
    s(alpha_i) = s(alpha_{i+1}) + (1[y(alpha_i) = y_val] - 1[y(alpha_{i+1}) = y_val]) / K * min(K, i) / i

and a row's value is the mean over validation rows: exact, O(N log N) per validation row, no
model fit. Features are standardised on the training rows (text one-hot). The values add up to
the KNN's validation accuracy; we report them multiplied by the number of validation rows, so a
value of -1 means "costs about one correct validation answer". A negative row mostly sits next
to validation rows of another class: mislabeled, poisoned, or an honest but misleading example.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework import CheckReport, DataCheck, DataSplits, hookimpl
from framework.errors import RecipeError
from plugins.check_support import FeatureEncoder, encoded_labels, flag

#: distance-matrix cells computed at once (memory: 8 bytes each, a few copies)
CHUNK_CELLS = 4_000_000


def knn_shapley(x_train: Any, y_train: Any, x_val: Any, y_val: Any, k: int) -> Any:
    """Exact KNN-Shapley value of every training row (Jia et al. 2019, Theorem 1), averaged over
    the validation rows."""
    import numpy as np

    n = len(x_train)
    values = np.zeros(n)
    rank = np.arange(1, n + 1, dtype=np.float64)  # i = 1 .. N
    # weight of the step from alpha_{i+1} to alpha_i, i = 1 .. N-1
    step = np.minimum(k, rank[:-1]) / (k * rank[:-1])
    train_sq = (x_train ** 2).sum(axis=1)
    batch = max(1, CHUNK_CELLS // max(n, 1))
    for start in range(0, len(x_val), batch):
        xv, yv = x_val[start:start + batch], y_val[start:start + batch]
        distances = (xv ** 2).sum(axis=1)[:, None] - 2.0 * xv @ x_train.T + train_sq[None, :]
        order = np.argsort(distances, axis=1, kind="stable")
        match = (y_train[order] == yv[:, None]).astype(np.float64)  # 1[y(alpha_i) = y_val]
        s = np.empty_like(match)
        s[:, -1] = match[:, -1] / n
        if n > 1:
            increments = (match[:, :-1] - match[:, 1:]) * step[None, :]
            # s_i = s_N + sum_{j >= i} increment_j: a cumulative sum from the far end
            s[:, :-1] = s[:, -1:] + np.cumsum(increments[:, ::-1], axis=1)[:, ::-1]
        np.add.at(values, order.ravel(), s.ravel())
    return values / max(len(x_val), 1)


class DataValuationCheck(DataCheck):
    name = "data_valuation"
    summary = "KNN-Shapley value of every training row against the validation split; harmful rows flagged"

    @dataclass
    class Config:
        k: int = 5
        #: flag training rows worth less than this, in validation rows (value x validation size)
        max_value: float = -0.5
        max_share: float = 0.05

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if config.k < 1:
            raise RecipeError(f"{key}.k: at least 1 neighbour, got {config.k}")
        if config.max_value >= 0:
            raise RecipeError(f"{key}.max_value: a negative value (a row worth less than nothing), got {config.max_value}")
        if not 0.0 < config.max_share <= 1.0:
            raise RecipeError(f"{key}.max_share: a share in (0, 1], got {config.max_share}")

    def check_splits(self, splits: DataSplits, ctx) -> CheckReport:
        import numpy as np

        dataset, cfg = splits.dataset, self.config
        train, val = splits.train, splits.val
        if dataset.task != "classification" or len(train) == 0 or len(val) == 0:
            return CheckReport(self.name, True, 0, details={"note": "needs a classification task with training and validation rows"})
        y_train, classes = encoded_labels(train[dataset.target], dataset.classes)
        y_val, _ = encoded_labels(val[dataset.target], classes)
        encoder = FeatureEncoder(dataset.features).fit(train)
        values = knn_shapley(encoder.transform(train), y_train, encoder.transform(val), y_val, cfg.k) * len(val)
        harmful = np.flatnonzero(values < cfg.max_value)
        harmful = harmful[np.argsort(values[harmful])][: int(cfg.max_share * len(train))]
        flagged = [flag(train.index[i], "harmful to validation (KNN-Shapley)", score=float(values[i]),
                        evidence=f"KNN-Shapley value {values[i]:.3f} validation rows (K={cfg.k}, label "
                                 f"{classes[y_train[i]]!r})") for i in harmful.tolist()]
        failures = []
        if flagged:
            failures.append({"column": None, "check": f"knn_shapley_below({cfg.max_value})", "count": len(flagged),
                             "rows": [f["row"] for f in flagged[:20]]})
        details = {
            "k": cfg.k, "train_rows": len(train), "val_rows": len(val),
            "value_sum": round(float(values.sum()), 4),  # = correct KNN answers on validation
            "negative_rows": int((values < 0).sum()),
            "quantiles": {q: round(float(np.quantile(values, q)), 4) for q in (0.01, 0.05, 0.5, 0.95)},
            "most_harmful": [{"row": f["row"], "value": round(f["score"], 4)} for f in flagged[:10]],
        }
        ctx.logger.info("data_valuation: %d training rows valued against %d validation rows; %d below %s",
                        len(train), len(val), len(flagged), cfg.max_value)
        return CheckReport(self.name, not flagged, len(train) + len(val), failures=failures, details=details,
                           flagged=flagged)


@hookimpl
def register_data_checks():
    return [DataValuationCheck]
