"""Data checks against a reference data version: ``drift`` and ``new_categories``.

The reference is a registered data version, read through ``ctx.registered_data``:
``reference: previous`` (the newest stored version of the same dataset: this run's data is
versioned after the checks), ``NAME@ALIAS`` or ``NAME:ID``::

    checks:
      - type: drift                 # table-wide: severity fail or warn
        severity: warn
        reference: previous
        alpha: 0.01                 # family-wise error rate over the columns (Holm)
        min_effect: 0.05            # and at least this KS statistic / total variation distance
        max_missing_jump: 0.05      # a column's missing share may grow by 5 points at most
        min_rows_ratio: 0.5         # rows / reference rows within [0.5, 2.0]
        max_rows_ratio: 2.0
      - type: new_categories        # row by row: severity quarantine takes them out
        severity: quarantine
        reference: breast_cancer@prod

``drift`` tests each column for a shift: numbers with the two-sample Kolmogorov-Smirnov test,
everything else with a chi-square test on the category counts (the total variation distance is
its effect size); the p-values of all columns are corrected together (Holm), and a column
drifts when its corrected p-value is below ``alpha`` *and* its effect is at least
``min_effect`` (on a million rows a negligible shift is significant). A first run with
``previous`` has nothing to compare with: it passes and says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import RecipeError
from framework.sequential import holm_adjusted
from plugins.check_support import check_reference, flag, is_numeric, reference_data

#: new category values named per column in a report (the rows are all flagged)
SHOWN_VALUES = 10


def shift_test(current: Any, reference: Any) -> dict:
    """One column's shift: test, statistic, p-value and effect size (KS D or TVD)."""
    import numpy as np
    from scipy import stats

    now, ref = current.dropna(), reference.dropna()
    if len(now) == 0 or len(ref) == 0:
        return {"test": "none", "p": 1.0, "effect": 0.0, "note": "no values on one side"}
    if is_numeric(current) and is_numeric(reference):
        result = stats.ks_2samp(now.to_numpy(dtype=np.float64), ref.to_numpy(dtype=np.float64))
        return {"test": "ks", "statistic": float(result.statistic), "p": float(result.pvalue),
                "effect": float(result.statistic)}
    now_counts = now.astype(str).value_counts()
    ref_counts = ref.astype(str).value_counts()
    levels = sorted(set(now_counts.index) | set(ref_counts.index))
    table = np.array([[now_counts.get(v, 0) for v in levels], [ref_counts.get(v, 0) for v in levels]], dtype=float)
    tvd = 0.5 * float(np.abs(table[0] / table[0].sum() - table[1] / table[1].sum()).sum())
    if len(levels) < 2:
        return {"test": "chi2", "statistic": 0.0, "p": 1.0, "effect": tvd}
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return {"test": "chi2", "statistic": float(chi2), "p": float(p), "effect": tvd}


class DriftCheck(DataCheck):
    name = "drift"
    summary = "per-column shift (KS / chi-square, Holm-corrected), missing-rate jumps and row-count bounds vs a reference version"
    #: every failure is table-wide: there are no rows to quarantine
    severities = ("fail", "warn")

    @dataclass
    class Config:
        #: ``previous``, ``NAME@ALIAS`` or ``NAME:ID`` (a data version)
        reference: str = "previous"
        #: family-wise error rate over the shift tests of all columns (Holm)
        alpha: float = 0.01
        #: a significant shift counts only when its KS statistic / total variation is at least this
        min_effect: float = 0.05
        #: the largest allowed increase of a column's share of missing values (absolute)
        max_missing_jump: float = 0.05
        #: bounds of rows / reference rows (None: unbounded)
        min_rows_ratio: Optional[float] = 0.5
        max_rows_ratio: Optional[float] = 2.0
        #: the columns compared (default: the features)
        columns: Optional[List[str]] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        check_reference(config.reference, key)
        if not 0.0 < config.alpha < 1.0:
            raise RecipeError(f"{key}.alpha: must be between 0 and 1, got {config.alpha}")
        if not 0.0 <= config.min_effect <= 1.0 or not 0.0 <= config.max_missing_jump <= 1.0:
            raise RecipeError(f"{key}: min_effect and max_missing_jump are shares in [0, 1]")
        low, high = config.min_rows_ratio, config.max_rows_ratio
        if (low is not None and low < 0) or (low is not None and high is not None and low > high):
            raise RecipeError(f"{key}: row ratio bounds must satisfy 0 <= min_rows_ratio <= max_rows_ratio")

    def check(self, dataset: Dataset, ctx) -> CheckReport:
        cfg = self.config
        frame = dataset.frame
        reference, ref = reference_data(ctx, dataset, cfg.reference)
        if reference is None:
            ctx.logger.info("drift: no stored version of '%s' yet: nothing to compare (first run)", dataset.name)
            return CheckReport(self.name, True, len(frame), details={"reference": None, "note": "no previous version"})
        columns = cfg.columns if cfg.columns is not None else list(dataset.features)
        compared = [c for c in columns if c in frame.columns and c in reference.columns]
        failures: list[dict] = []
        stats: dict[str, dict] = {}
        for column in compared:
            stats[column] = shift_test(frame[column], reference[column])
            stats[column]["missing"] = float(frame[column].isna().mean())
            stats[column]["missing_reference"] = float(reference[column].isna().mean())
        for column, p_holm in zip(compared, holm_adjusted([stats[c]["p"] for c in compared])):
            s = stats[column]
            s["p_holm"] = p_holm
            if p_holm < cfg.alpha and s["effect"] >= cfg.min_effect:
                failures.append({"column": column, "check": f"shift_{s['test']}", "count": 1, "rows": [],
                                 "effect": round(s["effect"], 4), "p_holm": p_holm})
            jump = s["missing"] - s["missing_reference"]
            if jump > cfg.max_missing_jump:
                failures.append({"column": column, "check": "missing_rate_jump", "count": int(frame[column].isna().sum()),
                                 "rows": [], "missing": round(s["missing"], 4),
                                 "missing_reference": round(s["missing_reference"], 4)})
        ratio = len(frame) / max(len(reference), 1)
        if (cfg.min_rows_ratio is not None and ratio < cfg.min_rows_ratio) or (
                cfg.max_rows_ratio is not None and ratio > cfg.max_rows_ratio):
            failures.append({"column": None, "check": f"row_count_ratio({cfg.min_rows_ratio}, {cfg.max_rows_ratio})",
                             "count": len(frame), "rows": [], "ratio": round(ratio, 4)})
        details = {"reference": ref, "reference_rows": len(reference), "rows_ratio": round(ratio, 4),
                   "not_in_reference": [c for c in columns if c not in reference.columns],
                   "columns": {c: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in s.items()}
                               for c, s in stats.items()}}
        return CheckReport(self.name, not failures, len(frame), failures=failures, details=details)


class NewCategoriesCheck(DataCheck):
    name = "new_categories"
    summary = "rows whose category (text column) never occurs in a reference version; flagged row by row"

    @dataclass
    class Config:
        reference: str = "previous"
        #: the columns compared (default: the features that are not numbers)
        columns: Optional[List[str]] = None

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        check_reference(config.reference, key)

    def check(self, dataset: Dataset, ctx) -> CheckReport:
        frame = dataset.frame
        reference, ref = reference_data(ctx, dataset, self.config.reference)
        if reference is None:
            ctx.logger.info("new_categories: no stored version of '%s' yet: nothing to compare (first run)", dataset.name)
            return CheckReport(self.name, True, len(frame), details={"reference": None, "note": "no previous version"})
        columns = self.config.columns
        if columns is None:
            columns = [c for c in dataset.features if c in frame.columns and not is_numeric(frame[c])]
        failures, flagged, details = [], [], {"reference": ref, "new_values": {}}
        for column in columns:
            if column not in reference.columns or column not in frame.columns:
                continue
            known = set(reference[column].dropna().astype(str).unique())
            values = frame[column]
            new = values.notna() & ~values.astype(str).isin(known)
            if not new.any():
                continue
            labels = frame.index[new.to_numpy()].tolist()
            failures.append({"column": column, "check": "new_category", "count": len(labels), "rows": labels[:20]})
            reason = f"new category ({column})"
            flagged.extend(flag(r, reason) for r in labels)
            counts = values[new].astype(str).value_counts()
            # run the pii check before this one: what it redacts never shows here
            details["new_values"][column] = {str(v)[:40]: int(n) for v, n in counts.head(SHOWN_VALUES).items()}
        return CheckReport(self.name, not failures, len(frame), failures=failures, details=details, flagged=flagged)


@hookimpl
def register_data_checks():
    return [DriftCheck, NewCategoriesCheck]
