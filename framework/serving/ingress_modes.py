"""How clients reach an app's ingress replicas: ``serve.ingress`` is ``direct`` or ``proxy``.

``proxy``: through Ray Serve's Python HTTP proxy on ``serve.host:serve.port`` (one more process
hop, ≈ 6 ms per request on 2 cores). ``direct`` (the default): each ingress replica listens on
its own loopback port (Ray's direct ingress, ``framework/compat/ray_direct_ingress.py``), and

* with one replica, the published URL is that replica's own port;
* with several (``serve.replicas`` > 1, or autoscaling that may go past one), the published URL
  is a load balancer (HAProxy, ``balancer.py``) on ``serve.balancer_port`` (0: a free port) in
  front of every replica's port.

The app stays reachable through the proxy too (``serve.port``), at the proxy's speed.

A ``DirectIngress`` follows the replicas while the app runs (a daemon thread polling the Serve
controller twice a second): replicas added or replaced by autoscaling or by a restart enter the
balancer, gone ones leave it. With one replica there is no balancer until that replica is
replaced: the new one listens on a new port (Ray hands each replica its own), so a balancer is
started on the published port, in front of the new replica, and the URL keeps working.
"""
from __future__ import annotations

import atexit
import logging
import socket
import threading
import time
from typing import Any, Mapping

from ..compat.ray_direct_ingress import REPLICA_HEALTH_PATH, Target, ingress_targets, replica_runtime_env
from ..errors import RecipeError, ServingError
from .balancer import Balancer

log = logging.getLogger(__name__)

INGRESS_MODES = ("direct", "proxy")
DEFAULT_INGRESS = "direct"
#: how often a direct app's replica ports are read from the Serve controller
WATCH_INTERVAL_S = 0.5
#: balancer slots per replica the app may run: room for replacements starting before the old go
SLOTS_PER_REPLICA = 2
#: a replaced replica may hold its port while it drains (1 s) before the balancer can bind it
TAKEOVER_BIND_TIMEOUT_S = 30.0

_running: dict[str, "DirectIngress"] = {}
_running_lock = threading.Lock()


def validate_ingress(ingress: str, balancer_port: int, where: str = "") -> None:
    """RecipeError naming ``serve.ingress`` / ``serve.balancer_port``."""
    at = f"{where}: " if where else ""
    if ingress not in INGRESS_MODES:
        raise RecipeError(f"{at}serve.ingress: must be one of {', '.join(INGRESS_MODES)}, got {ingress!r}")
    if isinstance(balancer_port, bool) or not isinstance(balancer_port, int) or not 0 <= balancer_port < 65536:
        raise RecipeError(f"{at}serve.balancer_port: must be 0 (a free port) or a TCP port, got {balancer_port!r}")


def deployment_options(ingress: str, options: Mapping[str, Any]) -> dict:
    """The ingress deployment's ``.options(...)`` for ``ingress``. A direct one listens on its own
    port, runs our handler on that server's loop unless it autoscales (compat/ray_direct_ingress.py
    says why) and writes no per-request access log line (every served row is in the records
    already; Ray's access log is a formatted, flushed line per request). A proxy one is told not
    to listen: it would inherit the flag from the Serve controller."""
    options = dict(options)
    actor = dict(options.get("ray_actor_options") or {})
    actor["runtime_env"] = replica_runtime_env(
        actor.get("runtime_env"), direct=ingress == "direct", same_loop="autoscaling_config" not in options
    )
    options["ray_actor_options"] = actor
    if ingress == "direct":
        options["logging_config"] = {"enable_access_log": False}
    return options


def max_replicas(replicas: int, autoscaling: Mapping[str, Any] | None) -> int:
    return int(autoscaling["max_replicas"]) if autoscaling else int(replicas)


class DirectIngress:
    """The published address of one direct-ingress app, kept working while its replicas change."""

    def __init__(self, app_name: str, host: str, port: int, balancer: Balancer | None):
        self.app_name = app_name
        self.host = host
        self.port = port
        self.balancer = balancer
        self.replicas: list[Target] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"direct-ingress-{app_name}", daemon=True)

    def follow(self, replicas: list[Target]) -> None:
        self.replicas = replicas
        with _running_lock:
            _running[self.app_name] = self
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        if self.balancer is not None:
            self.balancer.stop()
        with _running_lock:
            if _running.get(self.app_name) is self:
                del _running[self.app_name]

    def _watch(self) -> None:
        while not self._stop.wait(WATCH_INTERVAL_S):
            try:
                replicas = ingress_targets(self.app_name)
            except Exception as exc:  # Ray going down, a controller restart: look again later
                log.debug("direct ingress %s: reading replicas failed: %r", self.app_name, exc)
                continue
            if replicas is None or replicas == self.replicas:
                continue
            try:
                self._apply(replicas)
            except Exception:
                log.exception("direct ingress %s: following replicas %s failed", self.app_name, replicas)

    def _apply(self, replicas: list[Target]) -> None:
        addresses = [(t.host, t.port) for t in replicas]
        if self.balancer is not None:
            self.balancer.set_targets(addresses)
        elif replicas and all(t.port != self.port for t in replicas):
            # The one replica was replaced and its successor listens elsewhere: the published
            # port now gets a balancer in front of it (Ray keeps a released port out of its pool
            # for a while, so nothing else takes it meanwhile).
            self.balancer = _start_balancer(self.app_name, self.host, self.port, len(replicas), addresses,
                                            retry_bind_s=TAKEOVER_BIND_TIMEOUT_S)
            log.warning("app %s: its ingress replica was replaced (now on port %s); %s:%d keeps working "
                        "through a balancer", self.app_name, [t.port for t in replicas], self.host, self.port)
        if self.balancer is None and not replicas:
            log.warning("app %s: no ingress replica is running", self.app_name)
        self.replicas = replicas


def publish(
    app_name: str, host: str, replicas: int, autoscaling: Mapping[str, Any] | None, balancer_port: int,
    where: str, timeout: float,
) -> int:
    """The port a direct-ingress app is published on, once its replicas listen (ServingError
    when Serve runs without direct ingress, or no replica listens within ``timeout``)."""
    expected = 1 if autoscaling else int(replicas)
    started = wait_for_replicas(app_name, expected, where, timeout)
    most = max_replicas(replicas, autoscaling)
    addresses = [(t.host, t.port) for t in started]
    if most == 1:
        port, balancer = started[0].port, None
    else:
        port = balancer_port or _free_port(host)
        balancer = _start_balancer(app_name, host, port, most, addresses)
    DirectIngress(app_name, host, port, balancer).follow(started)
    return port


def wait_for_replicas(app_name: str, expected: int, where: str, timeout: float) -> list[Target]:
    """The app's ingress replicas once the app runs (a redeploy's new ones, not the old ones)."""
    from ray import serve

    deadline = time.monotonic() + timeout
    while True:
        status = serve.status().applications.get(app_name)
        state = str(getattr(status, "status", "")).rsplit(".", 1)[-1]
        if state == "DEPLOY_FAILED":
            raise ServingError(f"{where}: the deployment failed: {getattr(status, 'message', '')[:1500]}")
        found = ingress_targets(app_name) if state == "RUNNING" else []
        if found is None:
            raise ServingError(
                f"{where}: Ray Serve in this Ray instance runs without direct ingress (it was started "
                "before the framework could turn it on), so the ingress replicas cannot be reached on their own "
                "ports. Deploy with serve.ingress=proxy, or restart Serve (serve.shutdown()) and deploy again."
            )
        if len(found) >= expected:
            return found
        if time.monotonic() > deadline:
            raise ServingError(
                f"{where}: {len(found)} of {expected} ingress replica(s) listening after {timeout:.0f} s (app {state or 'absent'})"
            )
        time.sleep(0.1)


def stop(app_name: str) -> None:
    """Stop following ``app_name`` and its balancer, if any (before the app itself is deleted)."""
    with _running_lock:
        running = _running.get(app_name)
    if running is not None:
        running.stop()


def balancer_of(app_name: str) -> Balancer | None:
    """The balancer in front of ``app_name``'s replicas, when there is one (tests look at it)."""
    with _running_lock:
        running = _running.get(app_name)
    return running.balancer if running is not None else None


def _start_balancer(app_name: str, host: str, port: int, most: int, addresses, retry_bind_s: float = 0.0) -> Balancer:
    deadline = time.monotonic() + retry_bind_s
    while not _bindable(host, port) and time.monotonic() < deadline:
        time.sleep(0.25)
    return Balancer(app_name, host, port, REPLICA_HEALTH_PATH, SLOTS_PER_REPLICA * most + 1).start(addresses)


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as HAProxy's listener
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@atexit.register
def _stop_all() -> None:
    with _running_lock:
        running = list(_running.values())
    for r in running:
        r.stop()
