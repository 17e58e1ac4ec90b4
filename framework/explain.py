"""Explanations a non-expert can read: what a model relies on overall, and why one answer.

Two methods, both model-agnostic (they only call the model), numpy only:

* ``permutation_importance``: *global*. Shuffle one feature's column (so it carries no
  information any more) and see how much the accuracy drops. A big drop means the model relies on
  that feature; about zero means it could do without it.
* ``occlusion_attributions``: *per prediction*. For one answer, replace one feature's value by
  the value of an average case (the training mean) and see how much the probability of the
  predicted class falls. In plain words, an attribution is **how much this feature's value pushed
  the answer toward the predicted class, compared with an average case**: positive = it pushed
  toward the answer given, negative = it pushed away from it, near zero = it did not matter here.
  Features are taken one at a time, so effects that only appear together are not shown.

``session_fn(x float32 [n, features]) -> probabilities [n, classes]`` is any callable: an
onnxruntime session wrapped in a lambda, ``OnnxRunner.predict``...
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

SessionFn = Callable[[np.ndarray], np.ndarray]

#: what one attribution means, for answers, cards and docs
ATTRIBUTION_MEANING = (
    "how much this feature's value pushed the answer toward the predicted class, compared with an "
    "average case (the feature set to its training mean): the predicted class's probability minus "
    "that probability with the feature replaced; positive pushed toward the answer, negative away"
)


def training_means(x: np.ndarray) -> list[float]:
    """The baseline for ``occlusion_attributions``: each feature's mean over the training rows."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or not len(x):
        raise ValueError(f"expected a non-empty 2-D array [rows, features], got shape {list(x.shape)}")
    return [float(v) for v in x.mean(axis=0)]


def accuracy_score(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: 1.0 when the argmax of the outputs is the true class index, else 0.0."""
    return (np.asarray(outputs).argmax(axis=1) == y).astype(np.float64)


def negative_squared_error(outputs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row: minus the squared error of a regression's prediction (larger is better), so that
    an importance is the increase of the mean squared error when a feature is shuffled."""
    return -(np.asarray(outputs, dtype=np.float64).reshape(-1) - np.asarray(y, dtype=np.float64)) ** 2


def permutation_importance(
    session_fn: SessionFn,
    x: np.ndarray,
    y: Sequence[int] | np.ndarray,
    feature_names: Sequence[str],
    repeats: int = 5,
    seed: int = 0,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] = accuracy_score,
) -> list[dict]:
    """``[{feature, importance, std}]``, most important first.

    ``y``: the true class *indices* (columns of ``session_fn``'s output). ``importance`` is the
    mean drop of accuracy when that feature's column is shuffled (``repeats`` shuffles, one
    onnxruntime call per feature for all of them), ``std`` its spread over the shuffles.
    ``score``: per-row score, larger is better (``negative_squared_error`` for a regression: the
    importance is then the increase of the mean squared error).
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != len(feature_names):
        raise ValueError(f"x has shape {list(x.shape)}, expected [rows, {len(feature_names)}] (one column per feature)")
    if len(y) != len(x):
        raise ValueError(f"y has {len(y)} labels for {len(x)} rows")
    if int(repeats) < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    repeats = int(repeats)
    n = len(x)
    base = float(np.mean(score(session_fn(x), y)))
    rng = np.random.default_rng(seed)
    y_rep = np.tile(y, repeats)
    rows = []
    for j, name in enumerate(feature_names):
        batch = np.tile(x, (repeats, 1))
        for r in range(repeats):
            batch[r * n : (r + 1) * n, j] = x[rng.permutation(n), j]
        correct = score(session_fn(batch), y_rep).reshape(repeats, n)
        drops = base - correct.mean(axis=1)
        rows.append({"feature": str(name), "importance": float(drops.mean()), "std": float(drops.std())})
    rows.sort(key=lambda r: -r["importance"])  # stable: ties keep the schema order
    return rows


def permutation_importance_frame(
    predict_frame: Callable[[Any], np.ndarray],
    frame: Any,
    y: Sequence[Any] | np.ndarray,
    feature_names: Sequence[str],
    repeats: int = 5,
    seed: int = 0,
    score: Callable[[np.ndarray, np.ndarray], np.ndarray] = accuracy_score,
) -> list[dict]:
    """``permutation_importance`` in raw space: ``frame`` holds the raw feature columns (strings,
    missing values), ``predict_frame(frame)`` the model's outputs for its rows. A feature's raw
    column is shuffled, whatever its type, so a category counts as one feature, not as its one-hot
    columns."""
    import pandas as pd

    y = np.asarray(y)
    if len(y) != len(frame):
        raise ValueError(f"y has {len(y)} labels for {len(frame)} rows")
    repeats = int(repeats)
    n = len(frame)
    frame = frame[list(feature_names)].reset_index(drop=True)
    base = float(np.mean(score(predict_frame(frame), y)))
    rng = np.random.default_rng(seed)
    y_rep = np.tile(y, repeats)
    rows = []
    for name in feature_names:
        copies = []
        for _ in range(repeats):
            shuffled = frame.copy()
            shuffled[name] = frame[name].to_numpy()[rng.permutation(n)]
            copies.append(shuffled)
        correct = score(predict_frame(pd.concat(copies, ignore_index=True)), y_rep).reshape(repeats, n)
        drops = base - correct.mean(axis=1)
        rows.append({"feature": str(name), "importance": float(drops.mean()), "std": float(drops.std())})
    rows.sort(key=lambda r: -r["importance"])
    return rows


def occlusion_batch(x_rows: np.ndarray, baseline: Sequence[float] | np.ndarray) -> np.ndarray:
    """The one batch occlusion needs: per instance its own row, then one row per feature with
    that feature set to the baseline. Shape ``[n * (features + 1), features]``, float32."""
    x = np.asarray(x_rows, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    base = np.asarray(baseline, dtype=np.float32)
    n, f = x.shape
    if base.shape != (f,):
        raise ValueError(f"baseline has {base.size} values for {f} features")
    batch = np.repeat(x[:, None, :], f + 1, axis=1)  # [n, f+1, f]
    idx = np.arange(f)
    batch[:, idx + 1, idx] = base  # row j+1 of each instance: feature j occluded
    return batch.reshape(n * (f + 1), f)


def attributions_from_probabilities(
    probabilities: np.ndarray, n: int, n_features: int, target_index: int | Sequence[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(attributions [n, features], target index per instance)`` from the model's answer to
    ``occlusion_batch`` (``[n * (features + 1), classes]``)."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != n * (n_features + 1):
        raise ValueError(f"expected probabilities of shape [{n * (n_features + 1)}, classes], got {list(p.shape)}")
    p = p.reshape(n, n_features + 1, p.shape[1])
    if target_index is None:
        target = p[:, 0, :].argmax(axis=1)
    else:
        target = np.broadcast_to(np.asarray(target_index, dtype=np.int64), (n,))
    chosen = p[np.arange(n), :, target]  # [n, f+1]: the target's probability, original then occluded
    return chosen[:, :1] - chosen[:, 1:], np.asarray(target)


def occlusion_feeds(feeds: dict, layout: Any, feature_names: Sequence[str], baseline: Sequence[Any]) -> dict:
    """``occlusion_batch`` for a model of typed inputs: its feeds (``InputLayout``) for, per
    instance, its own row then one row per feature with that feature's raw value replaced by the
    baseline (a number's training mean, a category's most frequent value)."""
    n = len(next(iter(feeds.values())))
    f = len(feature_names)
    out = {name: np.repeat(np.asarray(array)[:, None, :], f + 1, axis=1) for name, array in feeds.items()}
    numeric = {c: i for i, c in enumerate(layout.numeric_columns)}
    categorical = {c: i for i, c in enumerate(layout.categorical_columns)}
    for j, name in enumerate(feature_names):
        value = baseline[j]
        if name in numeric:
            out[layout.numeric][:, j + 1, numeric[name]] = np.nan if value is None else float(value)
        else:
            out[layout.categorical][:, j + 1, categorical[name]] = layout.missing_token if value is None else str(value)
    return {name: array.reshape(n * (f + 1), array.shape[2]) for name, array in out.items()}


def regression_attributions(outputs: np.ndarray, n: int, n_features: int) -> np.ndarray:
    """Attributions ``[n, features]`` of a regression from its answer to an occlusion batch
    (``[n * (features + 1), 1]``): the prediction minus the prediction with the feature replaced."""
    values = np.asarray(outputs, dtype=np.float64).reshape(n, n_features + 1)
    return values[:, :1] - values[:, 1:]


def occlusion_attributions(
    session_fn: SessionFn,
    x_rows: np.ndarray,
    baseline: Sequence[float] | np.ndarray,
    target_index: int | Sequence[int] | None = None,
) -> np.ndarray:
    """Attributions ``[n, features]``: for each instance and feature, the predicted class's
    probability minus that probability with the feature replaced by ``baseline`` (training means).

    Read one value as: how much this feature's value pushed the answer toward the predicted class,
    compared with an average case. ``target_index`` explains another class (one index for every
    instance, or one per instance) instead of the predicted one. One ``session_fn`` call in all.
    """
    x = np.asarray(x_rows, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    batch = occlusion_batch(x, baseline)
    attributions, _ = attributions_from_probabilities(session_fn(batch), x.shape[0], x.shape[1], target_index)
    return attributions


def top_attributions(attributions: np.ndarray, feature_names: Sequence[str], k: int = 10) -> list[list[list]]:
    """Per instance, its ``k`` largest attributions by size: ``[[feature, value], ...]``."""
    a = np.atleast_2d(np.asarray(attributions, dtype=np.float64))
    order = np.argsort(-np.abs(a), axis=1, kind="stable")[:, :k]
    return [[[str(feature_names[j]), float(row[j])] for j in idx] for row, idx in zip(a, order)]
