"""Shared fixtures: one Ray instance and one Serve HTTP port for the whole test session."""
from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_session():
    """Start Ray once (2 CPUs, no dashboard, loopback) and shut it down at the end."""
    from framework.engine import start_ray, stop_ray

    start_ray(num_cpus=2)
    yield
    try:
        from ray import serve

        serve.shutdown()
    except Exception:
        pass
    stop_ray()


@pytest.fixture(scope="session")
def serve_port(ray_session) -> int:
    """The loopback port Ray Serve's HTTP proxy listens on for this session (fixed once started)."""
    return int(os.environ.get("FRAMEWORK_TEST_SERVE_PORT") or _free_port())


@pytest.fixture
def stage_ctx(tmp_path):
    from framework.context import RunStageContext

    def make(stage: str = "test", seed: int = 0) -> RunStageContext:
        return RunStageContext(stage=stage, out_dir=tmp_path / stage, seed=seed)

    return make
