"""The Ray Data batch job on a two-node Ray: a second node (1 CPU) joins the session's cluster for
this test (``ray start --address ... --block`` on loopback, its own temp dir, so no other Ray on the machine
can take it for the default cluster), and a job of 3 one-CPU actors needs both nodes' CPUs. The
answers are those of the in-process predictor; the stopped node's processes are ours alone."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from framework.testing import make_stage_context
from plugins.batch_onnx import OnnxBatchPredictor
from plugins.batch_ray import RayDataBatchPredictor

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


@pytest.fixture(scope="module")
def second_node(ray_session, tmp_path_factory):
    import ray

    # the session's Ray listens on loopback only, whatever address it reports
    gcs = "127.0.0.1:" + ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    before = len(alive_nodes())
    temp_dir = Path("/tmp") / f"fw-2node-{os.getpid()}"  # short: Ray's socket paths have a length limit
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    if (Path.home() / ".ray" / "auth_token").exists() and "RAY_AUTH_MODE" not in os.environ:
        env["RAY_AUTH_MODE"] = "token"  # the session's local Ray has token authentication on
    # `ray start`, with loopback kept as loopback (Ray would swap 127.0.0.1 for the machine's
    # address, where the session's Ray does not listen): framework/compat/ray_loopback.py
    ray_cli = ("from framework.compat.ray_loopback import keep_local_ray_on_loopback; keep_local_ray_on_loopback(); "
               "import sys; sys.argv[0] = 'ray'; from ray.scripts.scripts import main; main()")
    log = open(tmp_path_factory.mktemp("node") / "ray-start.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-c", ray_cli, "start", "--address", gcs, "--num-cpus", "1", "--node-ip-address", "127.0.0.1",
         "--temp-dir", str(temp_dir), "--disable-usage-stats", "--block"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while len(alive_nodes()) <= before and time.monotonic() < deadline:
            assert proc.poll() is None, Path(log.name).read_text()[-2000:]
            time.sleep(0.5)
        assert len(alive_nodes()) == before + 1, Path(log.name).read_text()[-2000:]
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the node we started, and only it
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()
        deadline = time.monotonic() + 60
        while len(alive_nodes()) > before and time.monotonic() < deadline:
            time.sleep(0.5)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_batch_job_runs_on_both_nodes(second_node, tmp_path):
    import ray

    from framework.testing import BatchPredictorContract

    class Kit(BatchPredictorContract):
        predictor_cls = RayDataBatchPredictor

    splits = Kit().make_splits()
    exported = Kit().make_exported(splits, tmp_path / "model")
    # enough blocks that an actor still starting on the second node gets some (actors join the
    # pool as they become ready)
    frame = splits.dataset.frame.sample(n=200_000, replace=True, random_state=0)
    assert ray.cluster_resources()["CPU"] >= 3 and len(alive_nodes()) >= 2
    ctx = make_stage_context(tmp_path, "batch")
    # 3 actors of 1 CPU: more than either node has, so both nodes score rows
    config = RayDataBatchPredictor.Config(batch_size=500, num_cpus=1, concurrency=3, block_rows=2000)
    result = RayDataBatchPredictor(config).predict(exported, frame, ctx)
    assert ctx.metrics["nodes"] == 2, ctx.metrics
    expected = OnnxBatchPredictor().predict(exported, frame, ctx)
    assert result["prediction"].tolist() == expected.tolist() and result.index.equals(frame.index)


def test_a_recipe_runs_its_batch_job_on_an_existing_two_node_cluster(second_node, serve_port, tmp_path):
    """``ray.address=`` hands the whole run to the cluster: the news-feed recipe trains, serves,
    scores with Ray Data and serves lookups from the table. Its actors are placed on both nodes
    (5 of 0.5 CPU: more than the head's 2 CPUs hold), but its 1,537 rows may all be scored before
    the second node's actor is ready (actors join the pool as they start): that both nodes score
    is the test above's, on 200,000 rows."""
    import json

    import ray

    root = Path(__file__).resolve().parents[2]
    address = "127.0.0.1:" + ray.get_runtime_context().gcs_address.rsplit(":", 1)[1]
    cmd = [sys.executable, "-m", "framework", "run", "+recipe=news_feed", f"ray.address={address}",
           f"data.path={root / 'recipes' / 'data' / 'feed_users.csv'}", f"store.uri={tmp_path / 'store'}",
           f"runs_dir={tmp_path / 'runs'}", f"serve.port={serve_port}", "train.num_samples=1", "train.max_epochs=3",
           "online_eval.rows=10", "batch.num_cpus=0.5", "batch.concurrency=5", "batch.block_rows=100", "batch.lookup.probe_requests=50"]
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    batch = next(s for s in summary["stages"] if s["stage"] == "batch")
    assert batch["status"] == "ok" and batch["metrics"]["nodes"] >= 1, batch
    assert batch["metrics"]["lookup_requests"] == 50 and batch["metrics"]["prediction_table"].startswith("news_feed:")
