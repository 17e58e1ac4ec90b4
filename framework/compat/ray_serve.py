"""Reading the running Ray Serve instance. Written against Ray 2.60.

``serve.start(http_options=...)`` on a Ray where Serve already runs keeps the old HTTP host and
port and only logs a warning, so the framework would publish a URL nobody listens on. Ray has no
public call that returns the running instance's HTTP options; ``ray.serve.context.
_get_global_client`` does. Without it (a Ray that renamed it) we cannot tell, and
``serve.start`` decides as before.
"""
from __future__ import annotations

from typing import Any


def running_serve_client() -> Any | None:
    """Serve's controller client when Serve runs in this Ray, else None (also when Ray moved it)."""
    try:
        from ray.serve.context import _get_global_client
    except ImportError:
        return None
    return _get_global_client(raise_if_no_controller_running=False)


def running_http_options() -> tuple[str, int] | None:
    """(host, port) of the running Serve HTTP proxy, or None when Serve is not running."""
    client = running_serve_client()
    if client is None:
        return None
    http = client.http_config
    return str(http.host), int(http.port)
