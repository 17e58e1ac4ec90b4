"""Serving placements and request batching, side by side: which should the recipe default be?

Apps (all the `single` strategy, the same ONNX bytes: a 30 -> 32 -> 2 MLP unless --model-ref):

- ``ingress``: the ONNX session inside the ingress replica (today's default, no extra hop);
- ``ingress+batch``: the same with ``serve.batching`` (a batcher per arm in the ingress replica);
- ``deployment``: the arm in its own deployment, one DeploymentHandle hop;
- ``deployment+batch``: the same with ``serve.batching`` (``@serve.batch`` in the arm replica);
- ``plain``: the minimal Ray Serve deployment of the ONNX bytes, the reference.

Same request mix (one instance per request) over keep-alive connections, in many short
alternating rounds so that load from elsewhere on a shared 2-core machine hits all apps alike.
Every replica reserves 0.25 CPU here (the framework's default is 0.5), only so that the seven
replicas fit on 2 CPUs at once; the reservation is a scheduling token, the CPUs are shared anyway.

    python benchmarks/serving_batching.py [--requests 300] [--concurrency 1 8] [--max-batch-size 8]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from serving_latency import Load, alternating_rounds, benchmark_model, free_port  # noqa: E402

NUM_CPUS = 0.25
TOKEN = "bench-admin-token-0123456789"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per app and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds per level")
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--batch-wait-timeout-s", type=float, default=0.005)
    parser.add_argument("--port", type=int, default=None, help="Serve HTTP port (default: a free one)")
    parser.add_argument("--store", default=None, help="serve a registered model from this store instead ...")
    parser.add_argument("--model-ref", default=None, help="... e.g. breast_cancer_mlp@prod")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import httpx
    from ray import serve

    from baselines import plain_onnx_app
    from framework.engine import start_ray
    from framework.serving import deploy, shutdown_app
    from framework.serving.app import MAX_ONGOING_REQUESTS, ensure_serve
    from plugins.strategy_single import SingleConfig, SingleStrategy

    model, what = benchmark_model(args.store, args.model_ref)
    names = model.schema.names
    batching = {"max_batch_size": args.max_batch_size, "batch_wait_timeout_s": args.batch_wait_timeout_s}
    port = args.port or free_port()

    t0 = time.perf_counter()
    start_ray(num_cpus=2)
    ensure_serve("127.0.0.1", port)
    configs = {
        "ingress": {"placement": "ingress"},
        "ingress+batch": {"placement": "ingress", "batching": batching},
        "deployment": {"placement": "deployment"},
        "deployment+batch": {"placement": "deployment", "batching": batching},
    }
    apps = {}
    for name, options in configs.items():
        slug = name.replace("+", "-")
        apps[name] = deploy([model], SingleStrategy, SingleConfig(), port=port, route_prefix=f"/{slug}",
                            app_name=f"bench-{slug}", admin_token=TOKEN, num_cpus=NUM_CPUS, **options)
    plain = plain_onnx_app(model.onnx_bytes, model.input_name, model.output_name,
                           ray_actor_options={"num_cpus": NUM_CPUS}, max_ongoing_requests=MAX_ONGOING_REQUESTS)
    serve.run(plain, name="bench-plain", route_prefix="/plain", blocking=False)
    print(f"Ray + 5 apps up in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.requests + args.warmup, len(names))).astype(np.float32).astype(float).tolist()
    ours_bodies = [json.dumps({"instances": [dict(zip(names, r))]}).encode() for r in rows]
    plain_bodies = [json.dumps({"inputs": [r]}).encode() for r in rows]
    urls = {name: a.predict_url for name, a in apps.items()}
    urls["plain"] = f"http://127.0.0.1:{port}/plain"
    bodies = {name: ours_bodies for name in apps} | {"plain": plain_bodies}
    order = list(apps) + ["plain"]

    # Same answers from every app (batched or not), or the comparison means nothing.
    with httpx.Client(trust_env=False, headers={"Content-Type": "application/json"}) as c:
        for i in range(3):
            ref = c.post(urls["plain"], content=plain_bodies[i]).json()["probabilities"]
            for name in apps:
                got = c.post(urls[name], content=ours_bodies[i]).json()["probabilities"]
                assert np.allclose(got, ref, atol=1e-6), (name, got, ref)

    def batch_stats(name: str) -> dict:
        r = httpx.get(apps[name].url + "-/strategy", headers={"X-Admin-Token": TOKEN}, timeout=30, trust_env=False)
        return r.json()["batching"]["arms"]["primary"]

    results: dict[tuple[int, str], dict] = {}
    batch_means: dict[tuple[int, str], float] = {}
    for conc in args.concurrency:
        loads = {name: Load(urls[name], conc) for name in order}
        for name in order:  # warm-up: connections, code paths, ORT arenas
            loads[name].run(bodies[name][: args.warmup])
        before = {name: batch_stats(name) for name in apps if "batch" in name}
        measured = list(range(args.warmup, args.warmup + args.requests))
        rounds = max(1, min(args.rounds, args.requests // max(conc, 1)))
        for name, figures in alternating_rounds(loads, bodies, measured, rounds).items():
            results[(conc, name)] = figures
        for name, b in before.items():
            a = batch_stats(name)
            batches, calls = a["batches"] - b["batches"], a["requests"] - b["requests"]
            batch_means[(conc, name)] = calls / batches if batches else float("nan")

    print()
    print(f"Placements and batching, {args.requests} requests per app and level, 1 instance per request, {what}, "
          f"batching max_batch_size={args.max_batch_size} batch_wait_timeout_s={args.batch_wait_timeout_s}, "
          f"Ray {__import__('ray').__version__}, {os.cpu_count()} cores")
    print()
    print("| concurrency | app | p50 ms | p99 ms | req/s | mean batch | non-200 | p50 / ingress | req/s / ingress |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for conc in args.concurrency:
        base = results[(conc, "ingress")]
        for name in order:
            m = results[(conc, name)]
            mean = batch_means.get((conc, name))
            print(
                f"| {conc} | {name} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:.1f} | "
                f"{'' if mean is None else f'{mean:.2f}'} | {m['errors']} | "
                f"{m['p50'] / base['p50']:.2f}x | {m['rps'] / base['rps']:.2f}x |"
            )
    print()
    for conc in args.concurrency:
        dep, batched = results[(conc, "deployment")], results[(conc, "deployment+batch")]
        ing, ing_b = results[(conc, "ingress")], results[(conc, "ingress+batch")]
        print(f"concurrency {conc}: deployment+batch / deployment: p50 {batched['p50'] / dep['p50']:.2f}x, "
              f"req/s {batched['rps'] / dep['rps']:.2f}x; ingress+batch / ingress: p50 {ing_b['p50'] / ing['p50']:.2f}x, "
              f"req/s {ing_b['rps'] / ing['rps']:.2f}x")

    for a in apps.values():
        shutdown_app(a)
    shutdown_app("bench-plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
