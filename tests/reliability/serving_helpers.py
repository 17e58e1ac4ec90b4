"""What the reliability tests share: a small real ONNX model, a deployed app, replica processes,
and a bounded load generator that only ever targets loopback."""
from __future__ import annotations

import ipaddress
import threading
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil

FEATURES = ["f0", "f1", "f2", "f3"]
CLASSES = ["a", "b", "c"]


def make_onnx(n_in: int = 4, n_out: int = 3, seed: int = 0) -> bytes:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(n_in, n_out)).astype(np.float32), "W")
    b = numpy_helper.from_array(rng.normal(size=(n_out,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1)],
        "linear_softmax",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_out])],
        initializer=[w, b],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def deploy_app(serve_port: int, record_log, prefix: str, **options):
    from framework.components import FeatureSpec, InputSchema
    from framework.serving import ServedModel, deploy
    from plugins.strategy_single import SingleConfig, SingleStrategy

    name = f"{prefix}-{uuid.uuid4().hex[:6]}"
    model = ServedModel("primary", "v-rel", make_onnx(), InputSchema([FeatureSpec(n) for n in FEATURES]),
                        list(CLASSES), "input", "probabilities")
    return deploy([model], SingleStrategy, SingleConfig(), port=serve_port, route_prefix=f"/{name}", app_name=name,
                  record_log=record_log, **options)


def body(i: int) -> dict:
    return {"instance": {name: float((i * 7 + k) % 11) for k, name in enumerate(FEATURES)}}


def replica_processes(app_name: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if f"ServeReplica:{app_name}:Ingress" in " ".join(proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def assert_loopback(url: str) -> None:
    host = urlparse(url).hostname or ""
    assert host == "localhost" or ipaddress.ip_address(host).is_loopback, f"{url}: load goes to loopback only"


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    statuses: dict = field(default_factory=dict)
    answered: list = field(default_factory=list)  # (time, request_id)
    failures: list = field(default_factory=list)  # (time, status or error)
    retried: int = 0  # requests whose first attempt failed (then retried once)


def steady_load(url: str, seconds: float, threads: int, rate_per_thread: float, headers: dict | None = None,
                retry: bool = True, max_requests: int = 100_000) -> LoadResult:
    """``threads`` clients, each at most ``rate_per_thread`` requests/s, for ``seconds`` (and at
    most ``max_requests`` in all). A request that fails is retried once after 50 ms when
    ``retry`` (what a well-behaved client does); only the final outcome counts."""
    assert_loopback(url)
    result = LoadResult()
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    interval = 1.0 / rate_per_thread

    def worker(k: int) -> None:
        with httpx.Client(timeout=10.0, trust_env=False) as client:
            i = k
            next_at = time.monotonic()
            while time.monotonic() < deadline:
                with lock:
                    if result.sent >= max_requests:
                        return
                    result.sent += 1
                status: object = None
                for attempt in range(2 if retry else 1):
                    try:
                        r = client.post(url, json=body(i), headers=headers or {})
                        status = r.status_code
                        if status == 200:
                            break
                    except httpx.HTTPError as exc:
                        status = type(exc).__name__
                    if attempt == 0 and retry:
                        with lock:
                            result.retried += 1
                    time.sleep(0.05)
                now = time.monotonic()
                with lock:
                    result.statuses[str(status)] = result.statuses.get(str(status), 0) + 1
                    if status == 200:
                        result.ok += 1
                        result.answered.append((now, r.json()["request_id"]))
                    else:
                        result.failed += 1
                        result.failures.append((now, status))
                i += threads
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=seconds + 60)
    return result
