"""Serving latency and throughput against the limit of the machine, side by side in one run:

* ``bare``: the bare-process limit, one uvicorn + Starlette + onnxruntime process, no Ray
  (``bare_server.py``);
* ``plain``: the most direct plain Ray Serve deployment of the same ONNX file, through Serve's
  HTTP proxy (``baselines.py``);
* ``ours-direct``: our ingress (strategy ``single``, ONNX in the ingress replica) reached on the
  replica's own port, the default; ``ours-direct x2``: two replicas behind our HAProxy balancer;
* ``ours-proxy``, ``ours-proxy x2``: the same through Serve's HTTP proxy (``serve.ingress=proxy``);
* ``bentoml``: BentoML serving the same ONNX file (``bentoml_service.py``, one worker), from its
  own virtualenv, which this script creates on first use (``--bentoml-venv``; BentoML's pinned
  dependencies are not the framework's).

Every app gets the same request mix (one instance per request, ``{"instances": [...]}``, plain's
``{"inputs": [...]}``) over keep-alive connections, at each concurrency level, in many short
rounds whose order alternates, so that load from elsewhere on a shared machine hits all alike.
Every Ray replica reserves the same CPU (0.25: seven replicas must fit on 2 cores). The client is
a small asyncio HTTP/1.1 client (uvloop) in this process: far cheaper per request than httpx
threads, but it still shares the 2 cores with the servers. p99 of a few hundred requests is
noisy; p50 and req/s are the stable figures.

    python benchmarks/serving_latency.py [--requests 400] [--concurrency 1 8 32] [--no-bentoml]
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

N_FEATURES, HIDDEN, N_CLASSES = 30, 32, 2
#: CPU each Ray replica reserves here (the framework's default is 0.5; 7 replicas must fit on 2)
BENCH_NUM_CPUS = 0.25
BENTOML_VERSION = "1.4.40"


def build_onnx(seed: int = 0) -> bytes:
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(N_FEATURES, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, N_CLASSES), torch.nn.Softmax(dim=1)
    ).eval()
    buf = io.BytesIO()
    torch.onnx.export(
        model,
        torch.zeros(1, N_FEATURES),
        buf,
        input_names=["input"],
        output_names=["probabilities"],
        dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
        dynamo=False,
    )
    return buf.getvalue()


def benchmark_model(store: str | None, model_ref: str | None):
    """(ServedModel, description): a registered model when ``model_ref`` is given, else the
    synthetic 30 -> 32 -> 2 MLP."""
    from framework.components import FeatureSpec, InputSchema
    from framework.serving import ServedModel

    if model_ref:
        from framework.registry import Registry
        from framework.registry.models import load_registered_model

        model = ServedModel.from_registered("primary", load_registered_model(Registry(store or ".framework/store"), model_ref))
        return model, f"registered model {model.version}"
    names = [f"f{i:02d}" for i in range(N_FEATURES)]
    model = ServedModel("primary", "bench-v1", build_onnx(), InputSchema([FeatureSpec(n) for n in names]),
                        [0, 1], "input", "probabilities")
    return model, f"{N_FEATURES}->{HIDDEN}->{N_CLASSES} ONNX MLP"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Load:
    """``concurrency`` persistent httpx clients in threads, for one app (serving_batching.py's load)."""

    def __init__(self, url: str, concurrency: int):
        import httpx

        self.url = url
        self.clients = [
            httpx.Client(timeout=30.0, trust_env=False, headers={"Content-Type": "application/json"})
            for _ in range(concurrency)
        ]
        self.pool = ThreadPoolExecutor(concurrency) if concurrency > 1 else None

    def run(self, bodies: list[bytes]) -> tuple[list[float], float, int]:
        """Send every body once; returns (latencies ms, wall seconds, non-200 count)."""

        def worker(client, chunk: list[bytes]) -> tuple[list[float], int]:
            lat, bad = [], 0
            for body in chunk:
                t0 = time.perf_counter()
                r = client.post(self.url, content=body)
                lat.append((time.perf_counter() - t0) * 1000.0)
                bad += r.status_code != 200
            return lat, bad

        n = len(self.clients)
        chunks = [bodies[i::n] for i in range(n)]
        t0 = time.perf_counter()
        if self.pool is None:
            results = [worker(self.clients[0], chunks[0])]
        else:
            results = list(self.pool.map(worker, self.clients, chunks))
        wall = time.perf_counter() - t0
        return [x for lat, _ in results for x in lat], wall, sum(b for _, b in results)

    def close(self) -> None:
        for c in self.clients:
            c.close()
        if self.pool:
            self.pool.shutdown()


def alternating_rounds(loads: dict, bodies: dict, measured: list[int], rounds: int) -> dict:
    """Each app's ``bodies[name][i]`` for ``i`` in ``measured``, split into ``rounds`` rounds whose
    order of apps alternates (load from elsewhere hits every app alike); closes the loads.
    Returns ``{name: {p50, p99, rps, errors}}``."""
    order = list(loads)
    lat = {n: [] for n in order}
    wall = {n: 0.0 for n in order}
    bad = {n: 0 for n in order}
    for r in range(rounds):
        part = measured[r::rounds]
        for name in order if r % 2 == 0 else reversed(order):
            got, w, b = loads[name].run([bodies[name][i] for i in part])
            lat[name] += got
            wall[name] += w
            bad[name] += b
    for name in order:
        loads[name].close()
    return {name: {"p50": statistics.median(lat[name]), "p99": pct(lat[name], 99),
                   "rps": len(lat[name]) / wall[name], "errors": bad[name]} for name in order}


# ---------------------------------------------------------------------------------------------
# The client: keep-alive HTTP/1.1 over asyncio streams, one connection per concurrent client
# ---------------------------------------------------------------------------------------------
class Target:
    """One app: where it listens and the request bytes it gets (headers + body, prebuilt)."""

    def __init__(self, name: str, url: str, bodies: list[bytes]):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.name, self.host, self.port, self.path = name, parts.hostname, parts.port, parts.path or "/"
        self.requests = [
            (f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
             f"Content-Length: {len(b)}\r\n\r\n").encode() + b
            for b in bodies
        ]


class Connection:
    def __init__(self, target: Target):
        self.target = target
        self.reader = self.writer = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.host, self.target.port)

    async def send(self, request: bytes) -> int:
        """One request, its whole answer read; returns the status (a closed connection is reopened)."""
        if self.writer is None:
            await self.open()
        self.writer.write(request)
        status_line = await self.reader.readline()
        if not status_line:  # the server closed an idle connection: once more on a new one
            await self.open()
            self.writer.write(request)
            status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif key == b"connection" and b"close" in value.lower():
                close = True
        if chunked:
            while True:
                size = int((await self.reader.readline()).split(b";")[0], 16)
                await self.reader.readexactly(size + 2)
                if size == 0:
                    break
        else:
            await self.reader.readexactly(length)
        if close:
            self.writer.close()
            self.reader = self.writer = None
        return status

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def run_round(conns: list[Connection], indices: list[int]) -> tuple[list[float], float, int]:
    """Every request in ``indices`` once, spread over the connections; (latencies ms, wall s, non-200)."""

    async def client(conn: Connection, mine: list[int]) -> tuple[list[float], int]:
        lat, bad = [], 0
        for i in mine:
            t0 = time.perf_counter()
            status = await conn.send(conn.target.requests[i])
            lat.append((time.perf_counter() - t0) * 1000.0)
            bad += status != 200
        return lat, bad

    n = len(conns)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(client(c, indices[k::n]) for k, c in enumerate(conns)))
    wall = time.perf_counter() - t0
    return [x for lat, _ in results for x in lat], wall, sum(b for _, b in results)


async def measure_level(targets: list[Target], conc: int, warmup: list[int], measured: list[int], rounds: int) -> dict:
    conns = {t.name: [Connection(t) for _ in range(conc)] for t in targets}
    for t in targets:  # connections, code paths, ORT arenas
        await asyncio.gather(*(c.open() for c in conns[t.name]))
        await run_round(conns[t.name], warmup)
    lat = {t.name: [] for t in targets}
    wall = {t.name: 0.0 for t in targets}
    bad = {t.name: 0 for t in targets}
    for r in range(rounds):
        part = measured[r::rounds]
        for t in targets if r % 2 == 0 else list(reversed(targets)):
            l, w, b = await run_round(conns[t.name], part)
            lat[t.name] += l
            wall[t.name] += w
            bad[t.name] += b
    for cs in conns.values():
        for c in cs:
            c.close()
    return {
        t.name: {"p50": statistics.median(lat[t.name]), "p99": pct(lat[t.name], 99),
                 "rps": len(lat[t.name]) / wall[t.name], "errors": bad[t.name]}
        for t in targets
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(q / 100 * len(ordered) + 0.5)) - 1))]


# ---------------------------------------------------------------------------------------------
# The servers that are not Ray Serve apps
# ---------------------------------------------------------------------------------------------
def wait_listening(url: str, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise RuntimeError(f"{what} not listening at {url} after {timeout:.0f} s")


def start_bare(onnx_path: str, names: list[str], input_name: str, output_name: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(HERE / "bare_server.py"), onnx_path, str(port), json.dumps(names),
                             input_name, output_name])
    wait_listening(f"http://127.0.0.1:{port}/healthz", proc, "the bare server")
    return proc, f"http://127.0.0.1:{port}/predict"


def bentoml_python(venv: Path) -> Path:
    """The BentoML virtualenv's python, created (``pip install bentoml onnxruntime numpy``) when missing."""
    python = venv / "bin" / "python"
    if not (python.exists() and subprocess.run([str(python), "-c", "import bentoml, onnxruntime"],
                                               capture_output=True).returncode == 0):
        print(f"creating {venv} for BentoML {BENTOML_VERSION} (once; not the framework's environment)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", f"bentoml=={BENTOML_VERSION}", "onnxruntime",
                        "numpy"], check=True)
    return python


def start_bentoml(python: Path, onnx_path: str, names: list[str], input_name: str, output_name: str):
    port = free_port()
    env = {**os.environ, "BENCH_ONNX": onnx_path, "BENCH_FEATURES": json.dumps(names), "BENCH_INPUT": input_name,
           "BENCH_OUTPUT": output_name, "BENTOML_DO_NOT_TRACK": "True", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(python), "-m", "bentoml", "serve", "bentoml_service:OnnxModel", "--host", "127.0.0.1",
                             "--port", str(port)], cwd=HERE, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(f"http://127.0.0.1:{port}/healthz", proc, "BentoML", timeout=180)
    return proc, f"http://127.0.0.1:{port}/predict"


def version_of(python: Path, package: str) -> str:
    done = subprocess.run([str(python), "-c", f"import importlib.metadata as m; print(m.version({package!r}))"],
                          capture_output=True, text=True)
    return done.stdout.strip() or "?"


# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="measured requests per app and concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--warmup", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=10, help="alternating rounds per level")
    parser.add_argument("--port", type=int, default=None, help="Serve HTTP port (default: a free one)")
    parser.add_argument("--no-bentoml", action="store_true", help="leave BentoML out")
    parser.add_argument("--bentoml-venv", default=str(HERE / ".bentoml-venv"), help="BentoML's own virtualenv")
    parser.add_argument("--store", default=None, help="serve a registered model from this store instead ...")
    parser.add_argument("--model-ref", default=None, help="... e.g. breast_cancer_mlp@prod")
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    import httpx
    import uvloop
    from ray import serve

    from baselines import plain_onnx_app
    from framework.engine import start_ray
    from framework.serving import deploy, shutdown_app
    from framework.serving.app import MAX_ONGOING_REQUESTS, ensure_serve
    from plugins.strategy_single import SingleConfig, SingleStrategy

    model, what = benchmark_model(args.store, args.model_ref)
    names, input_name, output_name = model.schema.names, model.input_name, model.output_name
    onnx_file = tempfile.NamedTemporaryFile(suffix=".onnx", delete=False)
    onnx_file.write(model.onnx_bytes)
    onnx_file.close()
    processes: list[subprocess.Popen] = []
    apps = []
    try:
        t0 = time.perf_counter()
        start_ray(num_cpus=2)
        port = args.port or free_port()
        ensure_serve("127.0.0.1", port)
        urls: dict[str, str] = {}
        bare, urls["bare"] = start_bare(onnx_file.name, names, input_name, output_name)
        processes.append(bare)
        bento_version = None
        if not args.no_bentoml:
            python = bentoml_python(Path(args.bentoml_venv))
            bento, urls["bentoml"] = start_bentoml(python, onnx_file.name, names, input_name, output_name)
            processes.append(bento)
            bento_version = version_of(python, "bentoml")
        ours = {"ours-direct": ("direct", 1), "ours-proxy": ("proxy", 1),
                "ours-direct x2": ("direct", 2), "ours-proxy x2": ("proxy", 2)}
        for name, (ingress, replicas) in ours.items():
            slug = name.replace(" ", "-")
            app = deploy([model], SingleStrategy, SingleConfig(), port=port, route_prefix=f"/{slug}", app_name=f"bench-{slug}",
                         ingress=ingress, replicas=replicas, num_cpus=BENCH_NUM_CPUS)
            apps.append(app)
            urls[name] = app.predict_url
        # Same CPU reservation and concurrency limit as ours: only the serving code differs.
        from framework.compat.ray_direct_ingress import replica_runtime_env

        plain = plain_onnx_app(model.onnx_bytes, input_name, output_name, max_ongoing_requests=MAX_ONGOING_REQUESTS,
                               ray_actor_options={"num_cpus": BENCH_NUM_CPUS,
                                                  "runtime_env": replica_runtime_env(direct=False)})
        serve.run(plain, name="bench-plain", route_prefix="/plain", blocking=False)
        apps.append("bench-plain")
        urls["plain"] = f"http://127.0.0.1:{port}/plain"
        print(f"servers up in {time.perf_counter() - t0:.1f} s", file=sys.stderr)

        rng = np.random.default_rng(0)
        x = rng.normal(size=(args.requests + args.warmup, len(names))).astype(np.float32)
        rows = x.astype(float).tolist()
        ours_bodies = [json.dumps({"instances": [dict(zip(names, r))]}).encode() for r in rows]
        plain_bodies = [json.dumps({"inputs": [r]}).encode() for r in rows]
        order = ["bare", "ours-direct", "ours-proxy", "plain"] + (["bentoml"] if "bentoml" in urls else []) + [
            "ours-direct x2", "ours-proxy x2"]
        targets = [Target(n, urls[n], plain_bodies if n == "plain" else ours_bodies) for n in order]

        # The same answers from all, or the comparison means nothing.
        with httpx.Client(trust_env=False, timeout=30, headers={"Content-Type": "application/json"}) as c:
            _wait_plain(c, urls["plain"], plain_bodies[0])
            for i in range(3):
                want = c.post(urls["plain"], content=plain_bodies[i]).json()["probabilities"]
                for n in order:
                    if n != "plain":
                        got = c.post(urls[n], content=ours_bodies[i], headers={"Content-Type": "application/json"}).json()
                        assert np.allclose(got["probabilities"], want, atol=1e-6), (n, got, want)

        warmup = list(range(args.warmup))
        measured = list(range(args.warmup, args.warmup + args.requests))
        results: dict[int, dict] = {}
        for conc in args.concurrency:
            rounds = max(1, min(args.rounds, args.requests // max(conc, 1)))
            results[conc] = uvloop.run(measure_level(targets, conc, warmup, measured, rounds))
    finally:
        for a in apps:
            try:
                shutdown_app(a)
            except Exception:
                pass
        for p in processes:
            p.terminate()
        os.unlink(onnx_file.name)

    import ray

    print()
    print(f"Serving latency and throughput, {args.requests} requests per app and level, 1 instance per request, "
          f"{what}, Ray {ray.__version__}" + (f", BentoML {bento_version}" if bento_version else "") +
          f", {os.cpu_count()} cores")
    print()
    print("| concurrency | app | p50 ms | p99 ms | req/s | req/s vs bare | p50 vs bare | non-200 |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for conc, level in results.items():
        base = level["bare"]
        for name in order:
            m = level[name]
            print(f"| {conc} | {name} | {m['p50']:.2f} | {m['p99']:.2f} | {m['rps']:.0f} | "
                  f"{m['rps'] / base['rps']:.2f}x | {m['p50'] / base['p50']:.2f}x | {m['errors']} |")
    print()
    print("| goal | measured | met |")
    print("|---|---|---|")
    for conc in [c for c in (1, 8) if c in results]:
        lv = results[conc]
        ratio = lv["ours-direct"]["rps"] / lv["bare"]["rps"]
        print(f"| ours-direct throughput >= 0.5x bare, conc. {conc} | {ratio:.2f}x | {'yes' if ratio >= 0.5 else 'no'} |")
        p50 = lv["ours-direct"]["p50"] / lv["bare"]["p50"]
        print(f"| ours-direct p50 <= 2x bare, conc. {conc} | {p50:.2f}x | {'yes' if p50 <= 2 else 'no'} |")
        if "bentoml" in lv:
            vs = lv["ours-direct"]["rps"] / lv["bentoml"]["rps"]
            print(f"| ours-direct ahead of BentoML, conc. {conc} | {vs:.2f}x its req/s, p50 "
                  f"{lv['ours-direct']['p50']:.2f} vs {lv['bentoml']['p50']:.2f} ms | {'yes' if vs > 1 else 'no'} |")
    if 32 in results:
        lv = results[32]
        two = lv["ours-direct x2"]["rps"] / lv["ours-direct"]["rps"]
        print(f"| two direct replicas behind the balancer >= 1.5x one, conc. 32 | {two:.2f}x | {'yes' if two >= 1.5 else 'no'} |")
    return 0


def _wait_plain(client, url: str, body: bytes, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if client.post(url, content=body).status_code == 200:
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"plain Ray Serve not answering at {url}")


if __name__ == "__main__":
    sys.exit(main())
