"""Monitor ``whylogs_drift``: whylogs profiles of training and served data, and per-feature drift.

Drift semantics
---------------
Drift is computed by whylogs' own ``calculate_drift_scores`` on the two profiles (sketches, not raw
rows). Every checked column gets a *hypothesis test*, so the score is a **p-value** ("how likely
is a difference at least this large if served and training data came from the same
distribution"):

* numeric columns: Kolmogorov-Smirnov (``ks``) on the KLL quantile sketches; ``statistic`` is
  the largest CDF gap D in [0, 1];
* other columns: chi-square (``chi-square``) on the frequent-items sketches.

A column is **flagged as drifted when its p-value < ``drift_threshold``** (default 0.05). The
whylogs category uses the same cut: ``DRIFT`` below the threshold, ``POSSIBLE_DRIFT`` from the
threshold to 3x it (whylogs' own 0.05/0.15 defaults), ``NO_DRIFT`` above. One test per feature
at 0.05 means about 1 false alarm per 20 unshifted features: lower the threshold for wide tables.
A column whose served values are all missing gets no score and an alert.

whylogs is imported lazily through ``plugins._whylogs_compat`` (NumPy 2 and IPython workarounds).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, List, Optional

from framework import DataSplits, Monitor, MonitorReport, ServedWindow, hookimpl
from framework.errors import RecipeError

NAME = "whylogs_drift"
REFERENCE_PROFILE = "reference_profile.bin"
SERVED_PROFILE = "served_profile.bin"
DRIFT_FILE = "drift.json"


def _num(value: Any) -> Optional[float]:
    """A JSON-safe float (None for missing / NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class WhylogsDriftMonitor(Monitor):
    name = NAME
    summary = "whylogs profiles of training vs served data; KS / chi-square drift per feature"

    @dataclass
    class Config:
        #: p-value under which a column is flagged as drifted (see module docstring)
        drift_threshold: float = 0.05
        #: features to test; None: every feature of the served window
        columns: Optional[List[str]] = None

    def __init__(self, config=None, refs=None):
        super().__init__(config, refs)
        t = self.config.drift_threshold
        if not 0.0 < t < 1.0:
            raise RecipeError(f"monitor[{NAME}].drift_threshold: must be a p-value in (0, 1), got {t}")

    # ----------------------------------------------------------------------------------------
    def _thresholds(self, DriftThresholds):
        """whylogs categories on our cut: DRIFT < t <= POSSIBLE_DRIFT < 3t <= NO_DRIFT."""
        t = float(self.config.drift_threshold)
        hi = 3 * t
        if hi < 1.0:
            return DriftThresholds(NO_DRIFT=(hi, 1), POSSIBLE_DRIFT=(t, hi), DRIFT=(0, t))
        return DriftThresholds(NO_DRIFT=(t, 1), DRIFT=(0, t))

    def _columns(self, served: ServedWindow, reference: DataSplits) -> list[str]:
        features = list(reference.dataset.features)
        if self.config.columns is None:
            return [c for c in served.features if c in features] or features
        wanted = [str(c) for c in self.config.columns]
        unknown = [c for c in wanted if c not in features]
        if unknown:
            raise RecipeError(
                f"monitor[{NAME}].columns: {unknown} are not features of dataset "
                f"'{reference.dataset.name}'"
            )
        return wanted

    @staticmethod
    def _write(view, out_dir, filename: str) -> None:
        from whylogs.api.writer.local import LocalWriter

        LocalWriter(base_dir=str(out_dir)).write(file=view, dest=filename)

    # ----------------------------------------------------------------------------------------
    def evaluate(self, served: ServedWindow, reference: DataSplits, ctx) -> MonitorReport:
        from pandas.api.types import is_numeric_dtype

        from plugins._whylogs_compat import drift_algorithms, why

        algos = drift_algorithms()

        frame = served.frame
        columns = self._columns(served, reference)
        ref_frame = reference.train[list(reference.dataset.features)]
        metrics: dict[str, Any] = {"rows_served": int(len(frame))}
        metrics.update(self._serving_metrics(frame))
        alerts: list[str] = []

        ref_view = why.log(ref_frame).view()
        self._write(ref_view, ctx.out_dir, REFERENCE_PROFILE)
        artifacts = [REFERENCE_PROFILE]

        results: dict[str, dict] = {}
        if len(frame) == 0:
            alerts.append(f"{NAME}: the served window is empty; drift not computed")
        else:
            # the whole served frame is profiled (prediction, latency ... are useful to inspect)
            served_view = why.log(frame).view()
            self._write(served_view, ctx.out_dir, SERVED_PROFILE)
            artifacts.append(SERVED_PROFILE)

            thresholds = self._thresholds(algos.DriftThresholds)
            present = [c for c in columns if c in frame.columns]
            for c in columns:
                if c not in frame.columns:
                    alerts.append(f"{NAME}: column '{c}' is missing from the served window")
            # one explicit algorithm per column, so categories follow our threshold
            drift_map = {
                c: algos.KS(algos.KSTestConfig(thresholds=thresholds))
                if is_numeric_dtype(ref_frame[c])
                else algos.ChiSquare(algos.ChiSquareConfig(thresholds=thresholds))
                for c in present
            }
            scores = algos.calculate_drift_scores(
                target_view=served_view, reference_view=ref_view, drift_map=drift_map, with_thresholds=True
            )
            t = float(self.config.drift_threshold)
            for c in present:
                score = scores.get(c)
                if score is None or score.get("pvalue") is None:
                    results[c] = {"algorithm": drift_map[c].name, "statistic": None, "pvalue": None,
                                  "drift_category": None, "flagged": False}
                    alerts.append(f"{NAME}: column '{c}' has no drift score (no served values to compare)")
                    continue
                pvalue = _num(score["pvalue"])
                flagged = pvalue is not None and pvalue < t
                results[c] = {
                    "algorithm": score["algorithm"],
                    "statistic": _num(score["statistic"]),
                    "pvalue": pvalue,
                    "drift_category": score.get("drift_category"),
                    "flagged": flagged,
                }
                if flagged:
                    alerts.append(
                        f"{NAME}: drift in column '{c}' ({score['algorithm']} p-value {pvalue:.3g} "
                        f"< {t:g}, statistic {results[c]['statistic']:.3f})"
                    )

        scored = {c: r for c, r in results.items() if r["pvalue"] is not None}
        metrics["columns_checked"] = len(scored)
        metrics["columns_drifted"] = sum(r["flagged"] for r in scored.values())
        metrics["drifted_columns"] = [c for c, r in scored.items() if r["flagged"]]
        metrics["min_pvalue"] = min((r["pvalue"] for r in scored.values()), default=None)
        metrics["max_drift_score"] = max(
            (r["statistic"] for r in scored.values() if r["statistic"] is not None), default=None
        )

        (ctx.out_dir / DRIFT_FILE).write_text(
            json.dumps(
                {
                    "monitor": NAME,
                    "drift_threshold": self.config.drift_threshold,
                    "semantics": "flagged when p-value < drift_threshold (KS for numeric, chi-square otherwise)",
                    "reference_rows": int(len(ref_frame)),
                    "served_rows": int(len(frame)),
                    "columns": results,
                },
                indent=2,
            )
        )
        artifacts.append(DRIFT_FILE)

        for key in ("rows_served", "columns_checked", "columns_drifted"):
            ctx.metric(key, metrics[key])
        return MonitorReport(monitor=NAME, metrics=metrics, alerts=alerts, artifacts=artifacts)

    @staticmethod
    def _serving_metrics(frame) -> dict[str, Any]:
        """Prediction mix, latency percentiles and versions seen, from the served rows."""
        import pandas as pd

        out: dict[str, Any] = {}
        values = frame["prediction"] if "prediction" in frame.columns else None
        if values is not None and len(frame) and pd.api.types.is_float_dtype(values.dtype):
            # a regression's numbers: where they lie, not the share of each value
            out["prediction_distribution"] = {k: _num(values.quantile(q)) for k, q in
                                              (("p10", 0.1), ("p50", 0.5), ("p90", 0.9))}
            out["prediction_distribution"].update(mean=_num(values.mean()), min=_num(values.min()), max=_num(values.max()))
        elif values is not None and len(frame):
            shares = values.value_counts(normalize=True, dropna=False).sort_index()
            # str keys: the report goes to JSON, where keys are strings anyway
            out["prediction_distribution"] = {str(k): float(v) for k, v in shares.items()}
        else:
            out["prediction_distribution"] = {}
        if "latency_ms" in frame.columns and len(frame):
            lat = pd.to_numeric(frame["latency_ms"], errors="coerce").dropna()
            out["latency_p50_ms"] = _num(lat.quantile(0.50)) if len(lat) else None
            out["latency_p99_ms"] = _num(lat.quantile(0.99)) if len(lat) else None
        else:
            out["latency_p50_ms"] = out["latency_p99_ms"] = None
        if "model_version" in frame.columns:
            out["model_versions"] = sorted(str(v) for v in frame["model_version"].dropna().unique())
        else:
            out["model_versions"] = []
        return out


@hookimpl
def register_monitors():
    return [WhylogsDriftMonitor]
