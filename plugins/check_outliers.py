"""Data check ``outliers``: rows that are both unusual and contradicted by a model: outliers and
suspected poisoning.

    checks:
      - type: outliers
        severity: quarantine
        max_label_probability: 0.05  # a model of the ordinary rows gives its label at most this
        contamination: auto          # the isolation forest's share of anomalies (or a number, 0.01)
        max_share: 0.02              # never flag more than this share of the rows

What we chose and why. A poisoning row has to pull the model away from what the rest of the data
says, so it either sits off the data's manifold (an injected point) or carries a label the
rest of the data contradicts; rows that do neither cannot move a model far. Two cheap signals,
each scored on every row:

* an **isolation forest** on the features (numbers standardised, text one-hot): is the row
  unusual? (its own ``contamination`` decides "anomalous");
* the **probability of the row's label** under a logistic regression fitted on the rows the
  forest finds ordinary: does the rest of the data contradict it? Fitting on the ordinary rows
  only matters: a cluster of injected rows would otherwise vouch for itself (out-of-fold
  predictions still see the cluster's other members, and we saw them miss 3 of 5 planted rows).

A row is flagged when it is anomalous *and* that probability is at most
``max_label_probability``. Either signal alone flags too much: rare but honest rows (anomalous,
well predicted) and ordinary label noise (``label_issues`` finds that). Its score is the
probability of its label; the report's details give, as evidence that these rows
move the model, how far the logistic regression's weights move (relative L2) and how its
cross-entropy on the other rows changes when the flagged rows are left out. Leave-one-out
influence over every row (refitting once per row) would measure this directly but costs a fit
per row; valuation against the validation split is ``data_valuation``'s job. Classification only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import RecipeError
from plugins.check_support import FeatureEncoder, encoded_labels, flag


class OutliersCheck(DataCheck):
    name = "outliers"
    summary = "suspected poisoning: isolation-forest anomalies whose label an out-of-fold model contradicts"

    @dataclass
    class Config:
        max_label_probability: float = 0.05
        #: the isolation forest's expected share of anomalies: "auto" or a number in (0, 0.5]
        contamination: str = "auto"
        max_share: float = 0.02

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if config.contamination != "auto":
            try:
                share = float(config.contamination)
            except ValueError:
                share = -1.0
            if not 0.0 < share <= 0.5:
                raise RecipeError(f"{key}.contamination: 'auto' or a share in (0, 0.5], got '{config.contamination}'")
        if not 0.0 < config.max_label_probability < 1.0:
            raise RecipeError(f"{key}.max_label_probability: a probability in (0, 1), got {config.max_label_probability}")
        if not 0.0 < config.max_share <= 1.0:
            raise RecipeError(f"{key}.max_share: a share in (0, 1], got {config.max_share}")

    def check(self, dataset: Dataset, ctx) -> CheckReport:
        import numpy as np
        from sklearn.ensemble import IsolationForest
        from sklearn.linear_model import LogisticRegression

        frame, cfg = dataset.frame, self.config
        if dataset.task != "classification":
            return CheckReport(self.name, True, len(frame), details={"note": f"not applicable to task '{dataset.task}'"})
        seed = ctx.seed if ctx is not None else 0
        y_all, classes = encoded_labels(frame[dataset.target], dataset.classes)
        positions = np.flatnonzero(y_all >= 0)
        rows, y = frame.iloc[positions], y_all[positions]
        counts = np.bincount(y, minlength=len(classes))
        if (counts > 0).sum() < 2:
            return CheckReport(self.name, True, len(frame), details={"note": "fewer than two classes"})
        x = FeatureEncoder(dataset.features).fit_transform(rows)
        contamination = cfg.contamination if cfg.contamination == "auto" else float(cfg.contamination)
        forest = IsolationForest(contamination=contamination, random_state=seed).fit(x)
        anomalous = forest.predict(x) == -1
        # the label model learns from the ordinary rows only: a cluster of poison cannot vouch for itself
        ordinary = ~anomalous
        present = np.flatnonzero(counts > 0)
        label_prob = np.ones(len(y))
        if len(np.unique(y[ordinary])) == len(present):
            model = LogisticRegression(max_iter=2000).fit(x[ordinary], y[ordinary])
            column = {c: i for i, c in enumerate(model.classes_)}
            probs = model.predict_proba(x[anomalous])
            label_prob[anomalous] = probs[np.arange(len(probs)), [column[v] for v in y[anomalous]]]
        suspect = np.flatnonzero(anomalous & (label_prob <= cfg.max_label_probability))
        suspect = suspect[np.argsort(label_prob[suspect])][: int(cfg.max_share * len(y))]
        anomaly = -forest.score_samples(x)
        flagged = [flag(frame.index[positions[i]], "suspected poisoning", score=float(label_prob[i]),
                        evidence=f"isolation-forest anomaly {anomaly[i]:.3f}; p(label {classes[y[i]]!r}) "
                                 f"under a model of the ordinary rows {label_prob[i]:.3f}") for i in suspect.tolist()]
        details = {"anomalous_rows": int(anomalous.sum()),
                   "contradicted_anomalies": int((label_prob <= cfg.max_label_probability).sum()), "flagged": len(flagged)}
        failures = []
        if flagged:
            details["model_shift"] = self.model_shift(x, y, suspect)
            failures.append({"column": None, "check": "suspected_poisoning", "count": len(flagged),
                             "rows": [f["row"] for f in flagged[:20]]})
        return CheckReport(self.name, not flagged, len(frame), failures=failures, details=details, flagged=flagged)

    @staticmethod
    def model_shift(x: Any, y: Any, suspect: Any) -> dict:
        """How far leaving the flagged rows out moves a logistic regression: its weights (relative
        L2 change) and its mean cross-entropy on the rows that stay."""
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.metrics import log_loss

        keep = np.ones(len(y), dtype=bool)
        keep[suspect] = False
        labels = np.unique(y)
        if len(np.unique(y[keep])) < len(labels):
            return {"note": "leaving them out removes a class"}
        with_them = LogisticRegression(max_iter=2000).fit(x, y)
        without = LogisticRegression(max_iter=2000).fit(x[keep], y[keep])
        weights = np.concatenate([with_them.coef_.ravel(), with_them.intercept_])
        clean = np.concatenate([without.coef_.ravel(), without.intercept_])
        return {
            "weights_relative_change": round(float(np.linalg.norm(weights - clean) / max(np.linalg.norm(clean), 1e-12)), 4),
            "kept_rows_log_loss_with": round(float(log_loss(y[keep], with_them.predict_proba(x[keep]), labels=labels)), 4),
            "kept_rows_log_loss_without": round(float(log_loss(y[keep], without.predict_proba(x[keep]), labels=labels)), 4),
        }


@hookimpl
def register_data_checks():
    return [OutliersCheck]
