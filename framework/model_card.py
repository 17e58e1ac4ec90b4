"""A model card per model version: what it predicts, how good it is overall and for each declared
group (slice), what it relies on most, what it is for and what it must not be used for.

``build_model_card`` returns plain JSON-able data (stored next to the model, e.g. as
``model_card.json``); ``render_markdown`` turns it into a page for people who are not ML experts.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

CARD_FORMAT = 1
#: a slice with fewer examples than this is reported, but flagged as too small to judge
MIN_SLICE_ROWS = 30
#: a slice this far (accuracy points) below the overall accuracy is flagged as weaker
WEAKER_BY = 0.05


def slice_metrics(
    predict_fn: Callable[[np.ndarray], np.ndarray],
    frame: Any,
    features: Sequence[str],
    target: str,
    classes: Sequence[Any],
    slices: Mapping[str, str],
    rows_of: Callable[[Any], Any] | None = None,
    task: str = "classification",
) -> dict[str, dict]:
    """``{slice: {"query", "n", "accuracy"}}`` for each ``name -> row filter`` in ``slices``;
    for a regression ``{"query", "n", "mse", "mae", "r2"}``.

    A filter is ``framework.expressions``' small grammar (column comparisons joined by
    and / or / not), parsed and applied as a boolean mask: never ``DataFrame.query``, never eval.
    ``predict_fn(x float32 [n, features]) -> probabilities [n, classes]`` (column i is
    ``classes[i]``; a regression's predictions [n, 1]). ``rows_of(part)``: what ``predict_fn``
    takes for a slice's rows (default: the features as a float32 matrix; a model of typed inputs
    takes the frame itself). ``accuracy`` is None for a slice with no rows. A filter outside the
    grammar, naming an unknown column or comparing values that do not compare raises ValueError
    naming the slice.
    """
    from .expressions import ExpressionError, parse_filter

    out: dict[str, dict] = {}
    classes = list(classes)
    for name, query in slices.items():
        if not isinstance(query, str) or not query.strip():
            raise ValueError(f"slice '{name}': expected a filter string such as \"`age` >= 60\", got {query!r}")
        try:
            part = frame[parse_filter(query).mask(frame)]
        except ExpressionError as exc:
            raise ValueError(f"slice '{name}': {exc}") from None
        n = int(len(part))
        rows = (lambda p: p[list(features)].to_numpy(dtype=np.float32)) if rows_of is None else rows_of
        if task == "regression":
            from .metrics import regression_metrics

            figures = regression_metrics(part[target].to_numpy(dtype=np.float64), predict_fn(rows(part))) if n else \
                {"mse": None, "mae": None, "r2": None}
            if n < 2:
                figures["r2"] = None  # one row has no spread to explain
            out[str(name)] = {"query": query, "n": n, **figures}
            continue
        accuracy = None
        if n:
            predicted = np.asarray(predict_fn(rows(part))).argmax(axis=1)
            truth = part[target].tolist()
            correct = sum(_same(t, classes[i]) for t, i in zip(truth, predicted))
            accuracy = correct / n
        out[str(name)] = {"query": query, "n": n, "accuracy": accuracy}
    return out


def build_model_card(
    version_ref: str,
    data_version: str | None,
    metrics: Mapping[str, Any],
    slices: Mapping[str, Mapping[str, Any]],
    importance: Sequence[Mapping[str, Any]],
    intended_use: str,
    limitations: Sequence[str],
    training: Mapping[str, Any],
) -> dict:
    """The card as data. ``metrics``: overall (test split) metrics; ``slices``: ``slice_metrics``'
    answer; ``importance``: ``explain.permutation_importance``'s; ``training``: what to say of how
    it was made (``target``, ``classes``, ``trainer``, ``hyperparameters``, ``features``,
    ``split``, ``rows``... all optional)."""
    if not isinstance(intended_use, str) or not intended_use.strip():
        raise ValueError("intended_use: say in one sentence what the model is for")
    if isinstance(limitations, str):
        raise ValueError("limitations: expected a list of sentences, got one string")
    return {
        "format": CARD_FORMAT,
        "model_version": str(version_ref),
        "data_version": data_version,
        "intended_use": intended_use.strip(),
        "limitations": [str(s) for s in limitations],
        "metrics": {k: _plain(v) for k, v in metrics.items()},
        "slices": {str(name): {k: _plain(v) for k, v in m.items()} for name, m in slices.items()},
        "feature_importance": [{k: _plain(v) for k, v in row.items()} for row in importance],
        "training": {k: _plain(v) for k, v in training.items()},
        "explanations": {
            "method": "occlusion with training means",
            "meaning": "how much this feature's value pushed the answer toward the predicted class, "
                       "compared with an average case",
        },
    }


def render_markdown(card: Mapping[str, Any], top: int = 10) -> str:
    """A readable page: what it predicts, how good overall and per slice, what it relies on most,
    what it is for and what not."""
    training = card.get("training") or {}
    metrics = card.get("metrics") or {}
    overall = metrics.get("accuracy")
    regression = training.get("task") == "regression"
    lines = [f"# Model card: {card.get('model_version')}", ""]

    lines += ["## What it predicts", ""]
    target, classes = training.get("target"), training.get("classes")
    if regression:
        lines.append(f"It predicts the number **{target}** (a regression): an answer is a value in {target}'s units.")
    elif target is not None or classes:
        what = f"It predicts **{target}**" if target is not None else "It predicts"
        if classes:
            what += " as one of: " + ", ".join(f"`{c}`" for c in classes)
        lines.append(what + ".")
    lines += [f"Intended use: {card.get('intended_use')}", ""]

    lines += ["## How good it is overall", ""]
    if regression and metrics.get("mae") is not None:
        lines.append(f"On examples it never saw during training its answers were off by **{_num(metrics['mae'])}** on "
                     f"average (mean absolute error); it explains **{_pct(metrics.get('r2'))}** of the spread of "
                     f"{target} (R² = {_num(metrics.get('r2'))}; 0 would be no better than always answering the average).")
    elif overall is not None:
        lines.append(f"On examples it never saw during training it was right **{_pct(overall)}** of the time "
                     f"(about {round(overall * 100)} in 100).")
    if metrics:
        lines += ["", "| measure | value |", "|---|---|"]
        lines += [f"| {k} | {_num(v)} |" for k, v in metrics.items()]
    lines.append("")

    slices = card.get("slices") or {}
    lines += ["## How good it is for each group", ""]
    if not slices:
        lines += ["No groups (slices) were declared, so nothing is known about groups where it may do worse.", ""]
    elif regression:
        lines += ["| group | examples | mean absolute error | R² | note |", "|---|---|---|---|---|"]
        for name, m in slices.items():
            n = m.get("n", 0)
            note = "no examples: cannot judge" if not n else (f"only {n} examples: too few to judge" if n < MIN_SLICE_ROWS else "")
            lines.append(f"| {name} (`{m.get('query', '')}`) | {n} | {_num(m.get('mae')) if m.get('mae') is not None else '-'} | "
                         f"{_num(m.get('r2')) if m.get('r2') is not None else '-'} | {note} |")
        lines.append("")
    else:
        lines += ["| group | examples | right | note |", "|---|---|---|---|"]
        for name, m in slices.items():
            n, acc = m.get("n", 0), m.get("accuracy")
            lines.append(f"| {name} (`{m.get('query', '')}`) | {n} | {_pct(acc) if acc is not None else '-'} | "
                         f"{_slice_note(n, acc, overall)} |")
        lines.append("")

    importance = list(card.get("feature_importance") or [])
    lines += ["## What it relies on most", ""]
    if not importance:
        lines += ["Not measured.", ""]
    else:
        if regression:
            lines += ["How much worse it gets when a feature is scrambled (so it no longer tells anything): "
                      "the bigger the increase of the squared error, the more the model relies on it.", "",
                      "| feature | mean squared error increase | spread |", "|---|---|---|"]
            lines += [f"| {r.get('feature')} | {_num(r.get('importance'))} | ±{_num(r.get('std'))} |" for r in importance[:top]]
        else:
            lines += ["How much worse it gets when a feature is scrambled (so it no longer tells anything): "
                      "the bigger the drop, the more the model relies on it.", "",
                      "| feature | accuracy drop | spread |", "|---|---|---|"]
            lines += [f"| {r.get('feature')} | {_pts(r.get('importance'))} | ±{_pts(r.get('std'))} |" for r in importance[:top]]
        unused = [r.get("feature") for r in importance if abs(float(r.get("importance") or 0.0)) < 1e-9]
        if unused:
            lines += ["", "It hardly uses: " + ", ".join(map(str, unused)) + "."]
        lines.append("")

    lines += ["## What it should not be used for", ""]
    limits = card.get("limitations") or []
    lines += [f"- {s}" for s in limits] or ["- No limitations were written down: ask the owners before relying on it."]
    lines.append("")

    privacy = training.get("privacy")
    if privacy:
        lines += ["## Privacy", "",
                  f"Trained with differential privacy (DP-SGD): **ε = {_num(privacy.get('epsilon'))}** at "
                  f"δ = {_num(privacy.get('delta'))} ({privacy.get('accountant', '?')} accountant, noise multiplier "
                  f"{_num(privacy.get('noise_multiplier'))}, per-example gradients clipped at "
                  f"{_num(privacy.get('max_grad_norm'))}). This bounds what the weights reveal about any one row "
                  "of the training split, for one training run.",
                  "Not covered: the feature means and spreads stored in the model for standardization, the choice "
                  "among the search's trials (each trial spends its own ε on the same rows), and the validation "
                  "and test rows.", ""]

    lines += ["## Why a single answer", "",
              "Ask the service with `\"explain\": true` to get, for each answer, the features that mattered most. "
              "Each number says " + (card.get("explanations") or {}).get(
                  "meaning", "how much this feature's value pushed the answer toward the predicted class, "
                             "compared with an average case") + ": positive pushed toward the answer, negative "
              "away from it.", ""]

    lines += ["## How it was made", "", f"- model version: `{card.get('model_version')}`",
              f"- data version: `{card.get('data_version')}`"]
    for k, v in training.items():
        if k in ("target", "classes", "privacy", "task"):
            continue
        lines.append(f"- {k}: {_short(v)}")
    return "\n".join(lines) + "\n"


def _slice_note(n: int, acc: float | None, overall: float | None) -> str:
    if not n:
        return "no examples: cannot judge"
    notes = []
    if n < MIN_SLICE_ROWS:
        notes.append(f"only {n} examples: too few to judge")
    if acc is not None and overall is not None and acc < overall - WEAKER_BY:
        notes.append(f"weaker than overall by {_pts(overall - acc)}")
    return "; ".join(notes)


def _pct(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f}%"


def _pts(v: Any) -> str:
    return "-" if v is None else f"{float(v) * 100:.1f} pts"


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _short(v: Any, limit: int = 200) -> str:
    text = str(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


def _same(label: Any, cls: Any) -> bool:
    return label == cls or str(label) == str(cls)
