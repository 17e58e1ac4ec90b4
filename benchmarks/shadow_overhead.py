"""Shadow overhead: what a shadow arm costs the client, side by side in one run.

One app, one ingress replica, four arms serving the same ONNX bytes (the 30 -> 32 -> 2 MLP of
serving_latency.py); a benchmark-local strategy routes by the request's key, so the four
variants differ only in the route, in the same process:

  (a) none    the primary alone
  (b) same    + a shadow of the same model
  (c) sleepy  + a shadow that answers 50 ms late (fault injection: extra_latency_ms=50)
  (d) broken  + a shadow that always raises (fault injection: error_rate=1.0)

Sequential requests (one instance each) over a keep-alive connection, in many short alternating
rounds so that load from elsewhere on the machine hits every variant alike. p99 of 300 requests
is the 3rd-worst sample: read it as noisy; p50 is the stable number. The shadows' own outcomes,
as the strategy observed them, show that they did run.

    python benchmarks/shadow_overhead.py [--requests 300] [--rounds 20]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from serving_latency import N_CLASSES, N_FEATURES, Load, build_onnx, free_port, pct  # noqa: E402

from framework.components import Decision, Outcome, Route, RouteRequest, TrafficStrategy, Verdict  # noqa: E402

VARIANTS = {"none": (), "same": ("same",), "sleepy": ("sleepy",), "broken": ("broken",)}
LABELS = {"none": "(a) no shadow", "same": "(b) shadow, same model", "sleepy": "(c) shadow sleeping 50 ms",
          "broken": "(d) shadow always raising"}


class KeyedShadows(TrafficStrategy):
    """The primary answers every request; the request's key picks which arm shadows it."""

    name = "bench-shadows"

    def __init__(self, config, arms):
        super().__init__(config, arms)
        self.routes = {key: Route("primary", shadows) for key, shadows in VARIANTS.items()}
        self.seen = {arm: {"outcomes": 0, "errors": 0, "latency_ms": 0.0} for arm in arms}

    def route(self, request: RouteRequest) -> Route:
        return self.routes[request.key or "none"]

    def observe(self, outcome: Outcome) -> None:
        s = self.seen[outcome.arm]
        s["outcomes"] += 1
        s["errors"] += outcome.error
        s["latency_ms"] += outcome.latency_ms

    def decide(self) -> Decision:
        return Decision(Verdict.HOLD, "benchmark")

    def state(self) -> dict:
        return {arm: {**s, "mean_latency_ms": s["latency_ms"] / s["outcomes"] if s["outcomes"] else None}
                for arm, s in self.seen.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="measured requests per variant")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=20, help="alternating rounds")
    parser.add_argument("--port", type=int, default=None, help="Serve HTTP port (default: a free one)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import httpx
    import ray.cloudpickle

    from framework.components import FeatureSpec, InputSchema
    from framework.engine import start_ray
    from framework.serving import ServedModel, deploy, shutdown_app
    from framework.serving.app import ensure_serve

    if __name__ != "__main__":  # imported: ship the strategy to the replica by value (as __main__ is)
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    onnx_bytes = build_onnx()
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    schema = InputSchema([FeatureSpec(n) for n in names])
    models = [ServedModel(arm, f"bench-{arm}", onnx_bytes, schema, list(range(N_CLASSES)), "input", "probabilities")
              for arm in ("primary", "same", "sleepy", "broken")]
    port = args.port or free_port()
    start_ray(num_cpus=2)
    ensure_serve("127.0.0.1", port)
    t0 = time.perf_counter()
    app = deploy(
        models, KeyedShadows, None, port=port, route_prefix="/shadows", app_name="bench-shadows",
        faults={"sleepy": {"extra_latency_ms": 50.0}, "broken": {"error_rate": 1.0}},
    )
    print(f"app deployed in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(args.requests + args.warmup, N_FEATURES)).astype(float).tolist()
    bodies = {key: [json.dumps({"instances": [dict(zip(names, r))], "key": key}).encode() for r in rows]
              for key in VARIANTS}
    # Same answer whatever shadows, or the comparison means nothing.
    with httpx.Client(trust_env=False, headers={"Content-Type": "application/json"}) as c:
        answers = {key: c.post(app.predict_url, content=bodies[key][0]).json()["probabilities"] for key in VARIANTS}
        assert all(a == answers["none"] for a in answers.values()), answers

    load = Load(app.predict_url, 1)
    for key in VARIANTS:  # warm-up: connection, code paths, ORT arenas
        load.run(bodies[key][: args.warmup])
    lat = {k: [] for k in VARIANTS}
    bad = {k: 0 for k in VARIANTS}
    measured = list(range(args.warmup, args.warmup + args.requests))
    order = list(VARIANTS)
    for r in range(args.rounds):
        part = measured[r :: args.rounds]
        for key in order if r % 2 == 0 else reversed(order):
            latencies, _, errors = load.run([bodies[key][i] for i in part])
            lat[key] += latencies
            bad[key] += errors
    load.close()
    time.sleep(0.3)  # let the last sleepy shadows finish before reading what was observed
    with httpx.Client(trust_env=False) as c:
        snap = c.get(app.url + "-/strategy", headers=app.admin_headers()).json()

    base = {"p50": statistics.median(lat["none"]), "p99": pct(lat["none"], 99)}
    print()
    print(f"Shadow overhead, {args.requests} sequential requests per variant, 1 instance per request, "
          f"{N_FEATURES}->32->{N_CLASSES} ONNX MLP in the ingress replica, Ray {ray.__version__}, {os.cpu_count()} cores")
    print()
    print("| variant | p50 ms | p99 ms | p50 / (a) | p99 / (a) | non-200 |")
    print("|---|---:|---:|---:|---:|---:|")
    for key in VARIANTS:
        p50, p99 = statistics.median(lat[key]), pct(lat[key], 99)
        print(f"| {LABELS[key]} | {p50:.2f} | {p99:.2f} | {p50 / base['p50']:.2f}x | {p99 / base['p99']:.2f}x | {bad[key]} |")
    print()
    print("Shadow outcomes the strategy observed (warm-up and check requests included):")
    print()
    print("| shadow arm | outcomes | errors | mean latency ms |")
    print("|---|---:|---:|---:|")
    for arm in ("same", "sleepy", "broken"):
        s = snap["state"][arm]
        print(f"| {arm} | {s['outcomes']} | {s['errors']} | {s['mean_latency_ms']:.2f} |")
    print(f"\nshadows started {snap['shadows']['started']}, skipped (over the in-flight bound) {snap['shadows']['skipped']}")
    shutdown_app(app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
