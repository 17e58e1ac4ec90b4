"""Measuring an exported ONNX model: quality on the test split and one-thread latency.

Shared by the gate, the compression variant table and the device target, so every figure of a
run is measured the same way.
"""
from __future__ import annotations

import time
from typing import Any

from .components import DataSplits


def onnx_session(onnx_bytes: bytes, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session; ``threads=1`` pins it to one thread (as a device or a small
    replica runs it)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def onnx_quality(onnx_bytes: bytes, input_name: str, output_name: str, classes: list, splits: DataSplits) -> dict:
    """accuracy, f1_macro and log_loss of an ONNX model on the test split (ONNX Runtime)."""
    import numpy as np
    from sklearn.metrics import f1_score, log_loss

    session = onnx_session(onnx_bytes)
    x, y = splits.arrays("test")
    probs = session.run([output_name], {input_name: x})[0]
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(probs, 1e-7, 1.0), labels=labels)),
    }


def onnx_latency(onnx_bytes: bytes, input_name: str, x_rows: Any, runs: int) -> dict:
    """p50 / p95 of one call on ``x_rows`` (batch 1 for a single row), on one thread, after a
    warm-up: the way a device or a small replica runs the model."""
    import numpy as np

    session = onnx_session(onnx_bytes, threads=1)
    feed = {input_name: x_rows}
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p95_ms": float(np.percentile(times, 95))}
