"""Starting and reaching the compute engine (Ray) with settings that suit a laptop or a cluster."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def start_ray(address: str | None = None, num_cpus: int = 2, namespace: str = "framework") -> dict:
    """Connect to ``address``, or start a local Ray: explicit CPUs, no dashboard, loopback only.

    Idempotent: an already initialised Ray in this process is reused. Returns a small description.
    """
    import ray

    if ray.is_initialized():
        return {"address": ray.get_runtime_context().gcs_address, "started": False}
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Workers should not oversubscribe 2 cores with their own thread pools.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _keep_local_ray_on_loopback()  # a loopback address given by the user must stay loopback too
    if address:
        # A local Ray started by ray.init() has token auth on, with its token in ~/.ray/auth_token;
        # a client only presents it when told to, so do what Ray does for local starts.
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
            os.environ["RAY_AUTH_MODE"] = "token"
        ray.init(address=address, namespace=namespace, log_to_driver=False)
        log.info("connected to Ray at %s", address)
        return {"address": address, "started": False}
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        namespace=namespace,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    return {"address": ray.get_runtime_context().gcs_address, "started": True}


def _keep_local_ray_on_loopback() -> None:
    """Ray rewrites a 127.0.0.1 node address into the machine's routable one (services.
    resolve_ip_for_localhost), so a purely local Ray would talk to itself over the LAN address.
    A local Ray started by us is single-machine: keep every internal address on loopback."""
    import ray._private.services as services

    if not getattr(services.resolve_ip_for_localhost, "_framework_loopback", False):
        def keep(host: str) -> str:
            return host

        keep._framework_loopback = True  # type: ignore[attr-defined]
        services.resolve_ip_for_localhost = keep


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
