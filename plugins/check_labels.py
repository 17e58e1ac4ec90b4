"""Data check ``label_issues``: rows whose label looks wrong, found by confident learning (cleanlab).

    checks:
      - type: label_issues
        severity: quarantine
        model: logistic          # or gradient_boosting: the fast scikit-learn model that predicts
        folds: 5                 # out-of-fold probabilities (each row scored by a model that never saw it)
        filter_by: prune_by_noise_rate   # cleanlab.filter.find_label_issues' method
        max_share: 0.1           # never flag more than this share of the rows (the least likely first)

Each row gets out-of-fold predicted probabilities from a scikit-learn model trained on the other
folds; ``cleanlab.filter.find_label_issues`` estimates the joint distribution of given and true
labels (the confident joint) and names the rows whose given label is most likely wrong. A flagged
row's score is its label quality (cleanlab's self-confidence: the out-of-fold probability of
the given label; lower is worse), its evidence the class the model suggests. Classification
only: other tasks pass, saying so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import RecipeError
from plugins.check_support import FeatureEncoder, encoded_labels, flag

MODELS = ("logistic", "gradient_boosting")
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")


def out_of_fold_probabilities(x: Any, y: Any, model: str, folds: int, seed: int) -> Any:
    """Predicted class probabilities of every row from a model fitted on the other folds."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    estimator = (LogisticRegression(max_iter=2000) if model == "logistic"
                 else HistGradientBoostingClassifier(max_iter=100, random_state=seed))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(estimator, x, y, cv=cv, method="predict_proba")


def rank_label_issues(dataset: Dataset, model: str = "logistic", folds: int = 5, seed: int = 0,
                      filter_by: str = "prune_by_noise_rate") -> dict:
    """Every row's label quality and cleanlab's issues (positions, most likely wrong first):
    ``{"positions", "quality", "issues", "pred_probs", "labels", "classes"}`` over the rows whose
    label is one of the classes."""
    import numpy as np
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    frame = dataset.frame
    y_all, classes = encoded_labels(frame[dataset.target], dataset.classes)
    positions = np.flatnonzero(y_all >= 0)  # rows with an unknown class are the schema check's business
    rows, y = frame.iloc[positions], y_all[positions]
    counts = np.bincount(y, minlength=len(classes))
    present = counts[counts > 0]
    folds = int(min(folds, present.min())) if len(present) else 0
    if folds < 2 or len(present) < 2:
        return {"positions": positions, "quality": None, "issues": np.array([], dtype=int), "classes": classes,
                "note": "too few rows per class for out-of-fold predictions"}
    x = FeatureEncoder(dataset.features).fit_transform(rows)
    pred_probs = out_of_fold_probabilities(x, y, model, folds, seed)
    if pred_probs.shape[1] < len(classes):  # a class without rows: give it probability 0
        full = np.zeros((len(y), len(classes)))
        full[:, np.flatnonzero(counts > 0)] = pred_probs
        pred_probs = full
    issues = find_label_issues(labels=y, pred_probs=pred_probs, filter_by=filter_by,
                               return_indices_ranked_by="self_confidence")
    quality = get_label_quality_scores(y, pred_probs, method="self_confidence")
    return {"positions": positions, "quality": quality, "issues": np.asarray(issues, dtype=int), "pred_probs": pred_probs,
            "labels": y, "classes": classes, "folds": folds}


class LabelIssuesCheck(DataCheck):
    name = "label_issues"
    summary = "rows whose label is likely wrong: cleanlab confident learning on out-of-fold scikit-learn probabilities"

    @dataclass
    class Config:
        model: str = "logistic"
        folds: int = 5
        filter_by: str = "prune_by_noise_rate"
        #: at most this share of the rows is flagged (the lowest label quality first)
        max_share: float = 0.1

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if config.model not in MODELS:
            raise RecipeError(f"{key}.model: '{config.model}' is unknown; use {', '.join(MODELS)}")
        if config.filter_by not in FILTERS:
            raise RecipeError(f"{key}.filter_by: '{config.filter_by}' is unknown; use {', '.join(FILTERS)}")
        if config.folds < 2:
            raise RecipeError(f"{key}.folds: at least 2 folds, got {config.folds}")
        if not 0.0 < config.max_share <= 1.0:
            raise RecipeError(f"{key}.max_share: a share in (0, 1], got {config.max_share}")

    def check(self, dataset: Dataset, ctx) -> CheckReport:
        frame = dataset.frame
        if dataset.task != "classification":
            return CheckReport(self.name, True, len(frame), details={"note": f"not applicable to task '{dataset.task}'"})
        cfg = self.config
        found = rank_label_issues(dataset, cfg.model, cfg.folds, ctx.seed if ctx is not None else 0, cfg.filter_by)
        if found["quality"] is None:
            return CheckReport(self.name, True, len(frame), details={"note": found["note"]})
        most = int(cfg.max_share * len(found["positions"]))
        issues = found["issues"][:most]
        classes, labels, probs = found["classes"], found["labels"], found["pred_probs"]
        flagged = []
        for i in issues.tolist():
            row = frame.index[found["positions"][i]]
            suggested = int(probs[i].argmax())
            flagged.append(flag(row, "label issue", score=float(found["quality"][i]),
                                evidence=f"given {classes[labels[i]]!r} (out-of-fold p={probs[i][labels[i]]:.3f}), "
                                         f"model suggests {classes[suggested]!r} (p={probs[i][suggested]:.3f})"))
        failures = []
        if flagged:
            failures.append({"column": dataset.target, "check": "label_issue", "count": len(flagged),
                             "rows": [f["row"] for f in flagged[:20]]})
        details = {"model": cfg.model, "folds": found["folds"], "filter_by": cfg.filter_by,
                   "issues_found": int(len(found["issues"])), "flagged": len(flagged),
                   "capped_at": most if len(found["issues"]) > most else None}
        return CheckReport(self.name, not flagged, len(frame), failures=failures, details=details, flagged=flagged)


@hookimpl
def register_data_checks():
    return [LabelIssuesCheck]
