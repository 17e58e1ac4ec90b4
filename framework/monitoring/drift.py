"""Drift of served data against a reference, per column, with family-wise error control.

What a monitor hands in is a **summary** per column, never a library's object: a
:class:`NumericSummary` (a CDF that can be evaluated anywhere, its count, mean and spread; built
from raw values here, or by a plugin from a sketch such as a whylogs KLL profile) or a
:class:`CategoricalSummary` (counts per value). :func:`assess` then tests every column of a
window, served inputs and outputs alike, and corrects the p-values together:

* **numbers**: the two-sample Kolmogorov-Smirnov test. D is the largest gap between the two
  CDFs, evaluated at every point where either can jump (a sketch gives a fine quantile grid);
  a sketch's rank error is *subtracted* from D first, so an approximate profile can make the
  test more cautious, never more alarmed. The p-value is the Kolmogorov distribution's
  (``scipy.stats.kstwo``) at the effective size n·m/(n+m), as ``scipy.stats.ks_2samp`` computes
  it in its asymptotic mode. Effect sizes: D, and the mean shift in reference standard
  deviations.
* **categories**: Pearson's chi-square test on the 2 x k table of counts (values too rare for
  the approximation, an expected count < 5, pooled into one cell; values never seen in the
  reference pooled into ``(new)``). Effect sizes: total variation distance (TVD) and the
  population stability index (PSI).
* **missing values**: when either side has some, the share of missing values is one more test
  of the family (two-proportion z-test).

**Family-wise control.** Holm's step-down procedure over every test of the family (a window's
features and outputs; or, with ``family="report"``, every window's tests together): on data
drawn from the reference distribution the probability that *any* column of the family is
flagged is at most ``alpha``, whatever the dependence between the columns. A column is flagged
when its Holm-adjusted p-value is below ``alpha`` **and** its effect reaches ``min_effect`` (D or
TVD): on large windows a negligible shift is significant, and the floor can only remove alarms,
so the guarantee stands.

Pure NumPy / SciPy (SciPy comes with scikit-learn); nothing here imports a monitoring library.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import RecipeError
from ..sequential import holm, holm_adjusted, two_proportion_z_p_value

__all__ = [
    "CategoricalSummary",
    "ColumnDrift",
    "DriftSettings",
    "NumericSummary",
    "WindowDrift",
    "assess",
    "assess_windows",
    "chi_square_test",
    "holm_adjusted",
    "ks_test",
    "summarize",
]

#: cells of a chi-square table with an expected count below this are pooled
MIN_EXPECTED = 5.0
#: PSI's floor on a share (an empty bin would make it infinite)
PSI_FLOOR = 1e-4
NEW = "(new)"
RARE = "(rare)"


@dataclass
class NumericSummary:
    """One numeric column: ``cdf(x)`` = share of values <= x (vectorised), at ``points`` every
    place it may jump (or a fine grid of quantiles for a sketch); ``rank_error`` bounds
    |cdf - the exact empirical CDF| (0 for raw values)."""

    n: int
    missing: int
    mean: float
    std: float
    points: Any  # numpy array, sorted
    cdf: Callable[[Any], Any]
    rank_error: float = 0.0

    @classmethod
    def from_values(cls, values: Any) -> "NumericSummary":
        import numpy as np

        array = np.asarray(values, dtype=np.float64)
        present = np.sort(array[~np.isnan(array)])
        n = int(present.size)

        def cdf(x: Any) -> Any:
            return np.searchsorted(present, np.asarray(x, dtype=np.float64), side="right") / max(n, 1)

        return cls(n=n, missing=int(array.size - n), mean=float(present.mean()) if n else math.nan,
                   std=float(present.std(ddof=1)) if n > 1 else math.nan, points=np.unique(present), cdf=cdf)


@dataclass
class CategoricalSummary:
    """One categorical column: count per value (as text), and the missing values."""

    counts: dict[str, int]
    missing: int = 0

    @property
    def n(self) -> int:
        return int(sum(self.counts.values()))

    @classmethod
    def from_values(cls, values: Any) -> "CategoricalSummary":
        import pandas as pd

        series = pd.Series(values)
        present = series.dropna()
        counts = present.astype(str).value_counts()
        return cls({str(k): int(v) for k, v in counts.items()}, int(series.size - present.size))


Summary = NumericSummary | CategoricalSummary


def summarize(values: Any, numeric: bool | None = None) -> Summary:
    """The summary of raw values: numeric when the values are numbers (not booleans)."""
    import pandas as pd

    series = pd.Series(values)
    if numeric is None:
        numeric = pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series)
    return NumericSummary.from_values(series.to_numpy(dtype="float64")) if numeric else CategoricalSummary.from_values(series)


@dataclass
class ColumnDrift:
    """One test of the family, with what moved and by how much."""

    column: str
    role: str  # feature | output | missing
    test: str  # ks | chi2 | missing_z | none
    statistic: float | None
    pvalue: float
    effect: float  # D (ks) or TVD (chi2) or the difference of missing shares
    rows: int
    reference_rows: int
    details: dict = field(default_factory=dict)
    p_adjusted: float = 1.0
    drifted: bool = False

    def to_dict(self) -> dict:
        return {"column": self.column, "role": self.role, "test": self.test,
                "statistic": _round(self.statistic), "pvalue": _round(self.pvalue, 12),
                "p_adjusted": _round(self.p_adjusted, 12), "effect": _round(self.effect),
                "rows": self.rows, "reference_rows": self.reference_rows, "drifted": self.drifted,
                **{k: _round(v) if isinstance(v, float) else v for k, v in self.details.items()}}


def _round(value: Any, digits: int = 6) -> Any:
    if value is None or not isinstance(value, float):
        return value
    if math.isnan(value) or math.isinf(value):
        return None
    return float(f"{value:.{digits}g}")


def ks_test(column: str, reference: NumericSummary, current: NumericSummary, role: str = "feature") -> ColumnDrift:
    """Two-sample Kolmogorov-Smirnov on two CDFs (see the module docstring)."""
    import numpy as np
    from scipy import stats

    if reference.n == 0 or current.n == 0:
        return ColumnDrift(column, role, "none", None, 1.0, 0.0, current.n, reference.n,
                           {"note": "no values on one side"})
    grid = np.union1d(np.asarray(reference.points, dtype=np.float64), np.asarray(current.points, dtype=np.float64))
    raw = float(np.max(np.abs(np.asarray(reference.cdf(grid)) - np.asarray(current.cdf(grid))))) if grid.size else 0.0
    d = max(0.0, raw - reference.rank_error - current.rank_error)
    n_eff = reference.n * current.n / (reference.n + current.n)
    pvalue = float(stats.kstwo.sf(d, max(1, int(round(n_eff))))) if d > 0 else 1.0
    shift = (current.mean - reference.mean) / reference.std if reference.std and reference.std > 0 else math.nan
    details = {"kind": "numeric", "ks_d": raw, "mean": current.mean, "mean_reference": reference.mean,
               "std": current.std, "std_reference": reference.std, "mean_shift_sd": shift}
    if reference.rank_error or current.rank_error:
        details["sketch_rank_error"] = reference.rank_error + current.rank_error
    return ColumnDrift(column, role, "ks", d, min(1.0, pvalue), d, current.n, reference.n, details)


def chi_square_test(column: str, reference: CategoricalSummary, current: CategoricalSummary,
                    role: str = "feature") -> ColumnDrift:
    """Pearson's chi-square on the 2 x k table of counts, rare cells pooled (module docstring)."""
    import numpy as np
    from scipy import stats

    n_ref, n_cur = reference.n, current.n
    if n_ref == 0 or n_cur == 0:
        return ColumnDrift(column, role, "none", None, 1.0, 0.0, n_cur, n_ref, {"note": "no values on one side"})
    levels = sorted(reference.counts)
    new = {k: v for k, v in current.counts.items() if k not in reference.counts}
    ref = np.array([reference.counts[k] for k in levels] + [0], dtype=np.float64)
    cur = np.array([current.counts.get(k, 0) for k in levels] + [sum(new.values())], dtype=np.float64)
    names = levels + [NEW]
    # effect sizes on the unpooled shares
    p_ref, p_cur = ref / n_ref, cur / n_cur
    tvd = 0.5 * float(np.abs(p_ref - p_cur).sum())
    psi = float(np.sum((np.maximum(p_cur, PSI_FLOOR) - np.maximum(p_ref, PSI_FLOOR))
                       * np.log(np.maximum(p_cur, PSI_FLOOR) / np.maximum(p_ref, PSI_FLOOR))))
    # pool cells whose smaller expected count is below MIN_EXPECTED
    pooled_share = (ref + cur) / (n_ref + n_cur)
    small = pooled_share * min(n_ref, n_cur) < MIN_EXPECTED
    table_ref, table_cur = list(ref[~small]), list(cur[~small])
    if small.any():
        table_ref.append(ref[small].sum())
        table_cur.append(cur[small].sum())
    table = np.array([table_ref, table_cur])
    table = table[:, table.sum(axis=0) > 0]
    moved = sorted(((names[i], float(p_cur[i] - p_ref[i])) for i in range(len(names)) if p_cur[i] != p_ref[i]),
                   key=lambda kv: -abs(kv[1]))[:5]
    details = {"kind": "categorical", "tvd": tvd, "psi": psi, "new_values": sorted(new)[:10],
               "largest_moves": {k: round(v, 4) for k, v in moved}}
    if table.shape[1] < 2:
        return ColumnDrift(column, role, "chi2", 0.0, 1.0, tvd, n_cur, n_ref, details)
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    pvalue = float(stats.chi2.sf(chi2, table.shape[1] - 1))
    return ColumnDrift(column, role, "chi2", chi2, pvalue, tvd, n_cur, n_ref, details)


def missing_test(column: str, ref_missing: int, ref_total: int, cur_missing: int, cur_total: int) -> ColumnDrift:
    """The share of missing values, reference against current (two-proportion z-test)."""
    p = two_proportion_z_p_value(ref_missing, ref_total, cur_missing, cur_total) if ref_total and cur_total else 1.0
    share_ref = ref_missing / ref_total if ref_total else 0.0
    share_cur = cur_missing / cur_total if cur_total else 0.0
    return ColumnDrift(column, "missing", "missing_z", None, float(p), abs(share_cur - share_ref), cur_total, ref_total,
                       {"kind": "missing", "missing_share": share_cur, "missing_share_reference": share_ref})


@dataclass(frozen=True)
class DriftSettings:
    """What a recipe declares: ``alpha`` the family-wise false-alarm rate (per window, or per
    report with ``family="report"``), ``min_effect`` the smallest D / TVD / missing-share change
    that counts."""

    alpha: float = 0.05
    min_effect: float = 0.05
    family: str = "window"  # window | report

    def check(self, key: str) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise RecipeError(f"{key}.alpha: a family-wise error rate in (0, 1), got {self.alpha}")
        if not 0.0 <= self.min_effect <= 1.0:
            raise RecipeError(f"{key}.min_effect: a D / TVD floor in [0, 1], got {self.min_effect}")
        if self.family not in ("window", "report"):
            raise RecipeError(f"{key}.family: 'window' (alpha per window) or 'report' (alpha over every window), "
                              f"got {self.family!r}")


def _column_tests(reference: Mapping[str, Summary], current: Mapping[str, Summary],
                  roles: Mapping[str, str] | None) -> list[ColumnDrift]:
    tests: list[ColumnDrift] = []
    for column, ref in reference.items():
        cur = current.get(column)
        if cur is None:
            continue
        role = (roles or {}).get(column, "feature")
        if isinstance(ref, NumericSummary) and isinstance(cur, NumericSummary):
            tests.append(ks_test(column, ref, cur, role))
        elif isinstance(ref, CategoricalSummary) and isinstance(cur, CategoricalSummary):
            tests.append(chi_square_test(column, ref, cur, role))
        else:
            raise TypeError(f"column '{column}': reference is {type(ref).__name__}, current {type(cur).__name__}")
        if ref.missing or cur.missing:
            tests.append(missing_test(column, ref.missing, ref.n + ref.missing, cur.missing, cur.n + cur.missing))
    return tests


def _correct(tests: list[ColumnDrift], settings: DriftSettings) -> None:
    adjusted = holm_adjusted([t.pvalue for t in tests])
    # the verdicts of the framework's own Holm (framework.sequential), which this mirrors
    rejected = holm({str(i): t.pvalue for i, t in enumerate(tests)}, settings.alpha)
    for i, (t, p) in enumerate(zip(tests, adjusted)):
        t.p_adjusted = p
        t.drifted = str(i) in rejected and t.effect >= settings.min_effect


@dataclass
class WindowDrift:
    """A window's tests, corrected together (or with the report's other windows)."""

    start: Any
    end: Any
    rows: int
    tests: list[ColumnDrift]

    @property
    def drifted(self) -> list[ColumnDrift]:
        return [t for t in self.tests if t.drifted]

    def to_dict(self) -> dict:
        return {"start": _text(self.start), "end": _text(self.end), "rows": self.rows,
                "tests": len(self.tests), "drifted": [t.column if t.role != "missing" else f"{t.column} (missing)"
                                                      for t in self.drifted],
                "columns": [t.to_dict() for t in self.tests]}


def _text(value: Any) -> Any:
    if value is None or isinstance(value, (int, float, str)):
        return value
    return str(value)


def assess(reference: Mapping[str, Summary], current: Mapping[str, Summary], settings: DriftSettings = DriftSettings(),
           roles: Mapping[str, str] | None = None, start: Any = None, end: Any = None) -> WindowDrift:
    """One window: every column of ``reference`` found in ``current`` tested, Holm-corrected."""
    tests = _column_tests(reference, current, roles)
    _correct(tests, settings)
    rows = max((t.rows for t in tests if t.role != "missing"), default=0)
    return WindowDrift(start, end, rows, tests)


def assess_windows(reference: Mapping[str, Summary], windows: Sequence[tuple[Any, Any, Mapping[str, Summary]]],
                   settings: DriftSettings = DriftSettings(),
                   roles: Mapping[str, str] | None = None) -> tuple[list[WindowDrift], dict[str, dict]]:
    """Several windows (``(start, end, summaries)``, oldest first). ``family="window"``: alpha per
    window; ``"report"``: Holm over every test of every window, alpha for the whole report.

    Also returns, per drifted column, **since when**: the start of the oldest window of the run
    of consecutive drifted windows that reaches the newest drifted one, and its largest effect."""
    results = []
    for start, end, current in windows:
        tests = _column_tests(reference, current, roles)
        rows = max((t.rows for t in tests if t.role != "missing"), default=0)
        results.append(WindowDrift(start, end, rows, tests))
    if settings.family == "report":
        _correct([t for w in results for t in w.tests], settings)
    else:
        for w in results:
            _correct(w.tests, settings)
    since: dict[str, dict] = {}
    for w in results:
        flagged = {(t.column, t.role): t for t in w.drifted}
        for key in list(since):
            if key not in {f"{c}|{r}" for c, r in flagged}:
                since[key]["ongoing"] = False
        for (column, role), t in flagged.items():
            key = f"{column}|{role}"
            entry = since.get(key)
            if entry is None or not entry["ongoing"]:
                since[key] = {"column": column, "role": role, "since": _text(w.start), "windows": 0,
                              "largest_effect": 0.0, "ongoing": True}
                entry = since[key]
            entry["windows"] += 1
            entry["last"] = _text(w.end)
            entry["largest_effect"] = max(entry["largest_effect"], round(t.effect, 6))
            if "mean_shift_sd" in t.details:
                entry["mean_shift_sd"] = _round(t.details["mean_shift_sd"])
    return results, since
