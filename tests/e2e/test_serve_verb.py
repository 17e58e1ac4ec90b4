"""`python -m framework serve` keeps serving until Ctrl-C, on an existing Ray cluster (ray.address)
with the version store behind an fsspec URL; the first Ctrl-C stops it within seconds."""
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
    proxy_url = f"http://127.0.0.1:{serve_port}/predict"
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
        url = line.split()[2]  # the direct ingress: the replica's own port, on loopback
        assert url.startswith("http://127.0.0.1:") and url.endswith("/predict") and url != proxy_url, line
        # Still serving after the run finished: a real prediction over HTTP.
        from sklearn.datasets import load_breast_cancer

        data = load_breast_cancer()
        row = {str(n): float(v) for n, v in zip(data.feature_names, data.data[0])}
        answer = httpx.post(url, json={"instances": [row]}, timeout=10).json()
        assert answer["predictions"] == [int(data.target[0])]
        assert answer["model_version"].startswith("breast_cancer_mlp:")
        assert httpx.post(proxy_url, json={"instances": [row]}, timeout=10).json()["predictions"] == answer["predictions"]
        time.sleep(2.0)
        assert proc.poll() is None, "serve verb exited instead of serving"
        stopping = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
        stop_s = time.monotonic() - stopping
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output + rest
    assert stop_s < 15, f"the first Ctrl-C took {stop_s:.1f} s to stop serving"  # ≈ 3 s measured here
    for gone in (url.replace("/predict", "/healthz"), f"http://127.0.0.1:{serve_port}/healthz"):
        with pytest.raises(httpx.HTTPError):
            httpx.get(gone, timeout=5).raise_for_status()
    summary = next(tmp_path.glob("*-quickstart")) / "summary.json"
    assert '"status": "ok"' in summary.read_text()
