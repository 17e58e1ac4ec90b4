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

from typing import Callable, Sequence

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


def permutation_importance(
    session_fn: SessionFn,
    x: np.ndarray,
    y: Sequence[int] | np.ndarray,
    feature_names: Sequence[str],
    repeats: int = 5,
    seed: int = 0,
) -> list[dict]:
    """``[{feature, importance, std}]``, most important first.

    ``y``: the true class *indices* (columns of ``session_fn``'s output). ``importance`` is the
    mean drop of accuracy when that feature's column is shuffled (``repeats`` shuffles, one
    onnxruntime call per feature for all of them), ``std`` its spread over the shuffles.
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
    base = float(np.mean(np.asarray(session_fn(x)).argmax(axis=1) == y))
    rng = np.random.default_rng(seed)
    y_rep = np.tile(y, repeats)
    rows = []
    for j, name in enumerate(feature_names):
        batch = np.tile(x, (repeats, 1))
        for r in range(repeats):
            batch[r * n : (r + 1) * n, j] = x[rng.permutation(n), j]
        correct = (np.asarray(session_fn(batch)).argmax(axis=1) == y_rep).reshape(repeats, n)
        drops = base - correct.mean(axis=1)
        rows.append({"feature": str(name), "importance": float(drops.mean()), "std": float(drops.std())})
    rows.sort(key=lambda r: -r["importance"])  # stable: ties keep the schema order
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
