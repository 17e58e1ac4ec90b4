"""The reliability suite: bounded load on loopback only, faults injected on purpose.

``make test`` runs the short variant (about a minute in all); ``make reliability`` runs the full
one (``FRAMEWORK_RELIABILITY=full``: 60 s of steady load around a replica kill, a 10k-request
burst, thousands of fuzzed inputs). Every test records its figures; the session prints them and
writes them to ``.framework/reliability/figures-<mode>.json`` (the source of benchmarks/RESULTS.md).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

FULL = os.environ.get("FRAMEWORK_RELIABILITY", "short") == "full"
MODE = "full" if FULL else "short"
ROOT = Path(__file__).resolve().parents[2]
_FIGURES: dict[str, dict] = {}


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)


def scale(short, full):
    """The short variant's value, or the full one's under ``make reliability``."""
    return full if FULL else short


#: the client token of the shared app (predict, rank and feedback need it)
CLIENT_TOKEN = "client-token-of-the-reliability-app"


@pytest.fixture(scope="module")
def shared_app(ray_session, serve_port, tmp_path_factory):
    """One app per module (one ingress replica, record log on, a client token) for the tests that
    need no app of their own. Not per session: a replica holds half a CPU of the session's Ray
    until it is removed, and later Tune tests need both CPUs."""
    from framework.serving import shutdown_app
    from serving_helpers import assert_loopback, deploy_app

    app = deploy_app(serve_port, tmp_path_factory.mktemp("records"), "rel-shared", client_token=CLIENT_TOKEN)
    assert_loopback(app.url)
    yield app
    shutdown_app(app)


@pytest.fixture
def figures(request):
    """A dict the test fills with its measured figures."""
    found: dict = {}
    yield found
    if found:
        _FIGURES[request.node.name] = {"mode": MODE, **found}


def pytest_sessionfinish(session, exitstatus):
    if not _FIGURES:
        return
    folder = ROOT / ".framework" / "reliability"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"figures-{MODE}.json"
    previous = json.loads(path.read_text()) if path.is_file() else {}
    previous.update({name: {**f, "at": time.strftime("%Y-%m-%d %H:%M:%S")} for name, f in _FIGURES.items()})
    path.write_text(json.dumps(previous, indent=2, default=str))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"reliability figures ({MODE}) -> {path}")
        for name, f in _FIGURES.items():
            reporter.write_line(f"  {name}: {json.dumps(f, default=str)}")
