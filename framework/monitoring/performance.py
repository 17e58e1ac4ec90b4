"""A classifier's accuracy on served traffic: true once labels arrive, estimated before.

* **True accuracy**: feedback labels joined to the served answers by request id (one label per
  request: a request of one instance); a 95% Wilson interval.
* **Estimated accuracy** (confidence-based performance estimation, the idea of NannyML's CBPE):
  the model's confidence in its answer (the probability of the class it answered) is
  calibrated on labeled reference rows it did not learn from (the validation split), by
  isotonic regression of "the answer was right" on the confidence; a window's expected accuracy
  is then the mean calibrated confidence of its rows, with the spread of a sum of independent
  Bernoulli trials as its 95% band. It needs no label, so it is there at once; it stays right
  under covariate shift (the inputs move, P(label | inputs) does not) as long as the calibration
  holds, and cannot see concept drift, which only true labels reveal: both are reported, and
  their difference once labels come.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

Z95 = 1.959963984540054


class Calibration:
    """P(answer right | confidence), isotonic, fitted on labeled reference rows."""

    def __init__(self, confidence: Sequence[float], correct: Sequence[bool]):
        import numpy as np
        from sklearn.isotonic import IsotonicRegression

        c = np.asarray(confidence, dtype=np.float64)
        y = np.asarray(correct, dtype=np.float64)
        keep = ~np.isnan(c)
        c, y = c[keep], y[keep]
        if c.size < 2:
            raise ValueError(f"calibration needs labeled reference rows with a confidence, got {c.size}")
        self.rows = int(c.size)
        self.reference_accuracy = float(y.mean())
        self._model = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(c, y)

    def __call__(self, confidence: Sequence[float]) -> Any:
        import numpy as np

        return self._model.predict(np.asarray(confidence, dtype=np.float64))


def estimate_accuracy(confidence: Sequence[float], calibration: Calibration) -> dict:
    """The expected accuracy of answers with these confidences, and its 95% band."""
    import numpy as np

    c = np.asarray(confidence, dtype=np.float64)
    c = c[~np.isnan(c)]
    if c.size == 0:
        return {"estimated_accuracy": None, "estimated_interval": None, "rows_estimated": 0}
    p = calibration(c)
    mean = float(p.mean())
    half = Z95 * math.sqrt(float((p * (1 - p)).sum())) / c.size
    return {"estimated_accuracy": mean, "estimated_interval": [max(0.0, mean - half), min(1.0, mean + half)],
            "rows_estimated": int(c.size)}


def wilson(successes: int, n: int) -> list[float] | None:
    if n == 0:
        return None
    share = successes / n
    centre = (share + Z95 ** 2 / (2 * n)) / (1 + Z95 ** 2 / n)
    half = Z95 * math.sqrt(share * (1 - share) / n + Z95 ** 2 / (4 * n * n)) / (1 + Z95 ** 2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def join_labels(rows: Any, feedback: Any) -> Any:
    """The served rows' labels from feedback (columns ``request_id``, ``label``), joined by request
    id; only requests of one instance get one (a label names a request's answer). A Series on
    ``rows``' index, missing where no label came."""
    import pandas as pd

    if feedback is None or not len(feedback) or "label" not in getattr(feedback, "columns", ()):
        return pd.Series([None] * len(rows), index=rows.index, dtype=object)
    given = feedback.dropna(subset=["label"]).drop_duplicates("request_id", keep="first")
    labels = dict(zip(given["request_id"], given["label"].astype(object)))  # 1 stays 1, not 1.0
    counts = rows["request_id"].value_counts()
    return pd.Series([labels.get(r) if counts.get(r) == 1 else None for r in rows["request_id"]], index=rows.index,
                     dtype=object)


def true_accuracy(predictions: Sequence[Any], labels: Sequence[Any]) -> dict:
    """Accuracy of the answers that have a label (compared as text: JSON turns 1 into "1" and back)."""
    pairs = [(str(p), str(y)) for p, y in zip(predictions, labels) if y is not None and not _missing(y)]
    n = len(pairs)
    right = sum(p == y for p, y in pairs)
    return {"labels": n, "accuracy": right / n if n else None, "accuracy_interval": wilson(right, n)}


def _missing(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
