"""Labeler ``weak_supervision``: labeling functions declared in the recipe, combined by a label model.

Every row whose label is missing (hidden, or never given) gets the label model's most likely
class, or none when no function voted on it; rows that already have a label keep it (``gold``).
The report has each function's coverage, overlap and conflicts, its empirical accuracy on the
gold labels of the train and val rows (test rows are never looked at), and the accuracy the
generative model learned for it without them.

```yaml
label:
  type: weak_supervision
  label_model: generative          # or majority
  functions:
    - {name: japanese_makes, type: keywords, column: Name, words: [toyota, datsun, honda], label: Japan}
    - {name: german_makes, type: regex, column: Name, pattern: "^(vw|volkswagen|audi|bmw)\\b", label: Europe}
    - {name: v8, type: threshold, column: Cylinders, op: ">=", value: 8, label: USA}
    - {name: champion, type: model, ref: cars_mlp@prod, min_confidence: 0.9}
    - {name: makes, type: callable, callable: car_make_origin}    # on the allow-list
```
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from framework import LabelSet, Labeler, hookimpl
from framework.errors import RecipeError
from framework.labels.functions import parse_functions
from framework.labels.model import LABEL_MODELS

import plugins.label_callables  # noqa: F401  (the built-in allow-listed functions)


class WeakSupervision(Labeler):
    name = "weak_supervision"
    summary = "labeling functions (keywords, regex, thresholds, a model, allow-listed callables) + a label model"

    @dataclass
    class Config:
        #: the labeling functions: {name, type: keywords|regex|threshold|model|callable, ...}
        functions: List[Dict[str, Any]] = field(default_factory=list)
        #: majority | generative (Dawid-Skene, learns each function's accuracy without gold labels)
        label_model: str = "generative"
        #: a label model class whose probability is below this gives no label (0: always label)
        min_probability: float = 0.0
        #: generative only: fixed class balance (one number per class, in the data's class order)
        class_balance: Optional[List[float]] = None

    @classmethod
    def check_config(cls, config, key, refs=None):
        parse_functions(config.functions, f"{key}.functions")
        if config.label_model not in LABEL_MODELS:
            raise RecipeError(f"{key}.label_model: one of {', '.join(LABEL_MODELS)}, got '{config.label_model}'")
        if not 0.0 <= config.min_probability < 1.0:
            raise RecipeError(f"{key}.min_probability: in [0, 1), got {config.min_probability}")
        if config.class_balance is not None and (abs(sum(config.class_balance) - 1.0) > 1e-6 or min(config.class_balance) <= 0):
            raise RecipeError(f"{key}.class_balance: positive numbers summing to 1, got {list(config.class_balance)}")

    @classmethod
    def registry_refs(cls, config):
        return {f"functions[{i}].ref": f["ref"] for i, f in enumerate(config.functions) if f.get("type") == "model"}

    def label(self, dataset, ctx):
        import numpy as np
        import pandas as pd

        from framework.labels.functions import ABSTAIN, analyse, apply_functions
        from framework.labels.model import combine

        classes = list(dataset.classes or [])
        functions = parse_functions(self.config.functions, "label.functions", classes)
        frame, target = dataset.frame, dataset.target
        loader = getattr(ctx, "registered_model", None) if getattr(ctx, "registry", None) is not None else None
        matrix = apply_functions(functions, frame, classes, loader)
        index = {c: i for i, c in enumerate(classes)}
        known = frame[target].notna()
        parts = getattr(ctx, "parts", None)
        judged = known & (parts != "test") if parts is not None else known  # never learn from the test rows
        gold = np.array([index[v] if j else ABSTAIN for v, j in zip(frame[target], judged)], dtype=np.int64)
        report = analyse(matrix, [f.name for f in functions], gold)

        options = {"class_balance": self.config.class_balance} if self.config.class_balance else {}
        fitted_rows = (parts != "test").to_numpy() if parts is not None else np.ones(len(frame), dtype=bool)
        probs, learned = _combine(matrix, fitted_rows, len(classes), self.config.label_model, options, combine)
        if "learned_accuracy" in learned:
            for f, accuracy in zip(functions, learned["learned_accuracy"]):
                report["functions"][f.name]["learned_accuracy"] = accuracy
        covered = ~np.isnan(probs).any(axis=1) & (np.nan_to_num(probs).max(axis=1) >= self.config.min_probability)
        predicted = [classes[int(p.argmax())] if c else None for p, c in zip(np.nan_to_num(probs), covered)]
        labels = pd.Series([v if k else p for v, k, p in zip(frame[target], known, predicted)], index=frame.index, dtype="object")
        sources = pd.Series(np.where(known, "gold", np.where(covered, "label_model", None)), index=frame.index)
        unknown = ~known.to_numpy()
        report["metrics"] = {
            "function_coverage": report["totals"]["coverage"],
            "function_conflict": report["totals"]["conflict"],
            "label_model_coverage": float(covered[unknown].mean()) if unknown.any() else 1.0,
            "functions": len(functions),
        }
        report["label_model"] = learned
        ctx.logger.info("weak supervision: %d functions, coverage %.1f%%, %d rows labeled by the %s label model",
                        len(functions), 100 * report["totals"]["coverage"], int((covered & unknown).sum()),
                        self.config.label_model)
        return LabelSet(labels=labels, classes=classes, probabilities=probs, sources=sources, report=report,
                        lineage={"functions": [f.describe() for f in functions], "label_model": learned["model"]})


def _combine(matrix, fitted_rows, n_classes, model, options, combine):
    """Fit on the non-test rows, give probabilities for every row."""
    import numpy as np

    from framework.labels.model import DawidSkene

    if model == "majority":
        return combine(matrix, n_classes, "majority")
    fitted = DawidSkene(n_classes, **options).fit(matrix[fitted_rows])
    probs = fitted.predict_proba(matrix)
    return probs, {"model": "generative (Dawid-Skene EM)", "iterations": fitted.iterations,
                   "learned_accuracy": fitted.accuracies(), "class_prior": [float(p) for p in np.asarray(fitted.prior)]}


@hookimpl
def register_labelers():
    return [WeakSupervision]
