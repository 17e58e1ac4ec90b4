"""Batch prediction and the Open Inference Protocol, side by side in one run:

* ``scoring``: the ``ray_data`` batch predictor (Ray Data ``map_batches``, onnxruntime actors)
  over N rows against a plain single-process loop of the same onnxruntime calls over the same
  rows and model (one thread, batches of the same size): rows/s with 1 actor of 1 CPU and with
  2 actors of 1 CPU each. The model is the cars model of the typed-features recipes (strings,
  missing values, preprocessing inside the ONNX file); the rows are cars resampled to N;
* ``v2``: one-row requests to ``POST /v2/models/NAME/infer`` against ``POST /predict`` for the
  same rows, sequential over keep-alive connections, in alternating rounds (p50, req/s);
* ``lookup``: ``POST /lookup`` of a precomputed key against ``POST /predict`` of that row.

Both HTTP parts talk to one app on the ingress replica's own port (``serve.ingress: direct``).

    python benchmarks/batch.py [--rows 1000000] [--requests 300] [--rounds 5] [--skip-scoring] [--skip-http]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def cars_model(tmp: Path, hidden: int = 32, layers: int = 1, epochs: int = 20):
    import torch

    from framework.components import TrainedModel
    from framework.testing import make_stage_context
    from framework.testing.data import cars_splits
    from plugins.export_onnx import OnnxExporter
    from plugins.features_tabular import TabularPreprocessor
    from plugins.train_tune import fit_in_process

    splits = cars_splits()
    splits.features = TabularPreprocessor().fit(splits, make_stage_context(tmp, "features"))
    torch.set_num_threads(1)
    module = fit_in_process({"hidden": hidden, "layers": layers, "lr": 0.01}, splits, epochs=epochs, seed=0)
    trained = TrainedModel(module, splits.input_schema(), list(splits.dataset.classes), {})
    return splits, OnnxExporter().export(trained, splits, make_stage_context(tmp / f"h{hidden}x{layers}", "export"))


def plain_loop(exported, frame, batch_size: int) -> list:
    """The bare limit: one process, one onnxruntime thread, the same feeds and batches."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(exported.path), sess_options=opts, providers=["CPUExecutionProvider"])
    classes = np.asarray(exported.classes, dtype=object)
    out: list = []
    for start in range(0, len(frame), batch_size):
        p = session.run([exported.output_name], exported.layout.feeds(frame.iloc[start:start + batch_size]))[0]
        out.extend(classes[p.argmax(axis=1)].tolist())
    return out


def bench_scoring(exported, frame, batch_size: int, repeats: int, tmp: Path) -> list[dict]:
    from framework.testing import make_stage_context
    from plugins.batch_ray import RayDataBatchPredictor

    variants = {
        "plain onnxruntime loop (1 process, 1 thread)": None,
        "ray_data, 1 actor x 1 CPU": RayDataBatchPredictor.Config(batch_size=batch_size, concurrency=1, num_cpus=1),
        "ray_data, 2 actors x 1 CPU": RayDataBatchPredictor.Config(batch_size=batch_size, concurrency=2, num_cpus=1),
    }
    seconds: dict[str, list[float]] = {k: [] for k in variants}
    reference = None
    for _ in range(repeats):  # alternating: load from elsewhere hits every variant alike
        for name, config in variants.items():
            t0 = time.perf_counter()
            if config is None:
                labels = plain_loop(exported, frame, batch_size)
            else:
                labels = RayDataBatchPredictor(config).predict(exported, frame, make_stage_context(tmp, "b"))
                labels = labels["prediction"].tolist()
            seconds[name].append(time.perf_counter() - t0)
            if reference is None:
                reference = labels
            assert labels == reference, f"{name}: answers differ from the plain loop's"
    rows = []
    for name, s in seconds.items():
        best = min(s)
        rows.append({"variant": name, "best_s": best, "median_s": statistics.median(s), "rows_per_s": len(frame) / best})
    return rows


def timed_requests(client, url: str, bodies: list, headers: dict | None = None) -> list[float]:
    """Round-trip ms per request; bodies are encoded before the clock starts (the client's JSON
    encoding is not the server's cost, and v2 bodies are larger)."""
    import json

    encoded = [json.dumps(b).encode() for b in bodies]
    headers = {**(headers or {}), "Content-Type": "application/json"}
    out = []
    for body in encoded:
        t0 = time.perf_counter()
        r = client.post(url, content=body, headers=headers)
        out.append((time.perf_counter() - t0) * 1000.0)
        assert r.status_code == 200, r.text
    return out


def bench_http(splits, exported, n: int, rounds: int, tmp: Path) -> dict[str, list[float]]:
    import httpx
    import pandas as pd

    from framework.components import raw_instances
    from framework.registry import Registry
    from framework.registry.versions import PREDICTIONS_FILE
    from framework.serving import ServedModel, deploy, shutdown_app
    from framework.testing import make_stage_context
    from plugins.batch_onnx import OnnxBatchPredictor
    from plugins.strategy_single import SingleConfig, SingleStrategy

    frame = splits.dataset.frame
    rows = raw_instances(frame, splits.dataset.features)
    model = ServedModel("primary", "cars:bench", exported.path.read_bytes(), exported.schema, list(exported.classes),
                        exported.input_name, exported.output_name, inputs=exported.inputs)
    name = f"bench-batch-{uuid.uuid4().hex[:6]}"
    admin = "bench-admin-token-0123456789abcdef"
    app = deploy([model], SingleStrategy, SingleConfig(), port=int(os.environ.get("BENCH_SERVE_PORT", "18471")),
                 route_prefix=f"/{name}", app_name=name, admin_token=admin)
    try:
        predictions = OnnxBatchPredictor().predict(exported, frame, make_stage_context(tmp, "lookup"))
        table = pd.DataFrame({"key": [str(i) for i in range(len(frame))], "prediction": predictions.tolist(),
                              "computed_at": pd.Timestamp.now(tz="UTC")})
        registry = Registry(tmp / "store")
        version = registry.put_predictions("bench", table, {"model_version": "cars:bench"})
        with httpx.Client(timeout=30, trust_env=False) as client:
            r = client.post(app.url + "-/admin/lookup", headers=app.admin_headers(),
                            json={"path": registry.file_location(version, PREDICTIONS_FILE), "table": version.ref})
            assert r.status_code == 200, r.text
            dtype = {"category": "BYTES", "bool": "BOOL", "int": "INT64", "float": "FP32"}
            picks = [i % len(rows) for i in range(n)]
            predict = [{"instances": [rows[i]]} for i in picks]
            v2 = [{"inputs": [{"name": f.name, "shape": [1], "datatype": dtype[f.dtype], "data": [rows[i][f.name]]}
                              for f in exported.schema.features]} for i in picks]
            lookup = [{"key": str(i)} for i in picks]
            infer = f"{app.url}v2/models/{name}/infer"
            times: dict[str, list[float]] = {"predict (JSON)": [], "v2 infer": [], "lookup (precomputed)": []}
            timed_requests(client, app.predict_url, predict[:50])  # warm-up
            timed_requests(client, infer, v2[:50])
            timed_requests(client, app.url + "lookup", lookup[:50])
            for _ in range(rounds):
                times["predict (JSON)"] += timed_requests(client, app.predict_url, predict)
                times["v2 infer"] += timed_requests(client, infer, v2)
                times["lookup (precomputed)"] += timed_requests(client, app.url + "lookup", lookup)
        return times
    finally:
        shutdown_app(app)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    args = parser.parse_args()

    from framework.engine import start_ray, stop_ray

    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    print(f"load average before: {os.getloadavg()}")
    start_ray(num_cpus=2)
    try:
        for hidden, layers in () if args.skip_scoring else ((32, 1), (512, 2)):
            splits, exported = cars_model(tmp, hidden, layers, epochs=20 if hidden < 100 else 5)
            frame = splits.dataset.frame.sample(n=args.rows, replace=True, random_state=0).reset_index(drop=True)
            scoring = bench_scoring(exported, frame, args.batch_size, args.repeats, tmp)
            print(f"\nscoring {len(frame):,} cars rows, MLP {layers} x {hidden} hidden "
                  f"({exported.path.stat().st_size:,} ONNX bytes), batches of {args.batch_size}, best of {args.repeats}:")
            print("| variant | best s | median s | rows/s | vs plain |\n|---|---:|---:|---:|---:|")
            plain = scoring[0]["rows_per_s"]
            for r in scoring:
                print(f"| {r['variant']} | {r['best_s']:.2f} | {r['median_s']:.2f} | {r['rows_per_s']:,.0f} | "
                      f"{r['rows_per_s'] / plain:.2f}x |")
            print(f"speed-up 1 -> 2 CPUs: {scoring[2]['rows_per_s'] / scoring[1]['rows_per_s']:.2f}x", flush=True)
        splits, exported = cars_model(tmp)
        if not args.skip_http:
            times = bench_http(splits, exported, args.requests, args.rounds, tmp)
            print(f"\none-row requests, sequential, {args.rounds} alternating rounds of {args.requests}:")
            print("| endpoint | p50 ms | p90 ms | req/s (sequential) | p50 vs predict |\n|---|---:|---:|---:|---:|")
            p50_predict = float(np.percentile(times["predict (JSON)"], 50))
            for k, t in times.items():
                p50 = float(np.percentile(t, 50))
                print(f"| {k} | {p50:.2f} | {float(np.percentile(t, 90)):.2f} | {1000.0 / statistics.mean(t):,.0f} | "
                      f"{p50 / p50_predict:.2f}x |")
        print(f"load average after: {os.getloadavg()}")
    finally:
        stop_ray()


if __name__ == "__main__":
    main()
