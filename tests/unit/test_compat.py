"""Each work-around in framework/compat is still needed, and what it relies on still exists.

These fail on purpose when upstream changes: then remove (or rewrite) the work-around.
"""
from __future__ import annotations

import importlib.metadata
import inspect

import pytest


def test_ray_version_is_the_one_the_work_arounds_target():
    major_minor = tuple(int(x) for x in importlib.metadata.version("ray").split(".")[:2])
    assert major_minor >= (2, 50), "framework/compat was written against Ray 2.60; re-check every module there"


def test_ray_still_rewrites_loopback_into_the_routable_address():
    """ray_loopback exists because Ray turns 127.0.0.1 into the machine's routable address.
    Asked in a fresh interpreter: once Ray runs in a process it answers with that node's address."""
    import subprocess
    import sys

    code = ("import ray._private.services as s; "
            "print(s.get_node_ip_address(), s.resolve_ip_for_localhost('127.0.0.1'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    routable, resolved = done.stdout.split()[-2:]
    if routable in ("127.0.0.1", "::1"):
        pytest.skip("this machine has no routable address: Ray's rewrite cannot be told apart here")
    assert resolved == routable, (
        "Ray no longer rewrites 127.0.0.1: framework/compat/ray_loopback.py is not needed any more")


def test_loopback_patch_is_idempotent_and_leaves_other_hosts_alone():
    import ray._private.services as services

    from framework.compat.ray_loopback import keep_local_ray_on_loopback

    keep_local_ray_on_loopback()
    first = services.resolve_ip_for_localhost
    keep_local_ray_on_loopback()
    assert services.resolve_ip_for_localhost is first
    assert services.resolve_ip_for_localhost("10.1.2.3") == "10.1.2.3"
    with pytest.raises(ValueError):
        services.resolve_ip_for_localhost("")


def test_serve_still_has_no_public_way_to_read_its_http_options():
    """ray_serve exists because nothing public returns the running proxy's host and port."""
    from ray import serve

    public = [name for name in dir(serve) if not name.startswith("_")]
    for candidate in ("get_http_options", "http_options", "get_proxy_config", "proxy_options"):
        assert candidate not in public, (
            f"ray.serve.{candidate} exists now: use it in framework/compat/ray_serve.py instead of _get_global_client")


def test_the_private_serve_client_we_rely_on_still_exists():
    from ray.serve.context import _get_global_client

    assert "raise_if_no_controller_running" in inspect.signature(_get_global_client).parameters
