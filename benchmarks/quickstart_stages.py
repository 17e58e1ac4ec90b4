"""The quickstart recipe's wall time split by stage, then the served model's HTTP latency through
our ingress against a plain Ray Serve deployment of the same ONNX file (serving_latency.py),
all in one process and one Ray instance.

    python benchmarks/quickstart_stages.py [--runs 1] [--requests 300]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1, help="quickstart runs (the first pays Ray start-up)")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)

    import serving_latency

    from framework.plugins import default_components
    from framework.run import Reporter, execute, plan_recipe

    port = serving_latency.free_port()
    work = Path(tempfile.mkdtemp(prefix="bench-quickstart-"))
    store = work / "store"
    overrides = ["+recipe=quickstart", f"store.uri={store}", f"runs_dir={work / 'runs'}", f"serve.port={port}"]
    rows: list[dict[str, float]] = []
    totals: list[float] = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        plan = plan_recipe(overrides)
        plan_s = time.perf_counter() - t0
        result = execute(plan, default_components(), Reporter(quiet=True))
        totals.append(time.perf_counter() - t0)
        rows.append({"plan (compose + validate)": plan_s, **{s.stage: s.seconds for s in result.stages if s.status == "ok"}})
        accuracy = next(s.metrics["test_accuracy"] for s in result.stages if s.stage == "train")

    print(f"Quickstart wall time by stage (seconds), {args.runs} run(s); test accuracy of the last: {accuracy:.4f}")
    print()
    header = "| stage | " + " | ".join(f"run {i + 1}" for i in range(len(rows))) + " |"
    print(header)
    print("|---|" + "---:|" * len(rows))
    for stage in rows[0]:
        print(f"| {stage} | " + " | ".join(f"{r.get(stage, 0.0):.2f}" for r in rows) + " |")
    print("| **total** | " + " | ".join(f"**{t:.2f}**" for t in totals) + " |")
    print()
    return serving_latency.main(
        ["--store", str(store), "--model-ref", "breast_cancer_mlp@prod", "--port", str(port),
         "--requests", str(args.requests)]
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
