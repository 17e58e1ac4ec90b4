"""Preprocessing inside the served model: what taking raw typed rows costs.

One model, served twice side by side in one Serve instance by the same ingress code:

* ``raw``: the exported file with the preprocessing merged in (imputation, missing indicators,
  one-hot encoding, scaling): clients send raw rows, strings and nulls included;
* ``encoded``: the bare model's file (the same weights, without the preprocessing graph): clients
  send the already encoded float columns (what every client had to compute before).

Both give the same probabilities (checked). The model: a small MLP trained in-process on
vega_datasets' cars (framework.testing.data.cars_splits: a string column, missing numbers, an int,
a bool; 7 raw features -> 43 encoded columns). Measured, side by side in alternating rounds so
that load from elsewhere on a shared machine hits both alike:

* HTTP p50 / p99 / req/s at concurrency 1 and 8 (goal: raw / encoded <= 1.05x at p50);
* in-process: parsing a one-row request body and running the model (the ingress' own work);
* ONNX Runtime batch-1 latency on one thread: the merged graph on raw feeds vs the bare model
  on an encoded row.

    python benchmarks/preprocessing.py [--requests 300] [--concurrency 1 8]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def build(tmp: Path):
    """(splits, exported merged model, bare model path) of a small cars MLP."""
    import torch

    from framework.components import TrainedModel
    from framework.testing import make_stage_context
    from framework.testing.data import cars_splits
    from plugins.export_onnx import BARE_FILE_NAME, OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp, "features"))
    torch.set_num_threads(1)
    module = fit_in_process({"hidden": 32, "lr": 0.02}, splits, epochs=40, seed=0)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    ctx = make_stage_context(tmp, "export")
    exported = OnnxExporter().export(trained, splits, ctx)
    return splits, exported, Path(ctx.out_dir) / BARE_FILE_NAME


def served_models(splits, exported, bare: Path):
    from framework.components import FeatureSpec, InputSchema
    from framework.serving import ServedModel

    raw = ServedModel("primary", "bench-raw", exported.path.read_bytes(), exported.schema, list(exported.classes),
                      exported.input_name, exported.output_name, inputs=exported.inputs)
    names = list(splits.features.output_names)
    encoded = ServedModel("primary", "bench-encoded", bare.read_bytes(), InputSchema([FeatureSpec(n) for n in names]),
                          list(exported.classes), "features", exported.output_name)
    return raw, encoded


def bodies(splits, n: int) -> tuple[list[bytes], list[bytes]]:
    """One-instance request bodies of the same rows: raw (strings, nulls) and encoded (floats)."""
    from framework.components import raw_instances

    frame = splits.test.sample(n, replace=True, random_state=0)
    raw_rows = raw_instances(frame, splits.dataset.features)
    encoded = splits.features.transform(frame).astype(float).tolist()
    names = list(splits.features.output_names)
    return ([json.dumps({"instances": [r]}).encode() for r in raw_rows],
            [json.dumps({"instances": [dict(zip(names, r))]}).encode() for r in encoded])


def in_process(raw_model, encoded_model, raw_bodies, encoded_bodies, runs: int = 3000) -> dict:
    """µs per one-row request: parse the body, run the model (what the ingress does besides I/O)."""
    from framework.serving.onnx_runner import OnnxRunner
    from framework.serving.typed_requests import make_parser

    out = {}
    for name, model, bodies_ in (("raw", raw_model, raw_bodies), ("encoded", encoded_model, encoded_bodies)):
        parser, runner = make_parser(model), OnnxRunner(model)
        for body in bodies_[:200]:
            runner.predict(parser.parse_body(body).x)
        parse, predict = [], []
        for i in range(runs):
            body = bodies_[i % len(bodies_)]
            t0 = time.perf_counter()
            parsed = parser.parse_body(body)
            t1 = time.perf_counter()
            runner.predict(parsed.x)
            t2 = time.perf_counter()
            parse.append((t1 - t0) * 1e6)
            predict.append((t2 - t1) * 1e6)
        out[name] = {"parse_us": statistics.median(parse), "predict_us": statistics.median(predict)}
    return out


def onnx_batch1(exported, bare: Path, splits, rounds: int = 10, runs: int = 300) -> dict:
    from framework.evaluation import onnx_latency

    row = splits.test.head(1)
    merged_bytes, bare_bytes = exported.path.read_bytes(), bare.read_bytes()
    feeds_raw = exported.layout.feeds(row)
    feeds_encoded = {"features": splits.features.transform(row)}
    p50 = {"merged (raw feeds)": [], "bare (encoded row)": []}
    for r in range(rounds):  # alternating: a burst elsewhere hits both
        pairs = [("merged (raw feeds)", merged_bytes, feeds_raw), ("bare (encoded row)", bare_bytes, feeds_encoded)]
        for name, onnx_bytes, feeds in pairs if r % 2 == 0 else reversed(pairs):
            p50[name].append(onnx_latency(onnx_bytes, "", feeds, runs)["latency_p50_ms"] * 1000.0)
    return {name: statistics.median(v) for name, v in p50.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per app and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20, help="alternating raw/encoded rounds per level")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import httpx

    from framework.engine import start_ray
    from framework.serving import deploy, shutdown_app
    from framework.serving.app import ensure_serve
    from plugins.strategy_single import SingleConfig, SingleStrategy
    from serving_latency import Load, alternating_rounds, free_port

    tmp = Path(tempfile.mkdtemp(prefix="bench-preprocessing-"))
    splits, exported, bare = build(tmp)
    raw_model, encoded_model = served_models(splits, exported, bare)
    raw_bodies, encoded_bodies = bodies(splits, args.requests + args.warmup)
    local = in_process(raw_model, encoded_model, raw_bodies, encoded_bodies)
    onnx = onnx_batch1(exported, bare, splits)

    port = free_port()
    start_ray(num_cpus=2)
    ensure_serve("127.0.0.1", port)
    apps = {
        "raw": deploy([raw_model], SingleStrategy, SingleConfig(), port=port, route_prefix="/raw", app_name="bench-raw"),
        "encoded": deploy([encoded_model], SingleStrategy, SingleConfig(), port=port, route_prefix="/encoded",
                          app_name="bench-encoded"),
    }
    urls = {name: app.predict_url for name, app in apps.items()}
    payloads = {"raw": raw_bodies, "encoded": encoded_bodies}
    with httpx.Client(trust_env=False, headers={"Content-Type": "application/json"}) as c:  # the same answers, or the comparison means nothing
        for i in range(5):
            a = c.post(urls["raw"], content=raw_bodies[i]).json()["probabilities"]
            b = c.post(urls["encoded"], content=encoded_bodies[i]).json()["probabilities"]
            assert np.allclose(a, b, atol=1e-5), (a, b)

    results = {}
    order = ["raw", "encoded"]
    for conc in args.concurrency:
        loads = {name: Load(urls[name], conc) for name in order}
        for name in order:
            loads[name].run(payloads[name][: args.warmup])
        measured = list(range(args.warmup, args.warmup + args.requests))
        rounds = max(1, min(args.rounds, args.requests // max(conc, 1)))
        for name, figures in alternating_rounds(loads, payloads, measured, rounds).items():
            results[(conc, name)] = figures
    for app in apps.values():
        shutdown_app(app)

    width = len(splits.features.output_names)
    print()
    print(f"Preprocessing in the served model: cars MLP, {len(splits.dataset.features)} raw features "
          f"({sum(f.dtype == 'category' for f in exported.schema.features)} categorical, "
          f"{sum(bool(f.nullable) for f in exported.schema.features)} nullable) -> {width} encoded columns; "
          f"{args.requests} one-instance requests per app and level; Ray {__import__('ray').__version__}, "
          f"{os.cpu_count()} cores")
    print()
    print("| concurrency | app | p50 ms | p99 ms | req/s | non-200 |")
    print("|---:|---|---:|---:|---:|---:|")
    for conc in args.concurrency:
        for name in order:
            m = results[(conc, name)]
            print(f"| {conc} | {name} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:.1f} | {m['errors']} |")
        a, b = results[(conc, "raw")], results[(conc, "encoded")]
        print(f"| {conc} | **raw / encoded** | {a['p50'] / b['p50']:.2f}x | {a['p99'] / b['p99']:.2f}x "
              f"| {a['rps'] / b['rps']:.2f}x | |")
    print()
    print("| in-process, one-row request | parse µs (p50) | predict µs (p50) |")
    print("|---|---:|---:|")
    for name in order:
        print(f"| {name} | {local[name]['parse_us']:.1f} | {local[name]['predict_us']:.1f} |")
    print()
    print("| ONNX Runtime, batch 1, one thread | p50 µs |")
    print("|---|---:|")
    for name, value in onnx.items():
        print(f"| {name} | {value:.1f} |")
    names = list(onnx)
    print(f"| **merged / bare** | {onnx[names[0]] / onnx[names[1]]:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
