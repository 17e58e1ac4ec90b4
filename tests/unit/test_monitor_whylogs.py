"""The ``whylogs_drift`` monitor: real whylogs profiles, typed tests, Holm across the features and
outputs of a window, windows and "since when", the reference profile stored with the data."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import train_test_split

from framework import DataSplits, Dataset, ReferenceFiles, ServedWindow
from framework.errors import RecipeError
from plugins.data_sklearn import SklearnDataSource
from plugins.monitor_whylogs import (
    DRIFT_FILE,
    REFERENCE_PROFILE,
    SERVED_PROFILE,
    WhylogsDriftMonitor,
    register_monitors,
)


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    ds = SklearnDataSource().load(None)
    train, rest = train_test_split(ds.frame, test_size=0.3, stratify=ds.frame["target"], random_state=0)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["target"], random_state=0)
    return DataSplits(ds, train, val, test)


def gaussian_splits(rows: int = 4000, features: int = 30, seed: int = 0) -> DataSplits:
    """A generated table: ``features`` standard normal columns with some correlation, a class."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(rows, features))
    base[:, 1::2] = 0.6 * base[:, ::2][:, : features // 2] + 0.8 * base[:, 1::2]
    frame = pd.DataFrame(base, columns=[f"x{i}" for i in range(features)])
    frame["target"] = (frame["x0"] + rng.normal(size=rows) > 0).astype(int)
    ds = Dataset(name="gauss", frame=frame, features=[f"x{i}" for i in range(features)], target="target",
                 classes=[0, 1])
    return DataSplits(ds, frame, frame.iloc[:0], frame.iloc[:0])


def served_from(frame, features, start="2024-01-01T00:00:00", seconds=1.0) -> ServedWindow:
    """What the server would have recorded for these rows."""
    out = frame[features].copy().reset_index(drop=True)
    n = len(out)
    out["prediction"] = frame["target"].to_numpy()
    out["model_version"] = "m:v1"
    out["arm"] = "primary"
    out["latency_ms"] = np.linspace(1.0, 100.0, n)
    out["request_id"] = [f"r{i}" for i in range(n)]
    out["timestamp"] = pd.Timestamp(start, tz="UTC") + pd.to_timedelta(np.arange(n) * seconds, unit="s")
    return ServedWindow(out, list(features))


def evaluate(served, splits, ctx, **config):
    return WhylogsDriftMonitor(WhylogsDriftMonitor.Config(**config)).evaluate(served, splits, ctx)


def test_held_out_rows_raise_no_alarm(splits, stage_ctx):
    """The quickstart's situation: held-out rows of the training distribution, 30 features."""
    ctx = stage_ctx("monitor")
    served = served_from(splits.test, splits.dataset.features)
    served.reference_outputs = {"m:v1": splits.train["target"].tolist()}
    report = evaluate(served, splits, ctx)

    m = report.metrics
    assert report.monitor == "whylogs_drift"
    assert report.alerts == [] and m["columns_drifted"] == 0
    assert m["rows_served"] == len(splits.test)
    assert m["columns_checked"] == 31  # 30 features and the predicted class
    assert m["min_p_adjusted"] > 0.05
    assert m["prediction_distribution"]["1"] == pytest.approx((splits.test["target"] == 1).mean())
    assert m["latency_p50_ms"] == pytest.approx(50.5)
    assert m["model_versions"] == ["m:v1"]
    assert report.artifacts == [REFERENCE_PROFILE, SERVED_PROFILE, DRIFT_FILE]
    drift = json.loads((ctx.out_dir / DRIFT_FILE).read_text())
    window, = drift["versions"]["m:v1"]["windows"]
    assert window["rows"] == len(splits.test) and window["drifted"] == []
    tests = {c["column"]: c for c in window["columns"]}
    assert tests["mean radius"]["test"] == "ks" and tests["prediction"]["test"] == "chi2"
    assert tests["prediction"]["role"] == "output"
    assert all(c["p_adjusted"] >= c["pvalue"] for c in window["columns"])


def test_a_half_sigma_shift_in_one_of_30_features_is_caught_and_only_it(stage_ctx):
    splits = gaussian_splits()
    rng = np.random.default_rng(11)
    rows = pd.DataFrame(rng.normal(size=(1000, 30)), columns=splits.dataset.features)
    rows["target"] = 0
    rows["x7"] += 0.5
    ctx = stage_ctx("monitor")
    report = evaluate(served_from(rows, splits.dataset.features), splits, ctx, outputs=False)

    assert report.metrics["drifted_columns"] == ["x7"]
    alert, = report.alerts
    assert "feature 'x7' of m:v1" in alert and "KS D" in alert and "since 2024-01-01T00:00:00" in alert
    drift = json.loads((ctx.out_dir / DRIFT_FILE).read_text())
    window, = drift["versions"]["m:v1"]["windows"]
    x7 = next(c for c in window["columns"] if c["column"] == "x7")
    assert x7["drifted"] and x7["p_adjusted"] < 1e-6
    assert 0.4 < x7["mean_shift_sd"] < 0.6  # by how much, in training standard deviations
    assert 0.12 < x7["effect"] < 0.3  # KS D


def test_windows_say_since_when(stage_ctx):
    splits = gaussian_splits(features=5)
    rng = np.random.default_rng(3)
    rows = pd.DataFrame(rng.normal(size=(1500, 5)), columns=splits.dataset.features)
    rows["target"] = 0
    rows.loc[1000:, "x2"] += 1.0  # the third window of 500 moved
    ctx = stage_ctx("monitor")
    # alpha 0.01 per window: an unshifted window alarms with probability <= 1% (seeded: none here)
    report = evaluate(served_from(rows, splits.dataset.features), splits, ctx, window_rows=500, outputs=False,
                      alpha=0.01)

    assert report.metrics["windows"] == 3 and report.metrics["drifted_columns"] == ["x2"]
    drift = json.loads((ctx.out_dir / DRIFT_FILE).read_text())
    windows = drift["versions"]["m:v1"]["windows"]
    assert [w["drifted"] for w in windows] == [[], [], ["x2"]]
    drifting, = drift["versions"]["m:v1"]["drifting"]
    assert drifting["since"] == windows[2]["start"] == "2024-01-01T00:16:40+00:00"
    assert drifting["ongoing"] and drifting["windows"] == 1
    assert 0.8 < drifting["mean_shift_sd"] < 1.2

    by_time = evaluate(served_from(rows, splits.dataset.features), splits, stage_ctx("monitor2"),
                       window_seconds=750, outputs=False, alpha=0.01)
    assert by_time.metrics["windows"] == 2


def test_outputs_and_categories(stage_ctx):
    """A model answering one class where it answered both on the training rows; a category whose
    mix moved: chi-square with TVD and PSI."""
    rng = np.random.default_rng(5)
    n = 3000
    frame = pd.DataFrame({"size": rng.normal(size=n), "colour": rng.choice(["red", "green", "blue"], n),
                          "target": rng.integers(0, 2, n)})
    ds = Dataset(name="toys", frame=frame, features=["size", "colour"], target="target", classes=[0, 1])
    splits = DataSplits(ds, frame, frame.iloc[:0], frame.iloc[:0])
    rows = pd.DataFrame({"size": rng.normal(size=800),
                         "colour": rng.choice(["red", "green", "blue", "pink"], 800, p=[0.6, 0.2, 0.1, 0.1]),
                         "target": 1})
    served = served_from(rows, ["size", "colour"])
    served.reference_outputs = {"m:v1": frame["target"].tolist()}
    ctx = stage_ctx("monitor")
    report = evaluate(served, splits, ctx)

    assert report.metrics["drifted_columns"] == ["colour", "prediction"]
    drift = json.loads((ctx.out_dir / DRIFT_FILE).read_text())
    tests = {c["column"]: c for c in drift["versions"]["m:v1"]["windows"][0]["columns"]}
    assert tests["colour"]["test"] == "chi2" and tests["colour"]["new_values"] == ["pink"]
    assert tests["colour"]["psi"] > 0.2 and 0.2 < tests["colour"]["effect"] < 0.4
    assert tests["prediction"]["role"] == "output" and tests["prediction"]["effect"] == pytest.approx(0.5, abs=0.03)
    assert any("output 'prediction' of m:v1" in a and "TVD" in a for a in report.alerts)


def test_reference_profile_is_stored_with_the_data_and_reused(splits, stage_ctx):
    store: dict[str, bytes] = {}

    def write(name, data):
        store[name] = data
        return f"mem://{name}"

    files = ReferenceFiles("breast_cancer:abc#train", store.get, write)
    served = served_from(splits.test, splits.dataset.features)
    served.reference_files = files
    first = stage_ctx("first")
    evaluate(served, splits, first)
    assert len(store) == 1
    drift = json.loads((first.out_dir / DRIFT_FILE).read_text())
    assert drift["reference"]["reused"] is False and drift["reference"]["data"] == "breast_cancer:abc#train"

    (name, data), = store.items()
    second = stage_ctx("second")
    evaluate(served, splits, second)
    drift = json.loads((second.out_dir / DRIFT_FILE).read_text())
    assert drift["reference"]["reused"] is True and drift["reference"]["profile"].endswith(name)
    assert store[name] == data


def test_profiles_are_real_whylogs_files(splits, stage_ctx):
    from plugins._whylogs_compat import why
    from whylogs.core import DatasetProfileView

    ctx = stage_ctx("monitor")
    evaluate(served_from(splits.test, splits.dataset.features), splits, ctx)

    ref = DatasetProfileView.read(str(ctx.out_dir / REFERENCE_PROFILE))
    assert set(ref.get_columns()) == set(splits.dataset.features)
    assert ref.get_column("mean radius").get_metric("counts").n.value == len(splits.train)
    served = why.read(str(ctx.out_dir / SERVED_PROFILE)).view()
    assert "mean radius" in served.get_columns()
    assert served.get_column("mean radius").get_metric("distribution").n == len(splits.test)


def test_columns_subset_and_config_errors(splits, stage_ctx):
    served = served_from(splits.test, splits.dataset.features)
    served.frame["mean radius"] += 3 * splits.train["mean radius"].std()
    report = evaluate(served, splits, stage_ctx("monitor"), columns=["mean radius", "mean texture"], alpha=0.001)
    assert report.metrics["columns_checked"] == 2
    assert report.metrics["drifted_columns"] == ["mean radius"]

    with pytest.raises(RecipeError, match="not features"):
        evaluate(served, splits, stage_ctx("monitor"), columns=["nope"])
    for bad, match in (({"alpha": 5.0}, "alpha"), ({"min_effect": -1.0}, "min_effect"), ({"family": "all"}, "family"),
                       ({"window_rows": 0}, "window_rows"), ({"window_rows": 5, "window_seconds": 3.0}, "not both")):
        with pytest.raises(RecipeError, match=match):
            WhylogsDriftMonitor(WhylogsDriftMonitor.Config(**bad))


def test_empty_window_and_missing_values(splits, stage_ctx):
    features = splits.dataset.features
    empty = served_from(splits.test.iloc[:0], features)
    report = evaluate(empty, splits, stage_ctx("monitor"))
    assert report.metrics["rows_served"] == 0 and report.metrics["columns_checked"] == 0
    assert any("empty" in a for a in report.alerts)

    served = served_from(splits.test, features)
    served.frame["mean radius"] = np.nan  # the client stopped sending it
    ctx = stage_ctx("monitor")
    report = evaluate(served, splits, ctx)
    assert report.metrics["drifted_columns"] == ["mean radius"]
    assert any("missing values of 'mean radius'" in a and "0.0% -> 100.0%" in a for a in report.alerts)


def test_registration_and_structured_config():
    assert register_monitors() == [WhylogsDriftMonitor]
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(WhylogsDriftMonitor.Config),
                                              {"columns": ["a"]}))
    assert cfg.columns == ["a"] and cfg.alpha == 0.05 and cfg.family == "window"


def test_plugin_modules_import_cheaply():
    """The core imports every plugin to list components: no heavy library at module import."""
    import subprocess
    import sys

    code = (
        "import sys, plugins.data_sklearn, plugins.check_pandera, plugins.monitor_whylogs\n"
        "heavy = [m for m in ('whylogs', 'pandera', 'sklearn', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_following_a_service_profiles_only_the_new_rows_and_merges(stage_ctx):
    from plugins.monitor_whylogs import PROFILES

    splits = gaussian_splits(features=4)
    rng = np.random.default_rng(8)
    rows = pd.DataFrame(rng.normal(size=(900, 4)), columns=splits.dataset.features)
    rows["target"] = 0
    rows.loc[600:, "x1"] += 1.0
    full = served_from(rows, splits.dataset.features)
    first = ServedWindow(full.frame.iloc[:600].copy(), list(full.features))

    PROFILES.entries.clear()
    before = PROFILES.rows_profiled
    evaluate(first, splits, stage_ctx("look1"), outputs=False)
    assert PROFILES.rows_profiled - before == 600
    middle = PROFILES.rows_profiled
    merged = evaluate(full, splits, stage_ctx("look2"), outputs=False)
    assert PROFILES.rows_profiled - middle == 300  # only the rows served since the last look

    PROFILES.entries.clear()  # the same window profiled in one go
    fresh = evaluate(full, splits, stage_ctx("fresh"), outputs=False)
    assert merged.metrics["drifted_columns"] == fresh.metrics["drifted_columns"] == ["x1"]
    a = json.loads((stage_ctx("look2").out_dir / DRIFT_FILE).read_text())["versions"]["m:v1"]["windows"][0]
    b = json.loads((stage_ctx("fresh").out_dir / DRIFT_FILE).read_text())["versions"]["m:v1"]["windows"][0]
    assert a["rows"] == b["rows"] == 900
    for x, y in zip(a["columns"], b["columns"]):  # merged sketches: equal within the sketch's rank error
        assert x["column"] == y["column"] and x["statistic"] == pytest.approx(y["statistic"], abs=0.01)
