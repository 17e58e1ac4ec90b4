"""What the benchmarks compare our serving against: the same ONNX file behind plain Ray Serve.

Benchmark-only, not part of ``framework.serving``. The deployment is shipped to its replica by
value (``benchmarks/`` is not importable there), like a strategy defined in a benchmark script.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np
import ray.cloudpickle
from ray import serve
from starlette.requests import Request


@serve.deployment
class PlainOnnx:
    """The baseline: the same ONNX file behind the most direct Ray Serve deployment."""

    def __init__(self, onnx_bytes: bytes, input_name: str, output_name: str):
        from framework.serving.onnx_runner import make_session

        self.session = make_session(onnx_bytes)
        self.input_name = input_name
        self.outputs = [output_name]

    async def __call__(self, request: Request) -> dict:
        data = await request.json()
        x = np.asarray(data["inputs"], dtype=np.float32)
        return {"probabilities": self.session.run(self.outputs, {self.input_name: x})[0].tolist()}


def plain_onnx_app(onnx_bytes: bytes, input_name: str, output_name: str, **options: Any):
    """The ONNX file behind a minimal Serve deployment (bound, not yet run).

    ``POST /`` with ``{"inputs": [[floats...], ...]}`` answers ``{"probabilities": [[...]]}``.
    ``options`` go to ``Deployment.options`` (e.g. the same ``ray_actor_options`` as ours).
    """
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    deployment = PlainOnnx.options(**options) if options else PlainOnnx
    return deployment.bind(onnx_bytes, input_name, output_name)
