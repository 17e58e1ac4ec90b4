"""The ingress request path in-process (no Ray, no HTTP): what the hardening and the record log
cost per predict call.

The ingress class is called directly with a Starlette request (as Serve would), one instance of
30 features per request, the single strategy, a 30 -> 32 -> 2 ONNX MLP. Variants, in alternating
rounds so machine noise hits all alike: the record log off, on with fsync "never", on with fsync
"batch" (the default). Run it on an older checkout to compare with the code before the
hardening (``--no-record-log`` is the only variant older code knows):

    python benchmarks/ingress_hot_path.py [--requests 3000] [--rounds 5]
"""
from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_ingress(onnx_bytes: bytes, record_log: str | None, fsync: str):
    from framework.components import FeatureSpec, InputSchema
    from framework.serving import ServedModel
    from framework.serving.http import Ingress
    from plugins.strategy_single import SingleConfig, SingleStrategy

    from serving_latency import N_FEATURES

    schema = InputSchema([FeatureSpec(f"f{i}") for i in range(N_FEATURES)])
    model = ServedModel("primary", "v1", onnx_bytes, schema, [0, 1], "input", "probabilities")
    cls = Ingress.func_or_class
    kwargs = {}
    if "record_log" in inspect.signature(cls.__init__).parameters and record_log:
        kwargs["record_log"] = {"directory": record_log, "fsync": fsync}
    return cls([model], SingleStrategy, SingleConfig(), **kwargs)


def request(body: bytes):
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/predict", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"bench"),
                         (b"content-length", str(len(body)).encode())]}
    return Request(scope, receive)


async def timed(ingress, bodies: list[bytes]) -> list[float]:
    out = []
    for body in bodies:
        t0 = time.perf_counter()
        response = await ingress(request(body))
        out.append((time.perf_counter() - t0) * 1e6)
        assert response.status_code == 200, response.body
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-record-log", action="store_true", help="only the variant without a record log")
    args = parser.parse_args()

    import numpy as np

    from serving_latency import N_FEATURES, build_onnx

    onnx_bytes = build_onnx()
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"instances": [{f"f{i}": float(v) for i, v in enumerate(rng.normal(size=N_FEATURES))}]}).encode()
              for _ in range(args.requests)]
    folder = tempfile.mkdtemp(prefix="ingress-hot-path-")
    variants = {"record log off": make_ingress(onnx_bytes, None, "batch")}
    if not args.no_record_log:
        variants["record log, fsync never"] = make_ingress(onnx_bytes, f"{folder}/never", "never")
        variants["record log, fsync batch"] = make_ingress(onnx_bytes, f"{folder}/batch", "batch")
    samples: dict[str, list[float]] = {name: [] for name in variants}
    loop = asyncio.new_event_loop()
    loop.run_until_complete(timed(variants["record log off"], bodies[:200]))  # warm-up
    per_round = max(1, args.requests // args.rounds)
    for r in range(args.rounds):
        chunk = bodies[r * per_round:(r + 1) * per_round]
        for name, ingress in variants.items():
            samples[name] += loop.run_until_complete(timed(ingress, chunk))
    print(f"{args.requests} predict calls per variant, in-process, one instance of {N_FEATURES} features")
    print(f"{'variant':28} {'p50 µs':>8} {'mean µs':>8} {'p99 µs':>8}")
    for name, values in samples.items():
        values.sort()
        p99 = values[int(0.99 * (len(values) - 1))]
        print(f"{name:28} {statistics.median(values):8.1f} {statistics.fmean(values):8.1f} {p99:8.1f}")
    for name, ingress in variants.items():
        record_log = getattr(ingress, "record_log", None)
        if record_log is not None:
            record_log.stop()
            print(f"{name}: {record_log.summary()['written']} records written in {record_log.summary()['batches']} batches")


if __name__ == "__main__":
    main()
