"""The ``whylogs_drift`` monitor: real whylogs profiles and whylogs' own KS drift test."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from framework import DataSplits, ServedWindow
from framework.errors import RecipeError
from plugins.data_sklearn import SklearnDataSource
from plugins.monitor_whylogs import (
    DRIFT_FILE,
    REFERENCE_PROFILE,
    SERVED_PROFILE,
    WhylogsDriftMonitor,
    register_monitors,
)

SHIFTED = ["mean radius", "mean smoothness", "worst texture"]


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    ds = SklearnDataSource().load(None)
    train, rest = train_test_split(ds.frame, test_size=0.3, stratify=ds.frame["target"], random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["target"], random_state=0)
    return DataSplits(ds, train, val, test)


def served_from(frame, features) -> ServedWindow:
    """What the server would have recorded for these rows."""
    out = frame[features].copy().reset_index(drop=True)
    n = len(out)
    out["prediction"] = frame["target"].to_numpy()
    out["model_version"] = np.where(np.arange(n) % 4 == 0, "v2", "v1")
    out["latency_ms"] = np.linspace(1.0, 100.0, n)
    out["request_id"] = [f"r{i}" for i in range(n)]
    out["timestamp"] = np.datetime64("2024-01-01T00:00:00") + np.arange(n).astype("timedelta64[s]")
    return ServedWindow(out, list(features))


def evaluate(served, splits, ctx, **config):
    return WhylogsDriftMonitor(WhylogsDriftMonitor.Config(**config)).evaluate(served, splits, ctx)


def test_test_split_shows_no_drift(splits, stage_ctx):
    ctx = stage_ctx("monitor")
    served = served_from(splits.test, splits.dataset.features)
    report = evaluate(served, splits, ctx)

    m = report.metrics
    assert report.monitor == "whylogs_drift"
    assert m["rows_served"] == len(splits.test)
    assert m["columns_checked"] == 30
    assert m["columns_drifted"] <= 1 and len(report.alerts) == m["columns_drifted"]
    assert m["min_pvalue"] > 0.01
    assert set(m["prediction_distribution"]) == {"0", "1"}
    assert sum(m["prediction_distribution"].values()) == pytest.approx(1.0)
    assert m["prediction_distribution"]["1"] == pytest.approx((splits.test["target"] == 1).mean())
    assert m["latency_p50_ms"] == pytest.approx(50.5)
    assert 98.0 < m["latency_p99_ms"] <= 100.0
    assert m["model_versions"] == ["v1", "v2"]
    assert report.artifacts == [REFERENCE_PROFILE, SERVED_PROFILE, DRIFT_FILE]


def test_shifted_columns_are_flagged(splits, stage_ctx):
    ctx = stage_ctx("monitor")
    served = served_from(splits.test, splits.dataset.features)
    for col in SHIFTED:
        served.frame[col] = served.frame[col] + 3 * splits.train[col].std()
    report = evaluate(served, splits, ctx)

    assert report.metrics["columns_drifted"] == 3
    assert sorted(report.metrics["drifted_columns"]) == sorted(SHIFTED)
    assert report.metrics["max_drift_score"] > 0.5 and report.metrics["min_pvalue"] < 1e-6
    assert len(report.alerts) == 3
    for col, alert in zip(sorted(SHIFTED), sorted(report.alerts)):
        assert f"column '{col}'" in alert and "ks p-value" in alert

    drift = json.loads((ctx.out_dir / DRIFT_FILE).read_text())
    assert drift["drift_threshold"] == 0.05
    flagged = {c for c, r in drift["columns"].items() if r["flagged"]}
    assert flagged == set(SHIFTED)
    row = drift["columns"]["mean radius"]
    assert row["algorithm"] == "ks" and row["drift_category"] == "DRIFT"
    assert row["pvalue"] < 0.05 and 0.5 < row["statistic"] <= 1.0
    calm = drift["columns"]["mean texture"]
    assert calm["drift_category"] in {"NO_DRIFT", "POSSIBLE_DRIFT"} and not calm["flagged"]


def test_profiles_are_real_whylogs_files(splits, stage_ctx):
    from plugins._whylogs_compat import why
    from whylogs.core import DatasetProfileView

    ctx = stage_ctx("monitor")
    evaluate(served_from(splits.test, splits.dataset.features), splits, ctx)

    ref = DatasetProfileView.read(str(ctx.out_dir / REFERENCE_PROFILE))
    assert set(ref.get_columns()) == set(splits.dataset.features)
    assert ref.get_column("mean radius").get_metric("counts").n.value == len(splits.train)

    served = why.read(str(ctx.out_dir / SERVED_PROFILE)).view()
    assert {"prediction", "latency_ms", "model_version", "mean radius"} <= set(served.get_columns())
    dist = served.get_column("latency_ms").get_metric("distribution")
    assert dist.max == pytest.approx(100.0) and dist.n == len(splits.test)


def test_columns_subset_and_threshold(splits, stage_ctx):
    served = served_from(splits.test, splits.dataset.features)
    served.frame["mean radius"] += 3 * splits.train["mean radius"].std()
    report = evaluate(served, splits, stage_ctx("monitor"), columns=["mean radius", "mean texture"],
                      drift_threshold=0.001)
    assert report.metrics["columns_checked"] == 2
    assert report.metrics["drifted_columns"] == ["mean radius"]

    with pytest.raises(RecipeError, match="not features"):
        evaluate(served, splits, stage_ctx("monitor"), columns=["nope"])
    with pytest.raises(RecipeError, match="drift_threshold"):
        WhylogsDriftMonitor(WhylogsDriftMonitor.Config(drift_threshold=5.0))


def test_empty_window_and_missing_values(splits, stage_ctx):
    features = splits.dataset.features
    empty = served_from(splits.test.iloc[:0], features)
    report = evaluate(empty, splits, stage_ctx("monitor"))
    assert report.metrics["rows_served"] == 0 and report.metrics["columns_checked"] == 0
    assert any("empty" in a for a in report.alerts)

    served = served_from(splits.test, features)
    served.frame["mean radius"] = np.nan  # the client stopped sending it
    report = evaluate(served, splits, stage_ctx("monitor"))
    assert report.metrics["columns_checked"] == 29
    assert any("'mean radius' has no drift score" in a for a in report.alerts)


def test_registration_and_structured_config():
    assert register_monitors() == [WhylogsDriftMonitor]
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(WhylogsDriftMonitor.Config),
                                              {"columns": ["a"]}))
    assert cfg.columns == ["a"] and cfg.drift_threshold == 0.05


def test_plugin_modules_import_cheaply():
    """The core imports every plugin to list components: no heavy library at module import."""
    import subprocess
    import sys

    code = (
        "import sys, plugins.data_sklearn, plugins.check_pandera, plugins.monitor_whylogs\n"
        "heavy = [m for m in ('whylogs', 'pandera', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
