"""A monitoring window survives a replica restart: the rows the monitor stage reads (the record
log, deduplicated by request id, joined with the ingress's buffer, which the restarted replica
refilled from the same log) hold every answered request once, before and after a SIGKILL."""
from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from framework.context import RunStageContext
from framework.serving import shutdown_app
from framework.stages.monitor import served_rows
from serving_helpers import FEATURES, body, deploy_app, replica_processes
from test_serving_faults import wait_logged

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_the_window_survives_a_replica_sigkill(ray_session, serve_port, tmp_path, figures):
    app = deploy_app(serve_port, tmp_path / "records", "rel-monitor", admin_token="admin-token-of-the-monitor-test")
    try:
        with httpx.Client(timeout=30, trust_env=False) as client:
            def send(start: int, n: int) -> set[str]:
                ids = set()
                for i in range(start, start + n):
                    r = client.post(app.predict_url, json=body(i))
                    assert r.status_code == 200, r.text
                    ids.add(r.json()["request_id"])
                return ids

            before = send(0, 40)
            assert not wait_logged(app.record_log, before)  # flushed: a kill now loses nothing
            victim, = replica_processes(app.app_name)
            killed_at = time.monotonic()
            os.kill(victim.pid, signal.SIGKILL)
            while True:  # the replacement answers (the published URL follows it)
                assert time.monotonic() - killed_at < 120, "the killed replica was never replaced"
                try:
                    if client.get(app.url + "healthz", timeout=2).status_code == 200 and \
                            {p.pid for p in replica_processes(app.app_name)} - {victim.pid}:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            after = send(1000, 40)

        frame = served_rows(app, list(FEATURES), RunStageContext("monitor", tmp_path / "monitor"))
        seen = frame["request_id"].tolist()
        figures.update(answered=len(before | after), rows_seen=len(seen), recovery_s=round(time.monotonic() - killed_at, 1))
        assert len(seen) == len(set(seen)) == 80  # each answered request once, no double from log + buffer
        assert set(seen) == before | after
        assert frame["timestamp"].is_monotonic_increasing
        assert not frame[list(FEATURES)].isna().any().any()
    finally:
        shutdown_app(app)
