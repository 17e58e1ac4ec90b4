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


# ---------------------------------------------------------------------------------------------
# ray_direct_ingress: direct ingress is a feature flag read from the environment
# ---------------------------------------------------------------------------------------------
def _serve_constants(env: dict[str, str], names: list[str]) -> dict:
    """Ray Serve's constants as a fresh interpreter with ``env`` reads them (they are read at import)."""
    import json
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("RAY_SERVE_")}
    code = ("import json; from ray.serve._private import constants as c; "
            f"print(json.dumps({{n: getattr(c, n) for n in {names!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_direct_ingress_is_still_off_by_default_with_a_30_s_drain():
    """ray_direct_ingress exists because direct ingress is opt-in and drains stopping replicas 30 s."""
    found = _serve_constants({}, ["RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
                                  "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"])
    assert found["RAY_SERVE_ENABLE_DIRECT_INGRESS"] is False, (
        "direct ingress is Ray Serve's default now: drop the flag from framework/compat/ray_direct_ingress.py")
    assert found["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] >= 10, "the long drain is gone: drop our override"
    assert found["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] is True, "user code shares the loop by default now"


def test_the_direct_ingress_flags_we_set_are_still_read():
    from framework.compat.ray_direct_ingress import MIN_DRAINING_PERIOD_S, replica_runtime_env

    found = _serve_constants(replica_runtime_env()["env_vars"], [
        "RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S",
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD", "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH",
    ])
    assert found == {
        "RAY_SERVE_ENABLE_DIRECT_INGRESS": True,
        "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": MIN_DRAINING_PERIOD_S,
        "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": False,
        "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "framework.compat.ray_direct_ingress:replica_server_setup",
    }
    autoscaled = _serve_constants(replica_runtime_env(same_loop=False)["env_vars"],
                                  ["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"])
    assert autoscaled["RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD"] is True
    off = _serve_constants(replica_runtime_env(direct=False)["env_vars"], ["RAY_SERVE_ENABLE_DIRECT_INGRESS"])
    assert off["RAY_SERVE_ENABLE_DIRECT_INGRESS"] is False


def test_the_controller_takes_our_env_vars_and_lists_replica_ports():
    from ray.serve._private.controller import ServeController
    from ray.serve.config import ControllerOptions
    from ray.serve.schema import Target, TargetGroup

    from framework.compat.ray_direct_ingress import controller_options

    ControllerOptions(**controller_options())  # Serve still accepts (only) env_vars for its controller
    assert "app_name" in inspect.signature(ServeController.get_target_groups).parameters
    assert {"ip", "port", "name"} <= set(Target.model_fields)
    assert {"targets", "app_name", "protocol"} <= set(TargetGroup.model_fields)


def test_direct_ingress_sockets_still_lack_so_reuseaddr():
    """The SO_REUSEADDR shim exists because Ray makes the replica's listening socket without it."""
    from ray.serve._private import http_util

    source = inspect.getsource(http_util.start_asgi_http_server)
    assert "socket.socket(" in source, "Ray no longer makes the socket there: re-check replica_server_setup"
    assert "SO_REUSEADDR" not in source, (
        "Ray sets SO_REUSEADDR itself now: drop replica_server_setup and RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH")


def test_replica_server_setup_makes_reusable_sockets_and_adds_no_middleware():
    import socket
    import subprocess
    import sys

    code = (
        "import socket; from ray.serve._private import http_util as h; "
        "from framework.compat.ray_direct_ingress import replica_server_setup as s; "
        "assert s() == [] and s() == []; "
        "assert h.validate_http_proxy_callback_return(s()) == []; "
        "k = h.socket.socket(socket.AF_INET, socket.SOCK_STREAM); "
        "print(k.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR), h.socket.SOL_SOCKET == socket.SOL_SOCKET)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["1", "True"]
    assert socket.socket is not None  # this process's socket module is untouched


# ---------------------------------------------------------------------------------------------
# ray_auth_notice: Ray's "token authentication is enabled" notice
# ---------------------------------------------------------------------------------------------
def test_ray_still_logs_the_token_auth_notice_and_we_drop_only_that(caplog):
    import logging

    from ray._private.authentication import authentication_token_setup as setup

    from framework.compat.ray_auth_notice import _FILTER, NOTICE_LOGGER, NOTICE_START, quiet_token_auth_notice

    assert setup.__name__ == NOTICE_LOGGER
    logger = logging.getLogger(NOTICE_LOGGER)
    logger.removeFilter(_FILTER)
    caplog.set_level(logging.WARNING, logger=NOTICE_LOGGER)
    logger.propagate, propagate = True, logger.propagate
    try:
        setup._warn_token_auth_enabled()
        assert [r.getMessage()[: len(NOTICE_START)] for r in caplog.records] == [NOTICE_START], (
            "Ray no longer logs its token-auth notice this way: drop framework/compat/ray_auth_notice.py")
        caplog.clear()
        quiet_token_auth_notice()
        quiet_token_auth_notice()
        setup._warn_token_auth_enabled()
        setup._warn_token_auth_disabled()  # the security warning stays
        assert [r.getMessage().split(".")[0] for r in caplog.records] == [
            "Token authentication is disabled for this Ray cluster"]
    finally:
        logger.propagate = propagate
def test_serve_replicas_still_hard_code_their_grpc_bind_address():
    """ray_serve_grpc exists because Ray Serve binds each replica's inter-deployment gRPC server
    to [::]:0 whatever the node's address, through a helper the replica module imports by name."""
    import ray.serve._private.replica as replica

    from framework.compat.ray_serve_grpc import HARD_CODED

    source = inspect.getsource(replica.Replica._on_initialized)
    assert f'add_port_to_grpc_server(self._server, "{HARD_CODED}")' in source, (
        "Ray Serve no longer hard-codes [::]:0 for the replica gRPC server: "
        "framework/compat/ray_serve_grpc.py is not needed any more (or must follow the new code)")
    assert callable(replica.add_port_to_grpc_server)


def test_grpc_patch_is_a_no_op_outside_a_loopback_node(monkeypatch):
    import ray
    import ray.serve._private.replica as replica

    from framework.compat.ray_serve_grpc import bind_replica_grpc_to_loopback

    # an Ingress built in this process (other tests do) may have patched it already
    original = getattr(replica.add_port_to_grpc_server, "original", replica.add_port_to_grpc_server)
    monkeypatch.setattr(replica, "add_port_to_grpc_server", original)
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "10.1.2.3")
    assert bind_replica_grpc_to_loopback() is False
    assert replica.add_port_to_grpc_server is original
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    monkeypatch.setattr(replica, "add_port_to_grpc_server", original)
    assert bind_replica_grpc_to_loopback() is True
    calls = []
    original_bind = replica.add_port_to_grpc_server

    class Server:
        def add_insecure_port(self, address):
            calls.append(address)
            return 1

    assert original_bind(Server(), "[::]:0") == 1 and calls == ["127.0.0.1:0"]


def test_ray_still_writes_its_token_file_world_readable():
    """ray_auth_token exists because Ray writes ~/.ray/auth_token with a plain open(path, "w")."""
    from ray._private.authentication import authentication_token_setup as setup

    source = inspect.getsource(setup.generate_and_save_token)
    assert 'open(token_path, "w")' in source and "chmod" not in source and "0o600" not in source, (
        "Ray now writes its token file privately: framework/compat/ray_auth_token.py is not needed any more")


def test_the_token_file_is_made_private(tmp_path, monkeypatch):
    import os
    import stat

    from framework.compat import ray_auth_token

    token = tmp_path / ".ray" / "auth_token"
    token.parent.mkdir()
    token.write_text("x" * 64)
    os.chmod(token, 0o644)
    os.chmod(token.parent, 0o755)
    monkeypatch.setattr(ray_auth_token, "token_path", lambda: token)
    assert ray_auth_token.protect_ray_auth_token()
    assert stat.S_IMODE(token.stat().st_mode) == 0o600 and stat.S_IMODE(token.parent.stat().st_mode) == 0o700
