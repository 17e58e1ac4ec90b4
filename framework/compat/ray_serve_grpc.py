"""Bind a Serve replica's inter-deployment gRPC server to a loopback node address. Written against
Ray Serve 2.60.

``ray/serve/_private/replica.py`` (``ReplicaBase._on_initialized``) starts that server with
``add_port_to_grpc_server(self._server, "[::]:0")``: every interface, whatever the node's address.
On a local Ray started by the framework the node address is 127.0.0.1, and every caller (the
proxy, other replicas) reaches the replica there, so listening beyond loopback only exposes the
port (Ray's token authentication still guards it). The replica module imported that helper by
name; replacing the name in that module, from the deployment's constructor (which Serve runs
before ``_on_initialized``), makes the server bind the node's loopback address instead. A
replica on a routable node address is left exactly as Ray made it.
"""
from __future__ import annotations

import ipaddress
import threading

_lock = threading.Lock()
#: the address Ray Serve 2.60 hard-codes; the compat test watches for it to go away
HARD_CODED = "[::]:0"


def bind_replica_grpc_to_loopback() -> bool:
    """In a Serve replica whose node address is loopback: True once the replica's gRPC server
    will bind there. False (nothing changed) elsewhere, or when Ray moved the helper."""
    try:
        import ray
        import ray.serve._private.replica as replica
    except ImportError:
        return False
    original = getattr(replica, "add_port_to_grpc_server", None)
    if original is None:
        return False
    if getattr(original, "_framework_loopback", False):
        return True
    try:
        node_ip = ray.util.get_node_ip_address()
        loopback = ipaddress.ip_address(node_ip).is_loopback
    except Exception:  # not in a Ray worker, or an address we cannot read: leave Ray alone
        return False
    if not loopback:
        return False
    host = f"[{node_ip}]" if ":" in node_ip else node_ip

    def bind(server, address):
        if address == HARD_CODED:
            address = f"{host}:0"
        return original(server, address)

    bind._framework_loopback = True  # type: ignore[attr-defined]
    bind.original = original  # type: ignore[attr-defined]
    with _lock:
        replica.add_port_to_grpc_server = bind
    return True
