"""The Ray Serve app builder: an ingress that validates requests, hosts the traffic strategy and
runs small ONNX models in-process (or routes to per-model deployments), plus a records buffer,
feedback by request id, promote / rollback events and admin commands.

Importing this package is cheap; Ray is imported when an app is deployed.
"""
from .app import (  # noqa: F401
    deploy,
    ensure_serve,
    fetch_events,
    fetch_records,
    shutdown_app,
    validate_autoscaling,
    validate_batching,
)
from .types import ServedModel, ServingApp  # noqa: F401

__all__ = ["ServedModel", "ServingApp", "deploy", "ensure_serve", "fetch_events", "fetch_records", "shutdown_app",
           "validate_autoscaling", "validate_batching"]
