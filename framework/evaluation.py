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


from .metrics import LOWER_IS_BETTER, REGRESSION_METRICS, regression_metrics  # noqa: F401 (re-exported)


def onnx_quality(onnx_bytes: bytes, input_name: str, output_name: str, classes: list, splits: DataSplits,
                 layout: Any = None, task: str = "classification") -> dict:
    """accuracy, f1_macro and log_loss of an ONNX model on the test split (ONNX Runtime); mse, mae
    and r2 for a regression. ``layout``: how the model takes raw rows (None: one float matrix
    ``input_name`` of the features)."""
    import numpy as np
    from sklearn.metrics import f1_score, log_loss

    session = onnx_session(onnx_bytes)
    if layout is None:
        from .components import InputLayout

        layout = InputLayout.matrix(input_name, list(splits.dataset.features))
    y = _targets(splits, task)
    probs = session.run([output_name], layout.feeds(splits.test))[0]
    if task == "regression":
        return regression_metrics(y, probs)
    pred = probs.argmax(axis=1)
    labels = list(range(len(classes)))
    return {
        "accuracy": float(np.mean(pred == y)),
        "f1_macro": float(f1_score(y, pred, average="macro", labels=labels, zero_division=0)),
        "log_loss": float(log_loss(y, np.clip(probs, 1e-7, 1.0), labels=labels)),
    }


def _targets(splits: DataSplits, task: str) -> Any:
    """The test split's targets: class indices, or the values of a regression."""
    import numpy as np

    frame, dataset = splits.test, splits.dataset
    if task == "regression":
        return frame[dataset.target].to_numpy(dtype=np.float64)
    index = {c: i for i, c in enumerate(dataset.classes or [])}
    return np.asarray([index[v] for v in frame[dataset.target]], dtype=np.int64)


def onnx_latency(onnx_bytes: bytes, input_name: str, x_rows: Any, runs: int) -> dict:
    """p50 / p95 of one call on ``x_rows`` (batch 1 for a single row), on one thread, after a
    warm-up: the way a device or a small replica runs the model. ``x_rows``: the rows of the one
    input ``input_name``, or a dict of feeds (a model of typed inputs)."""
    import numpy as np

    session = onnx_session(onnx_bytes, threads=1)
    feed = x_rows if isinstance(x_rows, dict) else {input_name: x_rows}
    for _ in range(10):
        session.run(None, feed)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"latency_p50_ms": float(np.percentile(times, 50)), "latency_p95_ms": float(np.percentile(times, 95))}
