"""The closed loop, timed (recipes/weather_loop.yaml, real data): from the first drifted request
to the retrained model promoted to ``prod``, and the requests that failed meanwhile.

One run: Seattle's weather, a model trained on 2012 served (Ray Serve, proxy ingress), 2014's days
sent by simulated users with late labels (``traffic``), the monitors (drift, accuracy), the
``retrain`` action (2014's file appended as a new data version, trained, exported, registered),
the in-place redeploy as a canary against ``prod`` (a simulated user keeps sending requests
during the retrain and the redeploy) and the canary driven to its decision. Each figure is read
from the run's own records (traffic and rollout start / decision times, every status code).

    python benchmarks/closed_loop.py [--runs 3]
"""
from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
WEATHER = HERE.parent / "recipes" / "data" / "weather"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(tmp: Path, port: int, seed: int) -> dict:
    from framework.plugins import default_components
    from framework.run import Reporter, execute, plan_recipe

    plan = plan_recipe(["+recipe=weather_loop", f"data.path={WEATHER / '2012.csv'}", f"traffic.path={WEATHER / '2014.csv'}",
                        f"actions.1.data.path={WEATHER / '2014.csv'}", f"store.uri={tmp / 'store'}",
                        f"runs_dir={tmp / 'runs'}", f"serve.port={port}", f"seed={seed}"])
    result = execute(plan, default_components(), Reporter(quiet=True), keep_serving=False)
    stages = {s.stage: s for s in result.stages}
    events = json.loads(next(result.run_dir.glob("stages/*-act/actions.json")).read_text())
    done = [e for e in events if e["action"] == "retrain" and e["status"] == "done"]
    if result.status != "ok" or not done:
        raise SystemExit(f"run {result.run_dir} did not close the loop: {result.summary['error']} {events}")
    retrain = done[0]["result"]
    first_drifted = stages["traffic"].metrics["started_at"]
    meanwhile = retrain["during_retrain_and_deploy"]
    rollout = retrain["rollout"]
    return {
        "seed": seed,
        "to_promoted_s": retrain["decided_at"] - first_drifted,
        "to_alert_s": min(e["alert_time"] for e in events) - first_drifted,
        "retrain_s": retrain["retrain_seconds"], "deploy_s": rollout["deploy_seconds"],
        "promoted": retrain["promoted"], "verdict": rollout["verdict"],
        "requests": stages["traffic"].metrics["requests"] + meanwhile["requests"] + rollout["requests"],
        "errors": stages["traffic"].metrics["errors"] + meanwhile["errors"] + rollout["errors"],
        "during": meanwhile, "rollout_requests": rollout["requests"],
        "drift_alerts": sum(e["alert_kind"] == "drift" for e in events if e["action"] == "log"),
        "accuracy_alerts": sum(e["alert_kind"] == "accuracy_drop" for e in events if e["action"] == "log"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    rows = []
    port = free_port()
    for i in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            rows.append(one_run(Path(tmp), port, 5 + i))
        r = rows[-1]
        print(f"run {i + 1} (seed {r['seed']}): first drifted request -> alert {r['to_alert_s']:.1f} s, -> promoted "
              f"{r['to_promoted_s']:.1f} s (retrain {r['retrain_s']:.1f} s, redeploy {r['deploy_s']:.1f} s); "
              f"requests {r['requests']} (during retrain+redeploy {r['during']['requests']}), failed {r['errors']}; "
              f"alerts: drift {r['drift_alerts']}, accuracy {r['accuracy_alerts']}; {r['verdict']}", flush=True)
    print(f"median first drifted request -> promoted: {statistics.median(r['to_promoted_s'] for r in rows):.1f} s over "
          f"{len(rows)} runs; failed requests {sum(r['errors'] for r in rows)} of {sum(r['requests'] for r in rows)}")
    print(json.dumps(rows, default=str))


if __name__ == "__main__":
    main()
