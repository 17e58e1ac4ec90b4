"""Monitoring figures, side by side in one run:

* ``drift``: power and false alarms of the ``whylogs_drift`` monitor's test path (whylogs
  profiles -> KLL / frequent-items summaries -> KS per feature -> Holm over the window) over
  ``--seeds`` seeds: a reference of ``--reference-rows`` rows of 30 correlated Gaussian features
  (the training data), windows of 1,000 served rows. Unshifted windows: the share with *any*
  alarm (goal <= 5% at alpha 0.05). A window where one of the 30 features moved by 0.5 training
  standard deviations: the share where that feature is flagged (goal >= 95%), and the share with
  an alarm on another feature. The same tests on the raw values (no sketches) beside it, and
  the uncorrected per-feature p < 0.05 rule the monitor used before;
* ``profiling``: profiling throughput of the monitor's ``profile()`` (typed casts, then whylogs)
  against calling ``whylogs.log(frame).view()`` directly on the same batches;
* ``metrics``: the cost of ``GET /metrics`` bookkeeping on the request path: the ingress called
  in-process (no Ray, no HTTP) with metrics on and off, and a real Ray Serve app per variant
  (direct ingress) under load at concurrency 1 and 8 beside the bare-process limit (one uvicorn +
  onnxruntime process), p50 in alternating rounds.

* ``cbpe``: accuracy estimated before labels against the true accuracy, window by window, on
  real data with a shift (seattle-weather by quarter, a slice of breast cancer);

    python benchmarks/monitoring.py [--seeds 200] [--parts drift profiling cbpe metrics]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

N_FEATURES = 30
WINDOW = 1000
SHIFTED = 7


def gaussian(rng, rows: int):
    """30 standard normal features, pairs correlated (0.6), as a DataFrame."""
    import pandas as pd

    x = rng.normal(size=(rows, N_FEATURES))
    x[:, 1::2] = 0.6 * x[:, ::2] + 0.8 * x[:, 1::2]
    return pd.DataFrame(x, columns=[f"f{i:02d}" for i in range(N_FEATURES)])


# ---------------------------------------------------------------------------------------------
def drift_part(seeds: int, reference_rows: int, alpha: float) -> dict:
    from framework.monitoring import DriftSettings, assess, summarize
    from plugins.monitor_whylogs import profile, summaries

    columns = [f"f{i:02d}" for i in range(N_FEATURES)]
    numeric = dict.fromkeys(columns, True)
    settings = DriftSettings(alpha=alpha, min_effect=0.05)
    shifted_name = columns[SHIFTED]
    counts = {k: 0 for k in ("sketch_any_alarm_unshifted", "sketch_detected", "sketch_other_alarm_shifted",
                             "exact_any_alarm_unshifted", "exact_detected",
                             "uncorrected_any_alarm_unshifted", "uncorrected_detected")}
    t0 = time.perf_counter()
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        reference = gaussian(rng, reference_rows)
        current = gaussian(rng, WINDOW)
        moved = current.copy()
        moved[shifted_name] += 0.5 * reference[shifted_name].std()
        ref_sketch = summaries(profile(reference, numeric), columns, numeric)
        ref_exact = {c: summarize(reference[c]) for c in columns}
        for name, frame in (("unshifted", current), ("shifted", moved)):
            sketch = assess(ref_sketch, summaries(profile(frame, numeric), columns, numeric), settings)
            exact = assess(ref_exact, {c: summarize(frame[c]) for c in columns}, settings)
            flagged = {t.column for t in sketch.drifted}
            uncorrected = {t.column for t in exact.tests if t.pvalue < alpha}
            if name == "unshifted":
                counts["sketch_any_alarm_unshifted"] += bool(flagged)
                counts["exact_any_alarm_unshifted"] += bool(exact.drifted)
                counts["uncorrected_any_alarm_unshifted"] += bool(uncorrected)
            else:
                counts["sketch_detected"] += shifted_name in flagged
                counts["sketch_other_alarm_shifted"] += bool(flagged - {shifted_name})
                counts["exact_detected"] += shifted_name in {t.column for t in exact.drifted}
                counts["uncorrected_detected"] += shifted_name in uncorrected
    seconds = time.perf_counter() - t0
    return {"seeds": seeds, "reference_rows": reference_rows, "window_rows": WINDOW, "alpha": alpha,
            "seconds": seconds, **{k: v / seeds for k, v in counts.items()}}


def wilson(share: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson interval of a share of n."""
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


# ---------------------------------------------------------------------------------------------
def cbpe_part() -> dict:
    """Accuracy estimated before labels (calibrated confidence) against the true accuracy, per window:
    seattle-weather (vega_datasets: 1,461 real dated days; the model learns 2012, is calibrated on
    2013, serves 2014-2015 month by month) and breast cancer (scikit-learn; calibrated on held-out
    rows, served the large-mass slice, `mean radius` > 15, in windows of 20)."""
    import pandas as pd
    from sklearn.datasets import load_breast_cancer
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from vega_datasets import data

    from framework.monitoring import Calibration, estimate_accuracy

    def windows_of(model, x_cal, y_cal, served_windows):
        classes = list(model.classes_)
        p_cal = model.predict_proba(x_cal)
        calibration = Calibration(p_cal.max(axis=1), [classes[i] == y for i, y in zip(p_cal.argmax(axis=1), y_cal)])
        rows = []
        for name, x, y in served_windows:
            p = model.predict_proba(x)
            est = estimate_accuracy(p.max(axis=1), calibration)["estimated_accuracy"]
            true = float(np.mean([classes[i] == t for i, t in zip(p.argmax(axis=1), y)]))
            rows.append({"window": name, "rows": len(y), "estimated": est, "true": true, "error": abs(est - true)})
        return calibration.reference_accuracy, rows

    out = {}
    weather = data.seattle_weather()
    weather["date"] = pd.to_datetime(weather["date"])
    weather["month"] = weather["date"].dt.month
    features = ["precipitation", "temp_max", "temp_min", "wind", "month"]
    year = weather["date"].dt.year
    train, cal, served = weather[year == 2012], weather[year == 2013], weather[year >= 2014]
    model = RandomForestClassifier(n_estimators=200, min_samples_leaf=5, random_state=0).fit(train[features], train["weather"])
    served_windows = [(str(period), part[features], part["weather"].tolist())
                      for period, part in served.groupby(served["date"].dt.to_period("Q"))]
    ref, rows = windows_of(model, cal[features], cal["weather"].tolist(), served_windows)
    out["seattle_weather"] = {"model": "random forest (200 trees), trained on 2012", "calibrated_on": "2013",
                              "reference_accuracy": ref, "windows": rows,
                              "mae": float(np.mean([r["error"] for r in rows]))}

    # the same days, the years mixed: the model learns half of every year, is calibrated on a
    # quarter, serves the last quarter season by season (covariate shift: the seasons move, the
    # labelling does not)
    fit_w, rest_w = train_test_split(weather, test_size=0.5, random_state=0)
    cal_w, served_w = train_test_split(rest_w, test_size=0.5, random_state=0)
    model = RandomForestClassifier(n_estimators=200, min_samples_leaf=5, random_state=0).fit(fit_w[features], fit_w["weather"])
    season = served_w["date"].dt.month.map(lambda m: ("winter", "spring", "summer", "autumn")[(m % 12) // 3])
    served_windows = [(name, part[features], part["weather"].tolist()) for name, part in served_w.groupby(season)]
    ref, rows = windows_of(model, cal_w[features], cal_w["weather"].tolist(), served_windows)
    out["seattle_weather_seasons"] = {"model": "random forest (200 trees), trained on half of 2012-2015",
                                      "calibrated_on": "a quarter of 2012-2015", "reference_accuracy": ref,
                                      "windows": rows, "mae": float(np.mean([r["error"] for r in rows]))}

    cancer = load_breast_cancer(as_frame=True)
    frame = cancer.frame
    large = frame[frame["mean radius"] > 15]
    rest = frame[frame["mean radius"] <= 15]
    fit, cal2 = train_test_split(rest, test_size=0.4, random_state=0, stratify=rest["target"])
    names = list(cancer.feature_names)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=1000)).fit(fit[names], fit["target"])
    served_windows = [(f"large masses {i // 20 + 1}", large[names].iloc[i:i + 20], large["target"].iloc[i:i + 20].tolist())
                      for i in range(0, len(large), 20)]
    ref, rows = windows_of(model, cal2[names], cal2["target"].tolist(), served_windows)
    out["breast_cancer_large_masses"] = {"model": "logistic regression, trained on masses of radius <= 15",
                                         "calibrated_on": "held-out masses of radius <= 15",
                                         "reference_accuracy": ref, "windows": rows,
                                         "mae": float(np.mean([r["error"] for r in rows]))}
    return out


# ---------------------------------------------------------------------------------------------
def profiling_part(batches: int, repeat: int) -> dict:
    from plugins._whylogs_compat import why
    from plugins.monitor_whylogs import profile

    rng = np.random.default_rng(0)
    frames = []
    for _ in range(batches):
        frame = gaussian(rng, WINDOW)
        frame["prediction"] = rng.choice(["benign", "malignant"], WINDOW)
        frames.append(frame)
    numeric = {c: c != "prediction" for c in frames[0].columns}
    ours = lambda f: profile(f, numeric)  # noqa: E731
    direct = lambda f: why.log(f).view()  # noqa: E731
    ours(frames[0]), direct(frames[0])  # warm-up
    best = {"ours": math.inf, "whylogs": math.inf}
    for r in range(repeat):
        for name, fn in ((("ours", ours), ("whylogs", direct)) if r % 2 == 0 else (("whylogs", direct), ("ours", ours))):
            t0 = time.perf_counter()
            for f in frames:
                fn(f)
            best[name] = min(best[name], time.perf_counter() - t0)
    rows = batches * WINDOW
    return {"rows": rows, "columns": len(frames[0].columns), "ours_rows_per_s": rows / best["ours"],
            "whylogs_rows_per_s": rows / best["whylogs"], "ratio": best["whylogs"] / best["ours"]}


# ---------------------------------------------------------------------------------------------
def metrics_in_process(requests: int, rounds: int) -> dict:
    from framework.components import FeatureSpec, InputSchema
    from framework.serving import ServedModel
    from framework.serving.http import Ingress
    from plugins.strategy_single import SingleConfig, SingleStrategy

    from ingress_hot_path import request
    from serving_latency import build_onnx

    onnx_bytes = build_onnx()
    schema = InputSchema([FeatureSpec(f"f{i}") for i in range(N_FEATURES)])
    model = ServedModel("primary", "v1", onnx_bytes, schema, [0, 1], "input", "probabilities")
    variants = {"metrics off": Ingress.func_or_class([model], SingleStrategy, SingleConfig(), metrics=False),
                "metrics on": Ingress.func_or_class([model], SingleStrategy, SingleConfig(), metrics=True)}
    rng = np.random.default_rng(0)
    bodies = [json.dumps({"instances": [{f"f{i}": float(v) for i, v in enumerate(rng.normal(size=N_FEATURES))}]}).encode()
              for _ in range(requests)]

    async def timed(ingress, chunk):
        out = []
        for body in chunk:
            t0 = time.perf_counter()
            response = await ingress(request(body))
            out.append((time.perf_counter() - t0) * 1e6)
            assert response.status_code == 200, response.body
        return out

    loop = asyncio.new_event_loop()
    for ingress in variants.values():
        loop.run_until_complete(timed(ingress, bodies[:200]))
    samples = {name: [] for name in variants}
    per_round = max(1, requests // rounds)
    for r in range(rounds):
        chunk = bodies[r * per_round:(r + 1) * per_round]
        for name in (list(variants) if r % 2 == 0 else list(reversed(list(variants)))):
            samples[name] += loop.run_until_complete(timed(variants[name], chunk))
    loop.close()
    exposition = variants["metrics on"].metrics.exposition()
    return {name: {"p50_us": statistics.median(v), "mean_us": statistics.fmean(v)} for name, v in samples.items()} | {
        "exposition_bytes": len(exposition)}


def metrics_served(requests: int, concurrency: list[int], rounds: int, warmup: int) -> dict:
    import uvloop

    from framework.engine import start_ray
    from framework.serving import deploy, shutdown_app
    from framework.serving.app import ensure_serve
    from plugins.strategy_single import SingleConfig, SingleStrategy

    from serving_latency import BENCH_NUM_CPUS, Target, benchmark_model, free_port, measure_level, start_bare

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    model, what = benchmark_model(None, None)
    names = model.schema.names
    onnx_file = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
    onnx_file.write(model.onnx_bytes)
    onnx_file.close()
    apps, bare = [], None
    try:
        start_ray(num_cpus=2)
        port = free_port()
        ensure_serve("127.0.0.1", port)
        bare, bare_url = start_bare(onnx_file.name, names, model.input_name, model.output_name)
        urls = {"bare": bare_url}
        for name, on in (("metrics off", False), ("metrics on", True)):
            slug = name.replace(" ", "-")
            app = deploy([model], SingleStrategy, SingleConfig(), port=port, route_prefix=f"/{slug}",
                         app_name=f"bench-{slug}", ingress="direct", num_cpus=BENCH_NUM_CPUS, metrics=on)
            apps.append(app)
            urls[name] = app.predict_url
        rng = np.random.default_rng(0)
        rows = rng.normal(size=(requests + warmup, len(names))).astype(np.float32).astype(float).tolist()
        bodies = [json.dumps({"instances": [dict(zip(names, r))]}).encode() for r in rows]
        targets = [Target(n, urls[n], bodies) for n in ("bare", "metrics off", "metrics on")]
        results = {}
        for conc in concurrency:
            level_rounds = max(1, min(rounds, requests // max(conc, 1)))
            results[conc] = uvloop.run(measure_level(targets, conc, list(range(warmup)),
                                                     list(range(warmup, warmup + requests)), level_rounds))
        import httpx

        scraped = httpx.get(apps[1].url + "metrics", timeout=10, trust_env=False).text
        served = [line for line in scraped.splitlines() if line.startswith("framework_requests_total")]
    finally:
        for a in apps:
            try:
                shutdown_app(a)
            except Exception:
                pass
        if bare is not None:
            bare.terminate()
        os.unlink(onnx_file.name)
    return {"what": what, "levels": results, "scraped_requests": served}


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", nargs="+", default=["drift", "profiling", "cbpe", "metrics"])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--batches", type=int, default=20, help="profiling: batches of 1,000 rows")
    parser.add_argument("--requests", type=int, default=3000, help="metrics: requests per variant and level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args(argv)
    out: dict = {}

    if "drift" in args.parts:
        d = out["drift"] = drift_part(args.seeds, args.reference_rows, args.alpha)
        n = d["seeds"]
        print(f"Drift: {n} seeds, reference {d['reference_rows']} rows x {N_FEATURES} features, windows of "
              f"{d['window_rows']} rows, alpha {d['alpha']} for the window (Holm), {d['seconds']:.0f} s")
        print()
        print("| test path | unshifted windows with any alarm | 0.5 sd shift in 1 of 30 features detected | "
              "shifted windows with an alarm on another feature |")
        print("|---|---:|---:|---:|")
        lo, hi = wilson(d["sketch_any_alarm_unshifted"], n)
        print(f"| whylogs profiles (the monitor) | {d['sketch_any_alarm_unshifted']:.1%} (95% CI {lo:.1%}-{hi:.1%}) | "
              f"{d['sketch_detected']:.1%} | {d['sketch_other_alarm_shifted']:.1%} |")
        lo, hi = wilson(d["exact_any_alarm_unshifted"], n)
        print(f"| raw values, same tests | {d['exact_any_alarm_unshifted']:.1%} (95% CI {lo:.1%}-{hi:.1%}) | "
              f"{d['exact_detected']:.1%} | |")
        print(f"| before: p < {d['alpha']} per feature, no correction | {d['uncorrected_any_alarm_unshifted']:.1%} | "
              f"{d['uncorrected_detected']:.1%} | |")
        print()
    if "cbpe" in args.parts:
        c = out["cbpe"] = cbpe_part()
        for name, r in c.items():
            print(f"Accuracy before labels, {name}: {r['model']}, calibrated on {r['calibrated_on']} "
                  f"(accuracy there {r['reference_accuracy']:.3f})")
            print()
            print("| window | rows | estimated | true | abs. error |")
            print("|---|---:|---:|---:|---:|")
            for w in r["windows"]:
                print(f"| {w['window']} | {w['rows']} | {w['estimated']:.3f} | {w['true']:.3f} | {w['error']:.3f} |")
            print(f"| mean absolute error | | | | {r['mae']:.3f} |")
            print()
    if "profiling" in args.parts:
        p = out["profiling"] = profiling_part(args.batches, 5)
        print(f"Profiling: {p['rows']} rows x {p['columns']} columns in batches of {WINDOW}, best of 5")
        print()
        print("| profiler | rows/s | vs whylogs directly |")
        print("|---|---:|---:|")
        print(f"| whylogs.log(frame).view() | {p['whylogs_rows_per_s']:,.0f} | 1.00x |")
        print(f"| the monitor's profile() | {p['ours_rows_per_s']:,.0f} | {p['ratio']:.2f}x |")
        print()
    if "metrics" in args.parts:
        m = out["metrics_in_process"] = metrics_in_process(args.requests, args.rounds)
        print(f"Metrics on the request path, in-process (no Ray, no HTTP), {args.requests} predict calls per variant")
        print()
        print("| variant | p50 µs | mean µs |")
        print("|---|---:|---:|")
        for name in ("metrics off", "metrics on"):
            print(f"| {name} | {m[name]['p50_us']:.1f} | {m[name]['mean_us']:.1f} |")
        print(f"| ratio on / off | {m['metrics on']['p50_us'] / m['metrics off']['p50_us']:.3f}x | "
              f"{m['metrics on']['mean_us'] / m['metrics off']['mean_us']:.3f}x |")
        print()
        s = out["metrics_served"] = metrics_served(args.requests, args.concurrency, args.rounds, 64)
        print(f"Metrics on a served app (Ray Serve, direct ingress), {s['what']}, {args.requests} requests per app and level")
        print()
        print("| concurrency | app | p50 ms | p99 ms | req/s | p50 vs metrics off |")
        print("|---:|---|---:|---:|---:|---:|")
        for conc, level in s["levels"].items():
            off = level["metrics off"]["p50"]
            for name in ("bare", "metrics off", "metrics on"):
                v = level[name]
                print(f"| {conc} | {name} | {v['p50']:.2f} | {v['p99']:.2f} | {v['rps']:.0f} | {v['p50'] / off:.3f}x |")
        print()
        print("scraped after the run: " + "; ".join(s["scraped_requests"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
