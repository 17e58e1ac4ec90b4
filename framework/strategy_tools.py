"""Small helpers that traffic strategies share (built-in and third-party): pure Python, cheap."""
from __future__ import annotations

import math
from typing import Any, Sequence


def same_prediction(a: Any, b: Any) -> bool:
    """Equality of two predictions that tolerates arrays (elementwise result) and types that
    refuse to compare: a strategy must never raise on a client's odd answer."""
    try:
        result = a == b
        if isinstance(result, bool):
            return result
        return bool(result.all()) if hasattr(result, "all") else bool(result)
    except Exception:
        return False


def finite_or_none(value: Any) -> float | None:
    """``value`` as a finite float, or None (missing, not a number, NaN or infinite): a reward
    a strategy can count."""
    if value is None:
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def nearest_rank_percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted sequence (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, -(-len(sorted_values) * q // 100))  # ceil(n * q / 100), at least 1
    return float(sorted_values[int(rank) - 1])


def refuse_accuracy_for_regression(strategy: str, task: str, key: str, judges_accuracy: bool, instead: str) -> None:
    """Plan time: a strategy that scores an arm by ``label == prediction`` cannot judge a
    regression (a predicted number almost never equals the truth). RecipeError naming ``key``
    and what to use ``instead``."""
    if task == "regression" and judges_accuracy:
        from .errors import RecipeError

        raise RecipeError(f"{key}: '{strategy}' judges accuracy (label == prediction), which says nothing of a "
                          f"regression's numbers; {instead}")
