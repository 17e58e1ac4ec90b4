"""Starting and reaching the compute engine (Ray) with settings that suit a laptop or a cluster."""
from __future__ import annotations

import logging
import os
from pathlib import Path

from .compat.ray_auth_notice import quiet_token_auth_notice
from .compat.ray_auth_token import protect_ray_auth_token
from .compat.ray_loopback import keep_local_ray_on_loopback

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
    keep_local_ray_on_loopback()  # a loopback address given by the user must stay loopback too
    protect_ray_auth_token()  # Ray writes ~/.ray/auth_token world-readable; before and after init
    if address:
        # A local Ray started by ray.init() has token auth on, with its token in ~/.ray/auth_token;
        # a client only presents it when told to, so do what Ray does for local starts.
        if "RAY_AUTH_MODE" not in os.environ and (Path.home() / ".ray" / "auth_token").exists():
            os.environ["RAY_AUTH_MODE"] = "token"
        ray.init(address=address, namespace=namespace, log_to_driver=False)
        protect_ray_auth_token()
        log.info("connected to Ray at %s", address)
        return {"address": address, "started": False}
    quiet_token_auth_notice()  # Ray's own wording reads like an error; said once below instead
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        namespace=namespace,
        log_to_driver=False,
        configure_logging=True,
        logging_level=logging.WARNING,
    )
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "token":
        log.info("local Ray on 127.0.0.1 with token authentication on (Ray's default; the token is in "
                 "~/.ray/auth_token); RAY_AUTH_MODE=disabled before starting turns it off")
    protect_ray_auth_token()
    return {"address": ray.get_runtime_context().gcs_address, "started": True}


def stop_ray() -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
