"""The bare-process limit: one uvicorn + Starlette + onnxruntime process, no Ray, no framework.

What a hand-written service does with the same ONNX file: parse ``{"instances": [{...}]}``, one
onnxruntime call, answer predictions and probabilities. Run by ``serving_latency.py`` as a child
process on a loopback port (uvicorn's defaults: uvloop and httptools when installed; no access log).

    python benchmarks/bare_server.py MODEL.onnx PORT FEATURE_NAMES_JSON INPUT_NAME OUTPUT_NAME
"""
from __future__ import annotations

import json
import sys

import numpy as np


def build_app(onnx_bytes: bytes, names: list[str], input_name: str, output_name: str):
    import onnxruntime as ort
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1  # as the framework's replicas
    session = ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])
    outputs = [output_name]

    async def predict(request):
        data = json.loads(await request.body())
        x = np.asarray([[inst[n] for n in names] for inst in data["instances"]], dtype=np.float32)
        p = session.run(outputs, {input_name: x})[0]
        body = {"predictions": p.argmax(axis=1).tolist(), "probabilities": p.tolist()}
        return Response(json.dumps(body).encode(), media_type="application/json")

    async def healthz(request):
        return Response(b'{"status": "ok"}', media_type="application/json")

    return Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/healthz", healthz)])


def main(argv: list[str]) -> int:
    import uvicorn

    path, port, names, input_name, output_name = argv
    with open(path, "rb") as f:
        app = build_app(f.read(), json.loads(names), input_name, output_name)
    uvicorn.run(app, host="127.0.0.1", port=int(port), access_log=False, log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
