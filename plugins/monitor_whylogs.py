"""Monitor ``whylogs_drift``: whylogs profiles of the training data and of served windows, drift
per feature and per output with family-wise false-alarm control.

Profiles
--------
* The **reference profile** is whylogs' profile of the training rows (the train part of the
  run's data version). It is built once and stored *with that data version* in the store
  (``derived/data/NAME/ID/train-....whylogs-<digest>.bin``): a later run on the same data version
  reads it instead of profiling again (``reference_profile`` in ``drift.json`` says which).
* The served rows are cut per **model version** and per **window** (``window_rows`` rows or
  ``window_seconds`` seconds of served time; default: everything served is one window), and
  each window is profiled once (inputs and the ``prediction`` output together).

Tests (``framework.monitoring.drift``)
--------------------------------------
Each feature: Kolmogorov-Smirnov on the two KLL sketches (numbers; the sketch's rank error is
subtracted from D, so sketching never adds alarms) or chi-square on the frequent-items counts
(categories, booleans); each output (the predicted class, or a regression's number) against the
same model version's answers on the training rows; missing-value shares when either side has
some. **Holm's correction over all of a window's tests**: on data from the training
distribution, the probability that a window raises *any* alarm is at most ``alpha`` for the whole
feature set (``family: report``: at most ``alpha`` over every window and version of the report).
A test alarms when its Holm-adjusted p-value is below ``alpha`` *and* its effect (KS D, total
variation distance, or the change of the missing share) is at least ``min_effect``.

The report (``drift.json``, the metrics, the alerts) names each column that moved, by how much
(D or TVD, the mean shift in training standard deviations, PSI, the classes that moved) and
since when (the first window of its current run of drifted windows).

whylogs is imported lazily through ``plugins._whylogs_compat`` (NumPy 2 and IPython workarounds).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any, List, Optional

from framework import DataSplits, Monitor, MonitorReport, ServedWindow, hookimpl
from framework.errors import RecipeError
from framework.monitoring import (
    CategoricalSummary,
    DriftSettings,
    NumericSummary,
    assess_windows,
    by_version,
    check_window,
    cut_windows,
    summarize,
)

NAME = "whylogs_drift"
REFERENCE_PROFILE = "reference_profile.bin"
SERVED_PROFILE = "served_profile.bin"
DRIFT_FILE = "drift.json"
OUTPUT = "prediction"
#: ranks at which a sketch's quantiles are read: every item of an exact sketch (<= 2048 values),
#: a 1/2048 grid of an approximate one
QUANTILE_GRID = 2049
#: windows listed in the metrics (drift.json has them all)
MAX_WINDOWS_LISTED = 48


def _num(value: Any) -> Optional[float]:
    """A JSON-safe float (None for missing / NaN)."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


class WhylogsDriftMonitor(Monitor):
    name = NAME
    alert_kind = "drift"
    summary = "whylogs profiles of training vs served windows; KS / chi-square drift per feature and output, Holm-corrected"

    @dataclass
    class Config:
        #: family-wise false-alarm rate: at most this share of windows of unshifted traffic alarm
        alpha: float = 0.05
        #: a significant change counts only when its KS D / total variation distance is at least this
        min_effect: float = 0.05
        #: ``window``: alpha per window; ``report``: alpha over every window and version of the report
        family: str = "window"
        #: features to test; None: every feature of the served window
        columns: Optional[List[str]] = None
        #: test each served model version's outputs against its answers on the training rows
        outputs: bool = True
        #: cut the served rows into windows of this many rows (None: see window_seconds)
        window_rows: Optional[int] = None
        #: ... or of this many seconds of served time (None with window_rows None: one window)
        window_seconds: Optional[float] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        DriftSettings(float(config.alpha), float(config.min_effect), str(config.family)).check(key)
        check_window(config.window_rows, config.window_seconds, key)

    @property
    def settings(self) -> DriftSettings:
        c = self.config
        return DriftSettings(float(c.alpha), float(c.min_effect), str(c.family))

    # ----------------------------------------------------------------------------------------
    def _columns(self, served: ServedWindow, reference: DataSplits) -> list[str]:
        features = list(reference.dataset.features)
        if self.config.columns is None:
            return [c for c in served.features if c in features] or features
        wanted = [str(c) for c in self.config.columns]
        unknown = [c for c in wanted if c not in features]
        if unknown:
            raise RecipeError(
                f"monitor[{NAME}].columns: {unknown} are not features of dataset "
                f"'{reference.dataset.name}'; features: {features[:10]}{' ...' if len(features) > 10 else ''}"
            )
        return wanted

    # ----------------------------------------------------------------------------------------
    def evaluate(self, served: ServedWindow, reference: DataSplits, ctx) -> MonitorReport:
        frame = served.frame
        columns = self._columns(served, reference)
        train = reference.train
        numeric = {c: is_numeric(train[c]) for c in columns}
        metrics: dict[str, Any] = {"rows_served": int(len(frame))}
        metrics.update(serving_metrics(frame))
        alerts: list[str] = []

        ref_view, reused, stored = self._reference_profile(train, columns, numeric, served)
        write_view(ref_view, ctx.out_dir / REFERENCE_PROFILE)
        artifacts = [REFERENCE_PROFILE]
        ref_summaries = summaries(ref_view, columns, numeric)

        missing = [c for c in columns if c not in frame.columns]
        for c in missing:
            alerts.append(f"column '{c}' is missing from the served rows")
        present = [c for c in columns if c in frame.columns]

        versions: dict[str, Any] = {}
        timeline: list[dict] = []
        served_views = []
        tested: set[str] = set()
        drifted: set[str] = set()
        if len(frame) == 0:
            alerts.append("the served window is empty; drift not computed")
        groups = list(by_version(frame)) if len(frame) else []
        settings = self.settings
        if settings.family == "report" and len(groups) > 1:  # Bonferroni over versions, Holm within
            settings = DriftSettings(settings.alpha / len(groups), settings.min_effect, "report")
        for version, rows in groups:
            reference_summaries = {c: ref_summaries[c] for c in present}
            roles = {c: "feature" for c in present}
            outputs = (served.reference_outputs or {}).get(version) if self.config.outputs else None
            output_numeric = False
            if outputs is not None and OUTPUT in rows.columns and len(outputs):
                output_numeric = reference.dataset.task == "regression"
                reference_summaries[OUTPUT] = summarize(outputs, numeric=output_numeric)
                roles[OUTPUT] = "output"
            windows = []
            wanted = {**{c: numeric[c] for c in present}, **({OUTPUT: output_numeric} if OUTPUT in roles else {})}
            for start, end, part in cut_windows(rows, self.config.window_rows, self.config.window_seconds):
                view = window_profile(version, start, part, wanted)
                served_views.append(view)
                windows.append((start, end, summaries(view, list(wanted), wanted)))
            results, since = assess_windows(reference_summaries, windows, settings, roles)
            for w in results:
                tested.update(t.column for t in w.tests)
                timeline.extend({"panel": "drift", "group": version, "window": w.start or "all",
                                 "series": t.column if t.role != "missing" else f"{t.column} (missing)",
                                 "value": float(t.effect), "flag": t.drifted} for t in w.tests)
            for entry in since.values():
                drifted.add(entry["column"])
                alerts.append(alert_text(version, entry, results))
            versions[version] = {"rows": int(len(rows)), "windows": [w.to_dict() for w in results],
                                 "drifting": list(since.values()),
                                 "outputs_tested": OUTPUT in roles}
        if served_views:
            merged = served_views[0]
            for view in served_views[1:]:
                merged = merged.merge(view)
            write_view(merged, ctx.out_dir / SERVED_PROFILE)
            artifacts.append(SERVED_PROFILE)

        metrics["columns_checked"] = len(tested)
        metrics["columns_drifted"] = len(drifted)
        metrics["drifted_columns"] = sorted(drifted)
        metrics["windows"] = sum(len(v["windows"]) for v in versions.values())
        metrics["drift_by_window"] = [{"model_version": version, "start": w["start"], "end": w["end"], "rows": w["rows"],
                                       "tests": w["tests"], "drifted": w["drifted"]}
                                      for version, v in versions.items() for w in v["windows"]][-MAX_WINDOWS_LISTED:]
        pvalues = [c["p_adjusted"] for v in versions.values() for w in v["windows"] for c in w["columns"]
                   if c["p_adjusted"] is not None]
        metrics["min_p_adjusted"] = min(pvalues, default=None)
        report = {
            "monitor": NAME, "alpha": self.config.alpha, "min_effect": self.config.min_effect,
            "family": self.config.family,
            "semantics": ("per window: KS (numbers) / chi-square (categories) per feature and output, Holm-corrected "
                          "over the window's tests (family: report = over every window); drifted when the adjusted "
                          "p-value < alpha and the effect (D / TVD) >= min_effect"),
            "reference": {"data": getattr(served.reference_files, "ref", None), "rows": int(len(train)),
                          "profile": stored, "reused": reused},
            "served_rows": int(len(frame)),
            "versions": versions,
        }
        (ctx.out_dir / DRIFT_FILE).write_text(json.dumps(report, indent=2, default=str))
        artifacts.append(DRIFT_FILE)
        return MonitorReport(monitor=NAME, metrics=metrics, alerts=alerts, artifacts=artifacts, timeline=timeline)

    def _reference_profile(self, train, columns, numeric, served) -> tuple[Any, bool, Optional[str]]:
        """The training rows' profile: read from the data version's store, else built (and stored)."""
        from plugins._whylogs_compat import why  # noqa: F401  (the NumPy-2 shim before whylogs)
        from whylogs.core import DatasetProfileView

        files = served.reference_files
        key = hashlib.blake2b(json.dumps([[c, numeric[c]] for c in columns]).encode(), digest_size=6).hexdigest()
        name = f"whylogs-{key}.bin"
        if files is not None:
            data = files.read(name)
            if data is not None:
                return DatasetProfileView.deserialize(data), True, f"{files.ref}/{name}"
        view = profile(train[columns], numeric)
        where = files.write(name, view.serialize()) if files is not None else None
        return view, False, where


# --------------------------------------------------------------------------------------------
# whylogs profiles and the summaries the core tests
# --------------------------------------------------------------------------------------------
def is_numeric(series: Any) -> bool:
    import pandas as pd

    return pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)


def profile(frame: Any, numeric: dict[str, bool]) -> Any:
    """whylogs' profile view of ``frame``: numbers as floats (KLL sketches), everything else as
    text (frequent-items sketches), missing values kept missing."""
    import pandas as pd

    from plugins._whylogs_compat import why

    data = {}
    for c, is_num in numeric.items():
        values = frame[c]
        if is_num:
            data[c] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            data[c] = values.map(lambda v: None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)).astype(object)
    return why.log(pd.DataFrame(data, index=frame.index)).view()


class ProfileCache:
    """Window profiles kept between calls in one process (``python -m framework monitor
    every=S`` following a service): a window seen before with the same first rows (request ids
    and values) is profiled only for its new rows, merged into the kept
    profile (whylogs profiles merge exactly for counts and frequent items, and as sketches for
    quantiles)."""

    def __init__(self, size: int = 256):
        self.size = size
        self.entries: dict[tuple, tuple[int, int, Any]] = {}
        #: rows profiled by the last calls (what following costs)
        self.rows_profiled = 0

    @staticmethod
    def _digest(rows: Any, columns: list[str]) -> int:
        """The rows' request ids and values, hashed (vectorised: far cheaper than profiling)."""
        import pandas as pd

        hashed = pd.util.hash_pandas_object(rows[["request_id", *columns]].astype(str), index=False)
        return int(hashed.to_numpy().astype("uint64").sum(dtype="uint64")) ^ len(rows)

    def get(self, version: str, start: Any, part: Any, numeric: dict[str, bool]) -> Any:
        columns = list(numeric)
        if "request_id" not in part.columns:
            self.rows_profiled += len(part)
            return profile(part[columns], numeric)
        key = (version, start, json.dumps(sorted(numeric.items())))
        kept = self.entries.pop(key, None)
        if kept is not None and kept[0] <= len(part) and self._digest(part.iloc[:kept[0]], columns) == kept[1]:
            new = part.iloc[kept[0]:]
            self.rows_profiled += len(new)
            view = kept[2] if not len(new) else kept[2].merge(profile(new[columns], numeric))
        else:
            self.rows_profiled += len(part)
            view = profile(part[columns], numeric)
        self.entries[key] = (len(part), self._digest(part, columns), view)
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))
        return view


#: one per process: the monitor verb builds its monitors afresh at every look
PROFILES = ProfileCache()


def window_profile(version: str, start: Any, part: Any, numeric: dict[str, bool]) -> Any:
    return PROFILES.get(version, start, part, numeric)


def summaries(view: Any, columns: list[str], numeric: dict[str, bool]) -> dict[str, Any]:
    """The core's summaries of a profile's columns (see ``framework.monitoring.drift``)."""
    import numpy as np

    out: dict[str, Any] = {}
    grid = list(np.linspace(0.0, 1.0, QUANTILE_GRID))
    for c in columns:
        column = view.get_column(c)
        if column is None:
            continue
        counts = column.get_metric("counts")
        missing = int(counts.null.value) if counts is not None else 0
        if numeric[c]:
            dist = column.get_metric("distribution")
            kll = dist.kll.value
            if kll.is_empty():
                out[c] = NumericSummary(0, missing, math.nan, math.nan, np.array([]), lambda x: np.zeros(len(x)))
                continue
            points = np.unique(np.asarray(kll.get_quantiles(grid), dtype=np.float64))

            def cdf(x, kll=kll):
                return np.asarray(kll.get_cdf([float(v) for v in x])[:-1], dtype=np.float64)

            error = float(kll.normalized_rank_error(False)) if kll.is_estimation_mode() else 0.0
            out[c] = NumericSummary(int(kll.get_n()), missing, float(dist.mean.value), float(dist.stddev), points, cdf, error)
        else:
            items = column.get_metric("frequent_items")
            found = items.to_summary_dict().get("frequent_strings", []) if items is not None else []
            out[c] = CategoricalSummary({str(i.value): int(i.est) for i in found}, missing)
    return out


def write_view(view: Any, path: Any) -> None:
    from whylogs.api.writer.local import LocalWriter

    LocalWriter(base_dir=str(path.parent)).write(file=view, dest=path.name)


def alert_text(version: str, entry: dict, results: list) -> str:
    """One alert per drifting column: what moved, by how much, since when."""
    last = None
    for w in results:
        for t in w.tests:
            if t.column == entry["column"] and t.role == entry["role"] and t.drifted:
                last = t
    what = {"feature": "feature", "output": "output", "missing": "missing values of"}[entry["role"]]
    how = ""
    if last is not None:
        if last.test == "ks":
            shift = last.details.get("mean_shift_sd")
            how = f"KS D {last.effect:.3f}" + (f", mean shift {shift:+.2f} sd" if shift is not None and not math.isnan(shift) else "")
        elif last.test == "chi2":
            how = f"TVD {last.effect:.3f}, PSI {last.details.get('psi', 0.0):.3f}"
        else:
            how = (f"missing {last.details.get('missing_share_reference', 0):.1%} -> "
                   f"{last.details.get('missing_share', 0):.1%}")
        how += f", Holm-adjusted p {last.p_adjusted:.2g}"
    state = "since" if entry.get("ongoing") else "from"
    until = "" if entry.get("ongoing") else f" to {entry.get('last')}"
    return (f"drift in {what} '{entry['column']}' of {version}: {how}; {state} {entry['since']}{until} "
            f"({entry['windows']} window{'s' if entry['windows'] != 1 else ''})")


def serving_metrics(frame) -> dict[str, Any]:
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
