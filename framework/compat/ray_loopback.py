"""Keep a local Ray on loopback. Written against Ray 2.60.

``ray._private.services.resolve_ip_for_localhost`` turns "127.0.0.1" into the machine's routable
address, so a purely local Ray (``_node_ip_address="127.0.0.1"``) would register and talk to
itself over the LAN address, and its GCS would be reachable from the network. A local Ray
started by the framework is single-machine by definition: this keeps every address it resolves
as given. A cluster the user joins (``ray.address=...``) is not affected: its addresses are not
loopback ones.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
#: Ray's own function, kept for the compat test (does upstream still need this?)
ORIGINAL_RESOLVE = None


def keep_local_ray_on_loopback() -> None:
    """Idempotent: replace Ray's resolver once per process."""
    global ORIGINAL_RESOLVE
    import ray._private.services as services

    with _lock:
        if getattr(services.resolve_ip_for_localhost, "_framework_loopback", False):
            return
        ORIGINAL_RESOLVE = services.resolve_ip_for_localhost

        def keep(host: str) -> str:
            if not host:
                raise ValueError(f"Malformed host: {host}")
            return host

        keep._framework_loopback = True  # type: ignore[attr-defined]
        services.resolve_ip_for_localhost = keep
