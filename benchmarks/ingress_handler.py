"""The ingress handler's own cost, without Ray: our ``Ingress`` against a bare Starlette handler
doing the same onnxruntime call, in one process, one request at a time.

Both get the same request (one instance of a 30-feature MLP, ``{"instances": [{...}]}``) as a
Starlette ``Request`` built from an ASGI scope, the way uvicorn hands it over; the clock covers
the handler only (no socket, no HTTP parsing, no Ray). Then the ingress's work is taken apart:
each part timed on its own with the same inputs (parse+validate, strategy route+observe+decide,
the ONNX call, building the JSON answer, recording the row and the request id for feedback).
Best of ``--repeat`` runs of ``--requests`` calls, in µs per request; the machine may be shared,
so read the ratios, not the absolute figures.

    python benchmarks/ingress_handler.py [--requests 20000] [--repeat 5]
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_request(path: str, body: bytes, headers: list[tuple[bytes, bytes]] | None = None):
    from starlette.requests import Request

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {
        "type": "http", "method": "POST", "path": path, "root_path": "", "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        + (headers or []),
    }
    return Request(scope, receive)


def bare_handler(onnx_bytes: bytes, names: list[str], input_name: str, output_name: str):
    """What a hand-written Starlette service does with the same model: parse, one ORT call, answer."""
    from starlette.responses import Response

    from framework.serving.onnx_runner import make_session

    session = make_session(onnx_bytes)
    outputs = [output_name]

    async def handle(request) -> Response:
        data = json.loads(await request.body())
        x = np.asarray([[inst[n] for n in names] for inst in data["instances"]], dtype=np.float32)
        p = session.run(outputs, {input_name: x})[0]
        body = {"predictions": p.argmax(axis=1).tolist(), "probabilities": p.tolist()}
        return Response(json.dumps(body).encode(), media_type="application/json")

    return handle


def best_us(fn, n: int, repeat: int) -> float:
    """Best of ``repeat`` runs of ``n`` calls of the synchronous ``fn``, µs per call."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n * 1e6)
    return best


def best_us_interleaved(handlers: dict, n: int, repeat: int, loop) -> dict[str, float]:
    """Best of ``repeat`` rounds per handler, µs per call; the handlers take turns within each
    round, so a burst of load from elsewhere on the machine hits all of them alike."""

    async def run(handle) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await handle()
        return time.perf_counter() - t0

    best = {name: float("inf") for name in handlers}
    for r in range(repeat):
        for name in (handlers if r % 2 == 0 else reversed(list(handlers))):
            with handlers[name][1]():
                best[name] = min(best[name], loop.run_until_complete(run(handlers[name][0])))
    return {name: t / n * 1e6 for name, t in best.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    from serving_latency import benchmark_model

    from framework.components import Outcome
    from framework.serving.http import Ingress
    from plugins.strategy_single import SingleConfig, SingleStrategy

    model, what = benchmark_model(None, None)
    names = model.schema.names
    row = np.random.default_rng(0).normal(size=len(names)).astype(np.float32).astype(float).tolist()
    body = json.dumps({"instances": [dict(zip(names, row))]}).encode()

    ingress = Ingress.func_or_class([model], SingleStrategy, SingleConfig(), 1000)
    bare = bare_handler(model.onnx_bytes, names, model.input_name, model.output_name)
    loop = asyncio.new_event_loop()
    first = loop.run_until_complete(ingress(make_request("/predict", body)))
    assert first.status_code == 200, first.body
    assert loop.run_until_complete(bare(make_request("/predict", body))).status_code == 200

    n, repeat = args.requests, args.repeat
    from framework.serving import jsonio

    @contextlib.contextmanager
    def as_is():
        yield

    @contextlib.contextmanager
    def stdlib_json():  # what the handler cost before it used orjson
        saved, jsonio.orjson = jsonio.orjson, None
        try:
            yield
        finally:
            jsonio.orjson = saved

    handlers = {
        "bare Starlette handler": (lambda: bare(make_request("/predict", body)), as_is),
        "our Ingress handler, standard-library json": (lambda: ingress(make_request("/predict", body)), stdlib_json),
        "our Ingress handler": (lambda: ingress(make_request("/predict", body)), as_is),
    }
    total = best_us_interleaved(handlers, n, repeat, loop)
    request_alone = best_us(lambda: make_request("/predict", body), n, repeat)

    # The ingress's parts, each with the inputs the handler would give it.
    parsed = ingress.parser.parse_body(body)
    runner = ingress.arms.local[model.arm]
    probabilities = runner.predict(parsed.x)
    labels = ingress.labeler[model.arm](probabilities)

    def strategy():
        _, route = ingress.host.route("rid", None)
        ingress.host.observe(Outcome("rid", route.primary, 0.2, prediction=labels))

    def answer():
        p = runner.predict(parsed.x)
        out = {"request_id": "rid", "model_version": model.version, "arm": model.arm,
               "predictions": ingress.labeler[model.arm](p), "probabilities": p.tolist()}
        return jsonio.dumps(out)

    parts = {
        "JSON body -> dict (json.loads)": best_us(lambda: json.loads(body), n, repeat),
        "JSON body -> dict (framework.serving.jsonio.loads)": best_us(lambda: jsonio.loads(body), n, repeat),
        "parse + validate (JSON body -> float32 rows)": best_us(lambda: ingress.parser.parse_body(body), n, repeat),
        "strategy: route + observe + decide": best_us(strategy, n, repeat),
        "ONNX call (OnnxRunner.predict)": best_us(lambda: runner.predict(parsed.x), n, repeat),
        "raw onnxruntime session.run": best_us(
            lambda: runner.session.run(runner.outputs, {runner.input_name: parsed.x}), n, repeat),
        "ONNX call + labels + JSON answer": best_us(answer, n, repeat),
        "records + feedback ledger": best_us(
            lambda: (ingress.records.append(parsed.rows, labels, model.version, model.arm, 0.2, "rid"),
                     ingress.ledger.remember("rid", model.arm, labels[0], "predict")), n, repeat),
    }
    loop.close()

    print(f"Ingress handler cost without Ray, {what}, 1 instance per request, best of {repeat} x {n} calls")
    print()
    print("| handler | µs per request | vs bare |")
    print("|---|---:|---:|")
    base = total["bare Starlette handler"]
    for name, us in total.items():
        print(f"| {name} | {us:.1f} | {us / base:.2f}x |")
    print()
    print(f"(building the Starlette Request itself, included in both: {request_alone:.1f} µs)")
    print()
    print("| part of our handler (timed alone) | µs |")
    print("|---|---:|")
    for name, us in parts.items():
        print(f"| {name} | {us:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
