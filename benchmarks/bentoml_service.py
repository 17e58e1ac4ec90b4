"""BentoML serving the same ONNX file: the peer users pick instead of this framework.

Benchmark-only. Run by ``serving_latency.py`` with ``bentoml serve`` from its own virtualenv
(BentoML's dependencies are not the framework's; see ``serving_latency.py --bentoml-venv``).
The model path, feature names and tensor names come from the environment. The API is the one a
BentoML user writes for this model: ``POST /predict`` with ``{"instances": [{feature: number}]}``
(the same body as ours), an ``async`` method (no thread hop), one worker, no access log.
"""
from __future__ import annotations

import json
import os

import bentoml
import numpy as np


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class OnnxModel:
    def __init__(self) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # as the framework's replicas
        self.session = ort.InferenceSession(os.environ["BENCH_ONNX"], sess_options=opts,
                                            providers=["CPUExecutionProvider"])
        self.names = json.loads(os.environ["BENCH_FEATURES"])
        self.input_name = os.environ["BENCH_INPUT"]
        self.outputs = [os.environ["BENCH_OUTPUT"]]

    @bentoml.api
    async def predict(self, instances: list[dict]) -> dict:
        x = np.asarray([[inst[n] for n in self.names] for inst in instances], dtype=np.float32)
        p = self.session.run(self.outputs, {self.input_name: x})[0]
        return {"predictions": p.argmax(axis=1).tolist(), "probabilities": p.tolist()}
