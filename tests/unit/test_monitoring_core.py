"""framework.monitoring: the drift statistics against SciPy, Holm against framework.sequential,
windows, and the HTML report (escaped, self-contained)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from framework.errors import RecipeError
from framework.monitoring import (
    CategoricalSummary,
    DriftSettings,
    NumericSummary,
    assess,
    assess_windows,
    chi_square_test,
    cut_windows,
    holm_adjusted,
    ks_test,
    summarize,
)
from framework.monitoring.report import render
from framework.sequential import holm


def test_ks_matches_scipy_on_raw_values():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=3000), rng.normal(0.1, 1.0, size=800)
    ours = ks_test("x", NumericSummary.from_values(a), NumericSummary.from_values(b))
    ref = stats.ks_2samp(b, a, method="asymp")
    assert ours.statistic == pytest.approx(ref.statistic, abs=1e-12)
    assert ours.pvalue == pytest.approx(ref.pvalue, rel=0.05)
    assert ours.details["mean_shift_sd"] == pytest.approx((b.mean() - a.mean()) / a.std(ddof=1))


def test_a_sketch_rank_error_only_makes_the_test_more_cautious():
    rng = np.random.default_rng(1)
    a, b = NumericSummary.from_values(rng.normal(size=2000)), NumericSummary.from_values(rng.normal(0.2, 1, 500))
    exact = ks_test("x", a, b)
    a.rank_error = b.rank_error = 0.01
    sketched = ks_test("x", a, b)
    assert sketched.statistic == pytest.approx(exact.statistic - 0.02) and sketched.pvalue > exact.pvalue


def test_chi_square_pools_rare_cells_and_reports_new_values():
    ref = CategoricalSummary({"a": 500, "b": 480, "c": 3})
    cur = CategoricalSummary({"a": 100, "b": 90, "zz": 2}, missing=4)
    result = chi_square_test("colour", ref, cur)
    assert result.test == "chi2" and result.details["new_values"] == ["zz"]
    # a (100 vs 500), b (90 vs 480) kept; c and the new value pooled: 3 cells, 2 degrees of freedom
    table = np.array([[500, 480, 3], [100, 90, 2]])
    assert result.pvalue == pytest.approx(stats.chi2_contingency(table, correction=False)[1])
    assert 0 <= result.effect <= 1 and result.details["psi"] >= 0


def test_holm_adjusted_gives_the_verdicts_of_framework_sequential():
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, size=8))
        adjusted = holm_adjusted(p)
        assert {str(i) for i, q in enumerate(adjusted) if q <= 0.05} == holm({str(i): v for i, v in enumerate(p)}, 0.05)


def test_assess_corrects_across_the_window_and_missing_values_count():
    rng = np.random.default_rng(3)
    ref = {f"f{i}": summarize(rng.normal(size=2000)) for i in range(20)}
    values = rng.normal(size=500)
    values[:100] = np.nan
    cur = {f"f{i}": summarize(rng.normal(size=500)) for i in range(19)} | {"f19": summarize(values)}
    window = assess(ref, cur, DriftSettings(alpha=0.05))
    assert len(window.tests) == 21  # 20 columns and one missing-share test
    assert [(t.column, t.role) for t in window.drifted] == [("f19", "missing")]
    assert all(t.p_adjusted >= t.pvalue for t in window.tests)


def test_since_when_across_windows_and_the_report_family():
    rng = np.random.default_rng(4)
    ref = {"x": summarize(rng.normal(size=3000))}
    windows = [(f"t{i}", f"t{i}e", {"x": summarize(rng.normal(1.0 if i in (1, 2, 4) else 0.0, 1, 400))})
               for i in range(5)]
    results, since = assess_windows(ref, windows, DriftSettings(alpha=0.01))
    assert [bool(w.drifted) for w in results] == [False, True, True, False, True]
    assert since["x|feature"]["since"] == "t4" and since["x|feature"]["windows"] == 1  # the current run
    _, whole = assess_windows(ref, windows, DriftSettings(alpha=0.01, family="report"))
    assert whole["x|feature"]["since"] == "t4"
    with pytest.raises(RecipeError, match="family"):
        DriftSettings(family="everything").check("monitor[0]")


def test_windows_by_rows_and_seconds():
    frame = pd.DataFrame({"v": range(10), "timestamp": pd.Timestamp("2024-01-01", tz="UTC")
                          + pd.to_timedelta([0, 1, 2, 3, 10, 11, 12, 30, 31, 32], unit="s")})
    assert [len(p) for _, _, p in cut_windows(frame, window_rows=4)] == [4, 4, 2]
    assert [len(p) for _, _, p in cut_windows(frame, window_seconds=10)] == [4, 3, 3]
    (start, end, part), = cut_windows(frame)
    assert start.startswith("2024-01-01T00:00:00") and end.startswith("2024-01-01T00:00:32") and len(part) == 10


def test_report_is_self_contained_and_escapes_names():
    timeline = [{"panel": "drift", "group": "m:1", "series": "<script>alert(1)</script>", "window": f"2024-01-0{i}",
                 "value": 0.1 * i, "flag": i == 3} for i in range(1, 4)]
    report = {"monitor": "whylogs_drift", "metrics": {"drift_by_window": []}, "alerts": ["drift in <b>x</b>"],
              "timeline": timeline}
    frame = pd.DataFrame({"model_version": ["m:1"] * 50, "arm": "a", "latency_ms": np.linspace(1, 5, 50),
                          "timestamp": pd.Timestamp("2024-01-01", tz="UTC") + pd.to_timedelta(range(50), unit="min")})
    page = render("t", [report], frame)
    assert "<script>" not in page and "&lt;script&gt;" in page and "drift in &lt;b&gt;x&lt;/b&gt;" in page
    assert page.count("<svg") == 3  # drift, latency, traffic
    assert 'class="point flagged"' in page and "src=" not in page and "href=" not in page
