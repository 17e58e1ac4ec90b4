"""Quality measures shared by the trainer, the gates, the model cards and the device target, so a
figure means the same wherever it is reported. numpy only."""
from __future__ import annotations

from typing import Any

#: what a regression is measured by; larger is better only for r2
REGRESSION_METRICS = ("mse", "mae", "r2")
#: measured metrics where smaller is better (a champion comparison turns them around)
LOWER_IS_BETTER = ("log_loss", "mse", "mae")


def regression_metrics(y: Any, pred: Any) -> dict[str, float]:
    """mse, mae and r2 (1 - residual / total sum of squares) of predictions in the target's
    units. A constant target: r2 is 1.0 for exact predictions, else 0.0 (nothing to explain)."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64).reshape(-1)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1)
    if len(y) == 0:
        return {"mse": float("nan"), "mae": float("nan"), "r2": float("nan")}
    err = pred - y
    total = float(np.sum((y - y.mean()) ** 2))
    residual = float(np.sum(err ** 2))
    r2 = 1.0 - residual / total if total > 0 else (1.0 if residual == 0 else 0.0)
    return {"mse": float(np.mean(err ** 2)), "mae": float(np.mean(np.abs(err))), "r2": float(r2)}
