"""Request batching for one in-process ONNX model: concurrent calls share ONE onnxruntime call.

Used by an arm deployment (``placement="deployment"``) and, per arm, by the ingress replica
(``placement="ingress"``) when the recipe sets ``serve.batching.max_batch_size``. Built on
``@serve.batch``, so it must run inside a Serve replica (the queue is created lazily, on the first
call, in the replica's event loop).
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping

import numpy as np


class BatchedPredict:
    """``await batched(x [n, f]) -> probabilities [n, classes]``, the same answer as
    ``runner.predict(x)``: rows of calls queued together are concatenated, run once, split back.

    ``max_batch_size`` counts calls (requests), not rows: a request carrying 50 instances is one
    item, so a batch never splits a request and a large request never waits for room.
    """

    def __init__(self, runner: Any, max_batch_size: int, batch_wait_timeout_s: float):
        from ray import serve

        self.runner = runner
        self.max_batch_size = int(max_batch_size)
        self.batch_wait_timeout_s = float(batch_wait_timeout_s)
        self.sizes: Counter[int] = Counter()  # calls per batch -> batches seen
        self.rows = 0
        # Wrapped per instance rather than decorating a method: the ingress holds one batcher per
        # arm, and each needs its own queue (a decorated method shares one queue per class).
        self._batched = serve.batch(
            max_batch_size=self.max_batch_size, batch_wait_timeout_s=self.batch_wait_timeout_s
        )(self._run)

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        return await self._batched(x)

    async def _run(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        self.sizes[len(xs)] += 1
        counts = [len(next(iter(x.values()))) if isinstance(x, dict) else len(x) for x in xs]
        self.rows += sum(counts)
        if len(xs) == 1:
            return [self.runner.predict(xs[0])]
        # Softmax and argmax are row-wise, so one call over the stacked rows answers each request
        # as its own call would (up to ORT's float rounding across batch shapes, ~1e-7).
        if isinstance(xs[0], dict):  # typed inputs: every feed stacked
            out = self.runner.predict({k: np.concatenate([x[k] for x in xs]) for k in xs[0]})
        else:
            out = self.runner.predict(np.concatenate(xs))
        return np.split(out, np.cumsum(counts)[:-1])

    def stats(self) -> dict:
        batches = sum(self.sizes.values())
        calls = sum(k * v for k, v in self.sizes.items())
        return {
            "max_batch_size": self.max_batch_size,
            "batch_wait_timeout_s": self.batch_wait_timeout_s,
            "batches": batches,
            "requests": calls,
            "rows": self.rows,
            "largest_batch": max(self.sizes, default=0),
            "mean_batch": calls / batches if batches else None,
            "sizes": {str(k): v for k, v in sorted(self.sizes.items())},
        }


def batched_predict(runner: Any, batching: Mapping[str, Any] | None) -> BatchedPredict | None:
    """A batcher for ``runner`` with the ``serve.batching`` settings; None when batching is off."""
    if not batching or not batching.get("max_batch_size"):
        return None
    return BatchedPredict(runner, batching["max_batch_size"], batching["batch_wait_timeout_s"])
