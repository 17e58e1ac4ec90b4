"""Monitor ``acme_class_share``: alerts when the share of a predicted class moves away from that
class's share in the training data.

A model that suddenly predicts ``scrap`` for a third of the widgets, when a sixth of the training
widgets were scrap, is either seeing another production line or broken: either way someone should
look. The monitor compares the share of each class among the served predictions with its share
among the training split's labels and alerts for every class whose share moved by more than
``max_shift`` (absolute), once at least ``min_rows`` answers were served.
"""
from __future__ import annotations

from dataclasses import dataclass

from framework import Monitor, MonitorReport, RecipeError, hookimpl


def shares(values) -> dict[str, float]:
    """Share of each distinct value, keyed by its string (JSON keys are strings anyway)."""
    counts = values.astype(str).value_counts(normalize=True)
    return {str(k): float(v) for k, v in counts.sort_index().items()}


class ClassShareMonitor(Monitor):
    name = "acme_class_share"
    summary = "alerts when the share of a predicted class moves away from its training share"

    @dataclass
    class Config:
        #: largest allowed |served share - training share| of any class
        max_shift: float = 0.15
        #: fewer served answers than this: report, but do not judge
        min_rows: int = 20

    @classmethod
    def check_config(cls, config, key, refs=None):
        if not 0.0 < config.max_shift < 1.0:
            raise RecipeError(f"{key}.max_shift: a share difference in (0, 1), got {config.max_shift}")
        if config.min_rows < 1:
            raise RecipeError(f"{key}.min_rows: must be >= 1, got {config.min_rows}")

    def evaluate(self, served, reference, ctx) -> MonitorReport:
        import pandas as pd

        frame = served.frame
        answered = frame["prediction"].dropna() if "prediction" in frame.columns else pd.Series([], dtype=object)
        training = shares(reference.train[reference.dataset.target])
        classes = [str(c) for c in reference.dataset.classes or training]
        served_shares = {c: 0.0 for c in classes} | (shares(answered) if len(answered) else {})
        shifts = {c: round(served_shares.get(c, 0.0) - training.get(c, 0.0), 6) for c in sorted(set(classes) | set(served_shares))}
        judged = len(answered) >= self.config.min_rows
        alerts = []
        if judged:
            for c, shift in shifts.items():
                if abs(shift) > self.config.max_shift:
                    alerts.append(f"class '{c}': {served_shares.get(c, 0.0):.1%} of {len(answered)} served answers, "
                                  f"{training.get(c, 0.0):.1%} in training (shift {shift:+.1%} beyond ±{self.config.max_shift:.0%})")
        metrics = {
            "served_rows": int(len(answered)),
            "judged": judged,
            "served_shares": served_shares,
            "training_shares": training,
            "largest_shift": max((abs(s) for s in shifts.values()), default=0.0),
        }
        if ctx is not None:
            ctx.metric("largest_shift", metrics["largest_shift"])
        return MonitorReport(monitor=self.name, metrics=metrics, alerts=alerts)


@hookimpl
def register_monitors():
    return [ClassShareMonitor]
