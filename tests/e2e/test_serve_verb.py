"""`python -m framework serve` keeps serving until Ctrl-C, on an existing Ray cluster (ray.address)
with the version store behind an fsspec URL."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[2]


def test_serve_verb_serves_until_interrupted_on_an_existing_cluster(ray_session, serve_port, tmp_path):
    import ray

    address = ray.get_runtime_context().gcs_address
    cmd = [
        sys.executable, "-m", "framework", "serve", "+recipe=quickstart",
        f"ray.address={address}", "store.uri=memory://serve-verb-test", f"runs_dir={tmp_path}",
        f"serve.port={serve_port}", "train.num_samples=1", "train.max_epochs=5", "online_eval.rows=10",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    url = f"http://127.0.0.1:{serve_port}/predict"
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            lines.append(line)
            if line.startswith("serving at http"):
                break
        output = "".join(lines)
        assert "serving at http" in output, output
        # Still serving after the run finished: a real prediction over HTTP.
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        row = {str(n): float(v) for n, v in zip(data.feature_names, data.data[0])}
        answer = httpx.post(url, json={"instances": [row]}, timeout=10).json()
        assert answer["predictions"] == [int(data.target[0])]
        assert answer["model_version"].startswith("breast_cancer_mlp:")
        time.sleep(2.0)
        assert proc.poll() is None, "serve verb exited instead of serving"
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output + rest
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{serve_port}/healthz", timeout=5).raise_for_status()
    summary = next(tmp_path.glob("*-quickstart")) / "summary.json"
    assert '"status": "ok"' in summary.read_text()
