"""One decision state across ingress replicas: what it costs ([experiments]).

1. Per request, in one process: the replica-side host of a shared state (``SharedStrategyHost``:
   route from the local copy, queue route and outcome) against the plain ``StrategyHost`` (route,
   observe, decide), for the A/B strategy, 20,000 requests, best of 3.
2. Over HTTP, side by side in one run (rounds alternate the order): an A/B app with one ingress
   replica, two replicas sharing one decision state, and two replicas each deciding alone (every
   replica reserves 0.3 CPU so that the five fit on 2 cores at once), all
   behind the same kind of entry (direct ingress; HAProxy for two). p50 at concurrency 8 and
   requests/s at concurrency 16; the goals: shared p50 ≤ 1.10× one replica, throughput ≥ 1.6×
   one replica (a 2-core machine runs the client, HAProxy and both replicas on the same cores).

    python benchmarks/shared_decisions.py [--requests 2000] [--rounds 4]
"""
from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serving_latency import Target, build_onnx, measure_level  # noqa: E402

from framework.components import FeatureSpec, InputSchema, Outcome  # noqa: E402
from plugins.strategy_ab import ABConfig, ABStrategy  # noqa: E402

ARMS = {"champion": "v-champion", "challenger": "v-challenger"}
CONFIG = ABConfig(weights={"champion": 0.5, "challenger": 0.5})
TOKEN = "shared-decisions-benchmark-token"


def per_request_cost(n: int) -> dict:
    import ray

    from framework.serving.decisions import DecisionState, SharedStrategyHost
    from framework.serving.host import StrategyHost

    actor = ray.remote(DecisionState).options(num_cpus=0).remote(ABStrategy, CONFIG, ARMS)
    ids = [uuid.uuid4().hex for _ in range(n)]

    def play(host) -> float:
        t0 = time.perf_counter()
        for rid in ids:
            _, route = host.route(rid, None)
            host.observe(Outcome(rid, route.primary, 0.5))
        return (time.perf_counter() - t0) / n * 1e6

    async def shared_round() -> float:
        host = SharedStrategyHost(ABStrategy(CONFIG, arms=ARMS), ARMS, actor)
        cost = play(host)
        host._task.cancel()
        await host.sync()  # what the replica queued reaches the state holder (not timed)
        return cost

    plain = min(play(StrategyHost(ABStrategy(CONFIG, arms=ARMS), ARMS)) for _ in range(3))
    shared = min(asyncio.run(shared_round()) for _ in range(3))
    received = ray.get(actor.snapshot.remote())["shared"]["received"]
    ray.kill(actor)
    return {"plain_us": plain, "shared_us": shared, "received": received}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args(argv)

    from framework.engine import start_ray
    from framework.serving import ServedModel, deploy, shutdown_app

    start_ray(num_cpus=2)
    cost = per_request_cost(20_000)
    print(f"per request (route + outcome), A/B: plain host {cost['plain_us']:.1f} µs, "
          f"shared-state replica host {cost['shared_us']:.1f} µs ({cost['shared_us'] / cost['plain_us']:.2f}x); "
          f"the state holder received {cost['received']}")

    features = [f"f{i}" for i in range(30)]
    schema = InputSchema([FeatureSpec(f) for f in features])
    models = [ServedModel(arm, v, build_onnx(seed), schema, ["0", "1"], "input", "probabilities")
              for seed, (arm, v) in enumerate(ARMS.items())]
    apps = {}
    try:
        for name, options in (("one replica", {"replicas": 1}),
                              ("two, shared", {"replicas": 2}),
                              ("two, alone", {"replicas": 2, "shared_decisions": False})):
            app_name = f"bench-shared-{len(apps)}"
            apps[name] = deploy(models, ABStrategy, CONFIG, app_name=app_name, route_prefix=f"/{app_name}",
                                admin_token=TOKEN, num_cpus=0.3, **options)
        rng = np.random.default_rng(0)
        import orjson

        bodies = [orjson.dumps({"instances": [dict(zip(features, map(float, rng.normal(size=30))))]})
                  for _ in range(args.requests)]
        targets = [Target(name, app.predict_url, bodies) for name, app in apps.items()]
        warmup, measured = list(range(200)), list(range(200, args.requests))
        results = {conc: asyncio.run(measure_level(targets, conc, warmup, measured, args.rounds)) for conc in (8, 16)}
    finally:
        for app in apps.values():
            shutdown_app(app)
    one8, one16 = results[8]["one replica"], results[16]["one replica"]
    print("| app | p50 ms, conc 8 | vs one | req/s, conc 16 | vs one | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in apps:
        r8, r16 = results[8][name], results[16][name]
        print(f"| {name} | {r8['p50']:.2f} | {r8['p50'] / one8['p50']:.2f}x | {r16['rps']:.0f} | "
              f"{r16['rps'] / one16['rps']:.2f}x | {r8['errors'] + r16['errors']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
