"""Faults in the served app under bounded load on loopback: a replica SIGKILLed during steady
load, the logging component restarted during a burst, and memory under feedback at the size
limit. Figures: success rate, time to recovery, records lost, memory growth."""
from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from conftest import scale
from framework.serving import shutdown_app
from framework.serving.recordlog import read_records
from serving_helpers import assert_loopback, deploy_app, replica_processes, steady_load

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def logged_ids(folder: str) -> set[str]:
    answers, _ = read_records(folder)
    return {a["request_id"] for a in answers}


def wait_logged(folder: str, wanted: set[str], timeout: float = 10.0) -> set[str]:
    """The answered ids still missing from the log once the writers had time to flush."""
    deadline = time.monotonic() + timeout
    missing = wanted - logged_ids(folder)
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = wanted - logged_ids(folder)
    return missing


def test_replica_killed_during_steady_load(ray_session, serve_port, tmp_path, figures):
    seconds = scale(8.0, 60.0)
    app = deploy_app(serve_port, tmp_path, "rel-kill", replicas=2)
    try:
        before = {p.pid for p in replica_processes(app.app_name)}
        assert len(before) == 2, before
        outcome: dict = {}
        load = threading.Thread(target=lambda: outcome.update(
            result=steady_load(app.predict_url, seconds, threads=3, rate_per_thread=10.0)))
        load.start()
        time.sleep(seconds / 3)
        victim = sorted(before)[0]
        killed_at = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        recovered_at = None
        while time.monotonic() - killed_at < 120:
            now = {p.pid for p in replica_processes(app.app_name)}
            if len(now - {victim}) == 2:
                try:
                    if httpx.get(app.url + "healthz", timeout=2, trust_env=False).status_code == 200:
                        recovered_at = time.monotonic()
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.1)
        load.join()
        result = outcome["result"]
        assert recovered_at is not None, "the killed replica was never replaced"
        missing = wait_logged(app.record_log, {rid for _, rid in result.answered})
        success = result.ok / max(result.sent, 1)
        figures.update(
            seconds=seconds, requests=result.sent, ok=result.ok, failed=result.failed, statuses=result.statuses,
            success_rate=round(success, 5), first_attempt_failures=result.retried,
            first_attempt_success_rate=round((result.sent - result.retried) / max(result.sent, 1), 5), recovery_s=round(recovered_at - killed_at, 2),
            failures_after_kill_s=[round(t - killed_at, 2) for t, _ in result.failures][:20],
            answered_not_in_record_log=len(missing),
        )
        assert result.sent >= seconds * 15  # the load really ran
        assert success >= 0.99, figures  # goal 99.9 %: the figure is in benchmarks/RESULTS.md
        # answers acknowledged by the killed replica less than a flush interval before the kill
        # may be missing (the write is off the request path); nothing else may be
        assert len(missing) <= 5, figures
    finally:
        shutdown_app(app)


def test_burst_with_the_logging_component_restarted_loses_no_record(shared_app, figures):
    n = scale(600, 10_000)
    app = shared_app
    assert_loopback(app.url)
    restarts = []
    stop = threading.Event()

    def restart_logger():
        with httpx.Client(timeout=30, trust_env=False) as client:
            while not stop.wait(0.3):
                r = client.post(app.url + "-/admin/record-log/restart", headers=app.admin_headers())
                assert r.status_code == 200, r.text
                restarts.append(r.json()["record_log"]["restarts"])

    try:
        restarter = threading.Thread(target=restart_logger)
        restarter.start()
        started = time.monotonic()
        try:
            result = steady_load(app.predict_url, seconds=600, threads=6, rate_per_thread=1000.0, max_requests=n,
                                 headers=app.client_headers())
        finally:
            stop.set()
            restarter.join()
        elapsed = time.monotonic() - started
        missing = wait_logged(app.record_log, {rid for _, rid in result.answered})
        figures.update(requests=result.sent, ok=result.ok, seconds=round(elapsed, 1),
                       logger_restarts=len(restarts), records_lost=len(missing))
        assert result.ok == n and len(restarts) >= 2
        assert not missing, f"{len(missing)} answered requests are not in the record log"
    finally:
        stop.set()


def test_memory_of_a_replica_under_feedback_at_the_size_limit(shared_app, figures):
    from framework.serving.requests import MAX_LABEL_CHARS

    n = scale(500, 10_000)
    app = shared_app
    (replica,) = replica_processes(app.app_name)
    served = steady_load(app.predict_url, seconds=600, threads=6, rate_per_thread=1000.0, max_requests=n,
                         headers=app.client_headers())
    ids = [rid for _, rid in served.answered]
    assert len(ids) == n
    with httpx.Client(timeout=30, trust_env=False) as client:
        time.sleep(0.5)
        rss_before = replica.memory_info().rss
        label = "x" * MAX_LABEL_CHARS
        for start in range(0, n, 500):
            items = [{"request_id": rid, "label": label, "reward": 1.0} for rid in ids[start:start + 500]]
            r = client.post(app.feedback_url, json={"feedback": items}, headers=app.client_headers())
            assert r.status_code == 200 and r.json()["accepted"] == len(items), r.text
        time.sleep(0.5)
        rss_after = replica.memory_info().rss
        snapshot = client.get(app.url + "-/strategy", headers=app.admin_headers())
    growth_mb = (rss_after - rss_before) / 2**20
    figures.update(feedback_items=n, label_chars=MAX_LABEL_CHARS, rss_before_mb=round(rss_before / 2**20, 1),
                   rss_after_mb=round(rss_after / 2**20, 1), growth_mb=round(growth_mb, 1),
                   strategy_snapshot_bytes=len(snapshot.content))
    assert growth_mb < 50, figures
    assert len(snapshot.content) < 20_000
