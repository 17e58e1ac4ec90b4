"""Monitor ``performance``: a classifier's accuracy per model version and window, true once
feedback labels arrive (joined by request id from the record log) and estimated before they do
(confidence-based performance estimation, NannyML's CBPE idea: ``framework.monitoring.performance``).

Per version and window the report (``performance.json`` and the metrics) gives the rows, the
labels that came, the true accuracy with its 95% interval, the estimated accuracy with its 95%
band, the reference accuracy (on the validation rows the estimate was calibrated on) and, where
both exist, |estimated - true|. Alerts:

* ``estimated``: the estimated accuracy's upper 95% bound is more than ``accuracy_drop_max``
  below the reference accuracy (before any label);
* ``true``: with at least ``min_labels`` labels, the true accuracy's upper 95% bound is more than
  ``accuracy_drop_max`` below the reference accuracy.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

from framework import DataSplits, Monitor, MonitorReport, ServedWindow, hookimpl
from framework.errors import RecipeError
from framework.monitoring import Calibration, by_version, check_window, cut_windows, estimate_accuracy, join_labels, true_accuracy

NAME = "performance"
REPORT_FILE = "performance.json"


class PerformanceMonitor(Monitor):
    name = NAME
    alert_kind = "accuracy_drop"
    summary = "accuracy per model version and window: true from late feedback labels, estimated before them (CBPE)"
    tasks = ("classification",)

    @dataclass
    class Config:
        #: alert when accuracy (estimated, or true with min_labels) is surely more than this below the reference
        accuracy_drop_max: float = 0.05
        #: labels a window needs before its true accuracy can alert
        min_labels: int = 30
        window_rows: Optional[int] = None
        window_seconds: Optional[float] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if not 0.0 <= config.accuracy_drop_max <= 1.0:
            raise RecipeError(f"{key}.accuracy_drop_max: an accuracy difference in [0, 1], got {config.accuracy_drop_max}")
        if config.min_labels < 1:
            raise RecipeError(f"{key}.min_labels: at least 1, got {config.min_labels}")
        check_window(config.window_rows, config.window_seconds, key)

    def evaluate(self, served: ServedWindow, reference: DataSplits, ctx) -> MonitorReport:
        frame = served.frame
        cfg = self.config
        alerts: list[str] = []
        versions: dict[str, Any] = {}
        errors: list[float] = []
        timeline: list[dict] = []
        for version, rows in (by_version(frame) if len(frame) else ()):
            calib_data = (served.calibration or {}).get(version)
            calib = None
            if calib_data and len(calib_data.get("confidence", ())) >= 2:
                calib = Calibration(calib_data["confidence"], calib_data["correct"])
            rows = rows.assign(label=join_labels(rows, served.feedback))
            windows = []
            for start, end, part in cut_windows(rows, cfg.window_rows, cfg.window_seconds):
                w: dict[str, Any] = {"start": start, "end": end, "rows": int(len(part))}
                w.update(true_accuracy(part["prediction"].tolist(), part["label"].tolist()))
                if calib is not None and "confidence" in part.columns:
                    w.update(estimate_accuracy(part["confidence"].to_numpy(dtype="float64"), calib))
                    w["reference_accuracy"] = calib.reference_accuracy
                if w.get("accuracy") is not None and w.get("estimated_accuracy") is not None and w["labels"] >= cfg.min_labels:
                    w["estimate_error"] = abs(w["estimated_accuracy"] - w["accuracy"])
                    errors.append(w["estimate_error"])
                alerts.extend(self._alerts(version, w))
                windows.append(w)
                for series, key in (("true accuracy", "accuracy"), ("estimated accuracy", "estimated_accuracy")):
                    if w.get(key) is not None:
                        timeline.append({"panel": "accuracy", "group": version, "series": series,
                                         "window": start or "all", "value": float(w[key])})
            versions[version] = {"rows": int(len(rows)), "calibrated_on": calib.rows if calib else 0, "windows": windows}
        latest = [v["windows"][-1] for v in versions.values() if v["windows"]]
        metrics = {
            "labels": sum(w["labels"] for v in versions.values() for w in v["windows"]),
            "accuracy_by_version": {k: v["windows"][-1].get("accuracy") for k, v in versions.items() if v["windows"]},
            "estimated_accuracy_by_version": {k: v["windows"][-1].get("estimated_accuracy")
                                              for k, v in versions.items() if v["windows"]},
            "estimate_mae": sum(errors) / len(errors) if errors else None,
            "windows_with_labels": len(errors),
        }
        if not latest:
            metrics["note"] = "nothing served"
        (ctx.out_dir / REPORT_FILE).write_text(json.dumps({"monitor": NAME, "config": {
            "accuracy_drop_max": cfg.accuracy_drop_max, "min_labels": cfg.min_labels}, "versions": versions}, indent=2,
            default=str))
        return MonitorReport(NAME, metrics=metrics, alerts=alerts, artifacts=[REPORT_FILE], timeline=timeline)

    def _alerts(self, version: str, w: dict) -> list[str]:
        ref = w.get("reference_accuracy")
        if ref is None:
            return []
        drop = self.config.accuracy_drop_max
        out = []
        band = w.get("estimated_interval")
        if band is not None and band[1] < ref - drop:
            out.append(f"estimated accuracy of {version} {w['estimated_accuracy']:.3f} (95% band up to {band[1]:.3f}) "
                       f"is more than {drop:g} below the reference {ref:.3f}, from {w['start']} ({w['rows']} rows, "
                       f"{w['labels']} labels)")
        interval = w.get("accuracy_interval")
        if interval is not None and w["labels"] >= self.config.min_labels and interval[1] < ref - drop:
            out.append(f"accuracy of {version} {w['accuracy']:.3f} on {w['labels']} labels (95% up to {interval[1]:.3f}) "
                       f"is more than {drop:g} below the reference {ref:.3f}, from {w['start']}")
        return out


@hookimpl
def register_monitors():
    return [PerformanceMonitor]
