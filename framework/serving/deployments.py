"""The arm deployment for ``placement="deployment"``: one arm's ONNX model in its own replicas.

The ingress reaches it through a DeploymentHandle (see ``arms.ArmPool``); the ingress itself is
the deployment in ``http.py``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from ray import serve

from ..compat.ray_serve_grpc import bind_replica_grpc_to_loopback
from .batching import batched_predict
from .onnx_runner import OnnxRunner
from .types import ServedModel


@serve.deployment
class ArmModel:
    """One arm in its own deployment (``placement="deployment"``)."""

    def __init__(self, model: ServedModel, batching: Mapping[str, Any] | None = None):
        bind_replica_grpc_to_loopback()  # before Serve starts this replica's gRPC server
        self.runner = OnnxRunner(model)
        self.batched = batched_predict(self.runner, batching)

    def predict(self, x: np.ndarray) -> np.ndarray:
        # sync on purpose: without batching this path stays exactly as measured before
        return self.runner.predict(x)

    async def predict_batched(self, x: np.ndarray) -> np.ndarray:
        """Queued with the other calls in flight on this replica; one onnxruntime call per batch."""
        return await self.batched(x)

    def stats(self) -> dict:
        """This replica's batching counters (batch sizes seen); {} when batching is off."""
        return self.batched.stats() if self.batched is not None else {}
