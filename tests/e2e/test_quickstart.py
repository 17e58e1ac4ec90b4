"""The quickstart recipe end to end: real Ray Tune, real ONNX Runtime, real Ray Serve over HTTP."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import numpy as np
import pytest

from framework import DataSource, Dataset, hookimpl
from framework.errors import DataCheckError
from framework.plugins import Components, get_plugin_manager
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


class Recorder:
    """A lifecycle-hook plugin: records every event and pokes the live endpoint mid-run."""

    def __init__(self):
        self.events: list[tuple] = []
        self.bad_request: dict | None = None
        self.explained: dict | None = None
        self.endpoint: str | None = None

    @hookimpl
    def on_plan_created(self, plan):
        self.events.append(("plan", plan.recipe.name))

    @hookimpl
    def on_stage_started(self, stage, component):
        self.events.append(("start", stage))

    @hookimpl
    def on_stage_finished(self, stage, component, status, seconds, metrics):
        self.events.append(("finish", stage, status))
        if stage == "online_eval":  # the app is still up: a malformed request must get a 4xx
            url = self.endpoint
            resp = httpx.post(url, json={"instances": [{"mean radius": "big"}]}, timeout=10)
            self.bad_request = {"status": resp.status_code, "body": resp.json()}
            from sklearn.datasets import load_breast_cancer

            data = load_breast_cancer()
            row = {str(n): float(v) for n, v in zip(data.feature_names, data.data[0])}
            self.explained = httpx.post(url, json={"instances": [row], "explain": True}, timeout=10).json()

    @hookimpl
    def on_data_versioned(self, version):
        self.events.append(("data_version", version.id))

    @hookimpl
    def on_model_registered(self, version):
        self.events.append(("model_version", version.id))

    @hookimpl
    def on_alert_raised(self, monitor, alert):
        self.events.append(("alert", monitor))

    @hookimpl
    def on_run_finished(self, run_dir, summary):
        self.events.append(("run_finished", summary["status"]))

    @hookimpl
    def on_rollout_decided(self, decision, strategy):
        self.events.append(("rollout", strategy))


@pytest.fixture(scope="module")
def quickstart(ray_session, serve_port, tmp_path_factory):
    base = tmp_path_factory.mktemp("quickstart")
    recorder = Recorder()
    pm = get_plugin_manager(extra=[recorder])
    components = Components.collect(pm)
    overrides = [
        "+recipe=quickstart",
        f"store.uri={base / 'store'}",
        f"runs_dir={base / 'runs'}",
        f"serve.port={serve_port}",
    ]
    plan = plan_recipe(overrides, components)
    recorder.endpoint = f"http://127.0.0.1:{serve_port}/predict"
    result = execute(plan, components, Reporter(quiet=True))
    return result, recorder, base


def test_every_stage_green_and_accurate(quickstart):
    result, _, _ = quickstart
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "ok"
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    for stage in ("data", "checks", "version", "train", "export", "register", "serve", "online_eval", "monitor"):
        assert status[stage] == "ok", (stage, summary)
    metrics = {s["stage"]: s["metrics"] for s in summary["stages"]}
    assert metrics["train"]["test_accuracy"] >= 0.95
    assert metrics["train"]["trials"] == 4
    assert metrics["export"]["max_abs_diff"] <= 1e-4
    assert metrics["online_eval"]["agreement"] == 1.0
    assert metrics["online_eval"]["max_abs_diff"] <= 1e-5
    assert metrics["online_eval"]["rows_sent"] == 85


def test_run_directory_holds_recipe_log_artifacts_and_metrics(quickstart):
    result, _, _ = quickstart
    run_dir = result.run_dir
    assert "name: quickstart" in (run_dir / "recipe.yaml").read_text()
    assert "run " in (run_dir / "run.log").read_text()
    stages = {p.name.split("-", 1)[1]: p for p in (run_dir / "stages").iterdir()}
    assert (stages["export"] / "model.onnx").stat().st_size > 1000
    assert (stages["checks"] / "reports.json").exists()
    drift = json.loads((stages["monitor"] / "drift.json").read_text())
    assert drift, "drift summary is empty"
    assert list(stages["monitor"].glob("*.bin")), "no whylogs profile written"
    comparison = json.loads((stages["online_eval"] / "comparison.json").read_text())
    assert comparison["served_predictions"] == comparison["offline_predictions"]


def test_versions_and_lineage_are_stored(quickstart):
    result, _, base = quickstart
    registry = Registry(str(base / "store"))
    model = registry.get("breast_cancer_mlp@prod")
    assert set(model.aliases) >= {"prod", "latest"}
    assert model.lineage["data_version"] == result.state.data_version.id
    assert model.lineage["recipe_hash"] == result.summary["recipe_hash"]
    assert model.metrics["test_accuracy"] >= 0.95
    data = registry.get(result.state.data_version.id, kind="data")
    frame = registry.load_frame(data)
    assert len(frame) == 569


def test_lifecycle_hooks_fired_in_order(quickstart):
    _, recorder, _ = quickstart
    names = [e[0] for e in recorder.events]
    assert names[0] == "plan"
    assert names[-1] == "run_finished" and recorder.events[-1][1] == "ok"
    started = [e[1] for e in recorder.events if e[0] == "start"]
    assert started == ["data", "checks", "version", "features", "train", "export", "register", "serve", "online_eval", "monitor"]
    assert names.index("data_version") < names.index("model_version")


def test_malformed_request_got_a_4xx_naming_the_field(quickstart):
    _, recorder, _ = quickstart
    bad = recorder.bad_request
    assert bad is not None and 400 <= bad["status"] < 500
    assert "mean radius" in bad["body"]["error"]["field"] or "instances[0]" in bad["body"]["error"]["field"]


def test_serving_shut_down_after_the_run(quickstart, serve_port):
    with pytest.raises(httpx.HTTPError):
        resp = httpx.get(f"http://127.0.0.1:{serve_port}/healthz", timeout=5)
        resp.raise_for_status()


# ----- a failing data check stops the run before training, naming column, check and rows -----
class DirtySource(DataSource):
    name = "dirty_breast_cancer"

    @dataclass
    class Config:
        nan_rows: int = 3

    def load(self, ctx):
        from sklearn.datasets import load_breast_cancer

        raw = load_breast_cancer(as_frame=True)
        frame = raw.frame.copy()
        frame.columns = [str(c) for c in frame.columns]
        frame.loc[frame.index[: self.config.nan_rows], "mean texture"] = float("nan")
        features = [c for c in frame.columns if c != "target"]
        return Dataset("dirty", frame, features, "target", classes=[0, 1])


class DirtyPlugin:
    @hookimpl
    def register_data_sources(self):
        return [DirtySource]


def test_failing_check_stops_the_run_naming_column_check_and_rows(tmp_path):
    components = Components.collect(get_plugin_manager(extra=[DirtyPlugin()]))
    # switching the component drops the default group's `dataset` option (no `~data.dataset` needed)
    plan = plan_recipe(["+recipe=quickstart", "data.type=dirty_breast_cancer", f"runs_dir={tmp_path}",
                        f"store.uri={tmp_path / 'store'}"], components)
    assert plan.stage("data").component.type == "dirty_breast_cancer"
    with pytest.raises(DataCheckError) as info:
        execute(plan, components, Reporter(quiet=True))
    msg = str(info.value)
    assert "mean texture" in msg and "0" in msg
    run_dir = next(tmp_path.glob("*-quickstart"))
    summary = json.loads((run_dir / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert summary["status"] == "failed" and status["checks"] == "failed" and "train" not in status
    assert not (tmp_path / "store" / "versions").exists() or not list((tmp_path / "store").rglob("*.onnx"))


def test_explanations_and_model_card(quickstart):
    result, recorder, base = quickstart
    explanation = recorder.explained["explanations"][0]
    assert len(explanation) == 10 and all(isinstance(f, str) and isinstance(v, float) for f, v in explanation)
    magnitudes = [abs(v) for _, v in explanation]
    assert magnitudes == sorted(magnitudes, reverse=True)
    registry = Registry(str(base / "store"))
    version = registry.get("breast_cancer_mlp@prod")
    card = json.loads(registry.read_file(version, "model_card.json"))
    assert card["data_version"] == result.state.data_version.ref
    assert set(card["slices"]) == {"large_masses", "small_masses"}
    assert sum(s["n"] for s in card["slices"].values()) == len(result.state.splits.test)
    assert len(card["feature_importance"]) == 30 and "not validated for clinical use" in " ".join(card["limitations"])
    assert "malignant" in registry.read_file(version, "model_card.md").decode() or "Wisconsin" in registry.read_file(version, "model_card.md").decode()


def test_in_distribution_traffic_raises_no_drift_alarm(quickstart):
    """Held-out rows of the training distribution, 30 features and the output tested: Holm keeps
    the chance of any alarm in the window at alpha (0.05), so the shipped demo must not alarm."""
    result, recorder, base = quickstart
    summary = json.loads((result.run_dir / "summary.json").read_text())
    stage = next(s for s in summary["stages"] if s["stage"] == "monitor")
    assert stage["status"] == "ok", stage
    monitor = stage["metrics"]
    stages = {p.name.split("-", 1)[1]: p for p in (result.run_dir / "stages").iterdir()}
    assert monitor["alerts"] == 0, (stages["monitor"] / "reports.json").read_text()[:3000]
    assert monitor["columns_drifted"] == 0, monitor
    assert monitor["columns_checked"] == 31  # 30 features and the predicted class
    assert not [e for e in recorder.events if e[0] == "alert"]
    drift = json.loads((stages["monitor"] / "drift.json").read_text())
    (version, served), = drift["versions"].items()
    assert version in result.state.app.models.values() and served["outputs_tested"]
    # the reference profile is stored with the training data version, for the next run to reuse
    assert drift["reference"]["data"].startswith(result.state.data_version.ref)
    stored = list((base / "store" / "derived" / "data").rglob("*.bin"))
    assert len(stored) == 1 and drift["reference"]["reused"] is False


def test_monitor_verb_reads_the_record_log_and_catches_a_shift(quickstart, tmp_path, capsys):
    """``python -m framework monitor`` on the deployment's durable record log (off the request
    path): the same rows, deduplicated by request id (a replayed segment, as a restarted replica
    may leave, adds nothing), against the reference the run stored; then a log of shifted
    traffic, in windows, caught with since-when."""
    from framework.cli import main
    from framework.serving.recordlog import SUFFIX, encode, read_records

    result, _, base = quickstart
    overrides = ["+recipe=quickstart", f"store.uri={base / 'store'}", f"runs_dir={tmp_path / 'runs'}"]
    app_logs = base / "store" / "records" / "quickstart"
    records, = [p for p in app_logs.iterdir() if p.is_dir()]
    answers, _ = read_records(records)
    segment = next(p for p in records.iterdir() if p.name.endswith(SUFFIX))
    (records / f"zz-replayed{SUFFIX}").write_bytes(segment.read_bytes())  # every answer twice on disk

    assert main(["monitor", *overrides, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["records"] == str(records) and out["answers"] == len(answers)
    assert out["rows"] == sum(len(a["rows"]) for a in answers) >= 85
    drift_report, performance = out["reports"]
    assert drift_report["alerts"] == [] and drift_report["metrics"]["columns_checked"] == 31
    # before any label: the accuracy estimated from the calibrated confidence, near the model's
    assert performance["alerts"] == [] and performance["metrics"]["labels"] == 0
    (estimate,) = performance["metrics"]["estimated_accuracy_by_version"].values()
    assert 0.85 < estimate <= 1.0
    drift = json.loads((tmp_path / "runs").glob("*-monitor-quickstart").__next__().joinpath("drift.json").read_text())
    assert drift["reference"]["reused"] is True  # the profile the run stored with the data version

    # shifted traffic of the served version: 3 windows of 120 rows, 'mean radius' +1 sd in the last two
    rng = np.random.default_rng(0)
    test = result.state.splits.test
    features = list(result.state.splits.dataset.features)
    version = next(iter(result.state.app.models.values()))
    spread = result.state.splits.train["mean radius"].std()
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    lines = []
    for i in range(360):
        row = test.iloc[int(rng.integers(len(test)))][features].astype(float).tolist()
        if i >= 120:
            row[features.index("mean radius")] += spread
        lines.append(encode({"type": "answer", "request_id": f"s{i}", "time": 1_700_000_000.0 + i, "kind": "predict",
                             "arm": "primary", "model_version": version, "latency_ms": 0.5, "rows": [row],
                             "predictions": [1], "prediction": 1}))
    (shifted / f"0001{SUFFIX}").write_bytes(b"".join(lines))
    # the recipe's actions act on the verb's alerts: a webhook to a loopback receiver, with the evidence
    received: list = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_port}/alerts"
    try:
        assert main(["monitor", *overrides, f"records={shifted}", "+monitor.0.window_rows=120", "+monitor.0.outputs=false",
                     f"+actions=[{{type: webhook, url: '{hook}', on: [drift], cooldown_s: 600}}]"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    text = capsys.readouterr().out
    assert "ALERT drift in feature 'mean radius'" in text and "since 2023-11-14T22:15:20+00:00 (2 windows)" in text
    assert text.count("mean radius") >= 3  # two windows list it, and the alert
    assert "ACTION webhook done on drift alert" in text
    assert len(received) == 1 and received[0]["kind"] == "drift" and "mean radius" in received[0]["message"]
    assert received[0]["evidence"]["columns_drifted"] >= 1


def chromium() -> str | None:
    import shutil

    return shutil.which("chromium-headless-shell") or shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page, out):
    """The page rendered by headless Chromium, offline (every host name unresolvable)."""
    import subprocess

    exe = chromium()
    if exe is None:
        pytest.skip("no headless Chromium: `make browser` installs chromium-headless-shell")
    subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--host-resolver-rules=MAP * ~NOTFOUND", f"--screenshot={out}", "--window-size=1000,2600",
                    page.as_uri()], check=True, capture_output=True, timeout=120)
    from PIL import Image

    return Image.open(out).convert("RGB")


def coloured_pixels(image, rgb, tolerance: int = 6) -> int:
    import numpy as np

    a = np.asarray(image).astype(int)
    return int((np.abs(a - np.asarray(rgb)).max(axis=2) <= tolerance).sum())


def test_the_html_report_renders_in_a_real_browser(quickstart, tmp_path):
    """The run's monitoring report: one self-contained page (nothing fetched from any network),
    opened in headless Chromium; its plots are drawn (the series colours are on screen)."""
    result, _, _ = quickstart
    stages = {p.name.split("-", 1)[1]: p for p in (result.run_dir / "stages").iterdir()}
    page = stages["monitor"] / "report.html"
    text = page.read_text()
    assert "src=" not in text and "href=" not in text and "<script" not in text  # self-contained, offline
    for panel in ("drift", "accuracy", "latency", "traffic"):
        assert f'data-panel="{panel}"' in text, panel
    assert "No alert" in text and "Drift table: whylogs_drift" in text, (stages["monitor"] / "reports.json").read_text()[:3000]

    image = screenshot(page, tmp_path / "report.png")
    assert image.size == (1000, 2600)
    blue, orange = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)  # the first two series colours
    assert coloured_pixels(image, blue) > 400 and coloured_pixels(image, orange) > 200
    assert coloured_pixels(image, (255, 255, 255)) < 0.97 * 1000 * 2600  # not a blank page
