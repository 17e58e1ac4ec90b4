"""Ray Serve's direct ingress: requests reach an ingress replica on its own port, not through the
Python HTTP proxy. Written against Ray 2.60, where it is an environment-variable feature flag.

Why this module exists: the proxy hop costs about 6 ms per request on a 2-core machine (the
replica's handler itself takes well under 1 ms), and Ray 2.60 has no public switch for direct
ingress. What it relies on, all read by Ray when a process imports ``ray.serve._private.constants``:

* ``RAY_SERVE_ENABLE_DIRECT_INGRESS=1`` in the **controller** (it then allocates replica ports,
  lists them as target groups, and keeps its HTTP proxy on the head node only) and in each
  **ingress replica** that should listen (its own uvicorn server on a port the controller
  allocates from ``RAY_SERVE_DIRECT_INGRESS_{MIN,MAX}_HTTP_PORT``, bound to Serve's HTTP host).
  Replicas without the flag are untouched: proxy-mode apps, arm deployments, plain Serve apps.
  The controller gets it through ``serve.start(controller_options=...)`` (public, experimental),
  a replica through its ``runtime_env``: nothing depends on the environment Ray was started in.
* ``RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S``: a stopping direct-ingress replica stays open
  at least this long (default 30 s, and ingress deployments' ``graceful_shutdown_timeout_s`` is
  floored to it + 5 s) so that an external load balancer can deregister it. Our balancer health
  checks every 0.5 s and retries refused connections, so 1 s is enough; 30 s made every stop
  (a Ctrl-C, a test's app removal) take over half a minute.
* Ray starts replicas with the controller's ``runtime_env``, so every ingress replica of this
  Serve instance would inherit the flag: a replica that must not listen (ingress "proxy", a
  plain Serve app of the benchmarks) gets ``RAY_SERVE_ENABLE_DIRECT_INGRESS=0`` explicitly.
* ``RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD=0`` in the replica: Serve then runs our handler on
  the same event loop as the replica's HTTP server instead of hopping to a second thread's loop
  and back for every request (measured ≈ 0.1-0.2 ms per request here); our handler never
  blocks. Not when the deployment autoscales: the autoscaler samples the requests in flight on
  that loop, and a handler that runs start to finish without yielding is never seen in flight,
  so the replica would always report 0 and never scale up.
* a direct-ingress replica creates its listening socket without ``SO_REUSEADDR``
  (``ray.serve._private.http_util.start_asgi_http_server``; uvicorn sets it on sockets it makes
  itself), so after the replica goes, every connection it had keeps its port unbindable for the
  kernel's 60 s TIME_WAIT. With one replica the app's URL is that port, and a replacement replica
  gets another: we put a balancer on the old port, which must be free at once. Ray calls the
  function named by ``RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH`` in the replica right before
  it opens that socket (a hook meant to return middlewares; ours returns none) and there we make
  ``http_util``'s sockets set ``SO_REUSEADDR``: a bind still fails while anything listens.
* the controller's ``get_target_groups(app_name)`` (an actor method; the same data is in
  ``get_serve_instance_details()["target_groups"]``, a PublicAPI(alpha) schema) to learn which
  ports an app's ingress replicas listen on.

``tests/unit/test_compat.py`` fails when a flag is no longer read, or when direct ingress became
the default (then this module and its environment variables can go).
"""
from __future__ import annotations

import socket
import types
from typing import Any, NamedTuple

#: seconds a stopping direct-ingress replica keeps answering (see the module docstring)
MIN_DRAINING_PERIOD_S = 1.0

#: the Serve controller's environment: direct ingress on (for the replicas that ask for it)
CONTROLLER_ENV = {
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": str(MIN_DRAINING_PERIOD_S),
}
#: a direct-ingress replica's environment: it listens on its own port (with SO_REUSEADDR)
REPLICA_ENV = {
    **CONTROLLER_ENV,
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": f"{__name__}:replica_server_setup",
}
#: ... and runs our handler on its server's event loop (not when autoscaling: see above)
SAME_LOOP_ENV = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0"}
#: a replica of this Serve instance that must not listen on a port of its own
NOT_DIRECT_ENV = {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "0"}
#: Ray's dataplane health check on a replica's own port: 503 once the replica drains
REPLICA_HEALTH_PATH = "/-/healthz"


class Target(NamedTuple):
    """One ingress replica listening on its own port."""

    host: str
    port: int
    name: str  # the replica's actor name (``SERVE_REPLICA::app#Deployment#id``)


def controller_options() -> dict:
    """``serve.start(controller_options=...)`` that lets ingress replicas listen directly."""
    return {"runtime_env": {"env_vars": dict(CONTROLLER_ENV)}}


def replica_runtime_env(runtime_env: dict | None = None, *, direct: bool = True, same_loop: bool = True) -> dict:
    """``runtime_env`` for an ingress deployment: ``direct`` replicas listen on their own port
    (``same_loop``: our handler on that server's loop), the others do not."""
    env = dict(runtime_env or {})
    flags = {**REPLICA_ENV, **(SAME_LOOP_ENV if same_loop else {})} if direct else NOT_DIRECT_ENV
    env["env_vars"] = {**env.get("env_vars", {}), **flags}
    return env


class _ReusableSocket(socket.socket):
    """A socket that sets SO_REUSEADDR as it is made, as uvicorn does for its own."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)


def replica_server_setup() -> list:
    """Run by Ray in a direct-ingress replica before it opens its listening socket: that socket
    gets SO_REUSEADDR (see the module docstring). Returns the middlewares to add: none."""
    from ray.serve._private import http_util

    if not isinstance(http_util.socket, types.SimpleNamespace):  # once per process
        shim = types.SimpleNamespace(**{k: getattr(socket, k) for k in dir(socket) if not k.startswith("__")})
        shim.socket = _ReusableSocket
        http_util.socket = shim
    return []


def ingress_targets(app_name: str) -> list[Target] | None:
    """The ports ``app_name``'s running ingress replicas listen on ([] while none runs yet);
    None when the Serve controller does not run direct ingress (it lists only its proxies)."""
    import ray
    from ray.serve._private.common import RequestProtocol
    from ray.serve._private.constants import SERVE_PROXY_NAME

    from .ray_serve import running_serve_client

    if not ray.is_initialized():  # never start a Ray by asking (a watcher thread at exit)
        return None
    client = running_serve_client()
    if client is None:
        return None
    groups: list[Any] = ray.get(client._controller.get_target_groups.remote(app_name), timeout=30)
    http = [g for g in groups if g.protocol == RequestProtocol.HTTP]
    if not any(g.app_name == app_name for g in http):
        return None  # the controller answered with its proxies only: direct ingress is off
    return [
        Target(t.ip, int(t.port), t.name)
        for g in http if g.app_name == app_name
        for t in g.targets
        if not t.name.startswith(SERVE_PROXY_NAME)  # no replica running yet: the proxy stands in
    ]
