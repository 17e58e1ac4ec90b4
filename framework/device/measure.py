"""Measuring device variants against a budget, and picking the best that fits.

RAM, as measured here (``ram_mb``): the growth of the peak resident set size of a fresh Python
process (on Linux ``VmHWM`` of /proc/self/status, the peak of this process image; elsewhere
``ru_maxrss`` of ``getrusage(RUSAGE_SELF)``. Not ``ru_maxrss`` on Linux: the kernel carries it over
fork+exec from the parent, so a child of a 250 MB process with torch loaded reports >= 250 MB),
from just after it imported numpy and onnxruntime (the baseline: what any runner pays before
touching a model) to after it created a one-thread CPU session on the model and ran batch 1 a few
times. So it is what the model adds on top of the runtime: weights, the session's graph and
arenas, buffers of a batch-1 run. A device must also fit the interpreter and onnxruntime
themselves (``baseline_ram_mb``, reported too).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from ..errors import RecipeError, StageError

#: the child scripts and the bundle runner: real modules of this package, run by path
PROBES = Path(__file__).resolve().parent
#: budget field -> (candidate key, unit, what "best" means for the error message)
BUDGET_FIELDS = {
    "max_size_mb": ("size_mb", "MB", "smallest variant"),
    "max_p95_latency_ms": ("latency_p95_ms", "ms", "fastest variant (p95, batch 1, one thread)"),
    "max_ram_mb": ("ram_mb", "MB", "leanest variant (RAM)"),
}
#: batch-1 runs in the RAM child
RAM_RUNS = 20
#: seconds before a measuring or verifying child is given up
CHILD_TIMEOUT_S = 120


@dataclass
class DeviceBudget:
    """Limits a device puts on the served model; ``None``: no limit on that axis."""

    #: size of model.onnx in MB (1e6 bytes)
    max_size_mb: Optional[float] = None
    #: p95 latency of one batch-1 prediction on ONE thread, in ms
    max_p95_latency_ms: Optional[float] = None
    #: RAM the model adds on top of python + numpy + onnxruntime (see the module doc), in MB
    max_ram_mb: Optional[float] = None


def budget_limits(budget: Any) -> dict[str, float]:
    """The set limits of ``budget`` (a DeviceBudget, an OmegaConf node or a mapping, or None),
    as floats; RecipeError naming ``device.budget.<field>`` for a non-positive or non-number."""
    if budget is None:
        return {}
    limits = {}
    for name in BUDGET_FIELDS:
        value = budget.get(name) if isinstance(budget, Mapping) else getattr(budget, name, None)
        if value is None:
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise RecipeError(f"device.budget.{name}: expected a number, got {value!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise RecipeError(f"device.budget.{name}: must be a positive number, got {value!r}")
        limits[name] = number
    return limits


def clean_env() -> dict:
    """The environment of a clean child: no PYTHON* variables (``-I`` ignores them anyway)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def measure_ram(onnx_bytes: bytes, input_name: str, x_row: Any, runs: int = RAM_RUNS) -> dict:
    """``ram_mb`` (see the module doc), ``baseline_ram_mb`` and ``peak_ram_mb`` of running the
    model at batch 1 in a fresh ``python -I`` process."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="device-ram-") as tmp:
        model_path = Path(tmp) / "model.onnx"
        model_path.write_bytes(onnx_bytes)
        if isinstance(x_row, dict):  # typed inputs (strings too): JSON, never a pickle
            row_path = Path(tmp) / "feeds.json"
            row_path.write_text(json.dumps({name: {"dtype": "str" if a.dtype == object else "float32",
                                                   "values": [[(v if isinstance(v, str) else float(v)) for v in r]
                                                              for r in np.asarray(a)[:1].tolist()]}
                                            for name, a in x_row.items()}))
        else:
            row_path = Path(tmp) / "row.npy"
            np.save(row_path, np.ascontiguousarray(np.asarray(x_row, dtype=np.float32).reshape(1, -1)))
        cmd = [sys.executable, "-I", str(PROBES / "ram_probe.py"), str(model_path), str(row_path), input_name, str(runs)]
        try:
            done = subprocess.run(cmd, cwd=tmp, env=clean_env(), capture_output=True, text=True,
                                  timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise StageError(f"device: measuring RAM timed out after {CHILD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise StageError(f"device: measuring RAM failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_variant(onnx_bytes: bytes, input_name: str, x_test: Any, y_test_indices: Any, runs: int = 200,
                    task: str = "classification") -> dict:
    """What a device budget is checked against, for one ONNX model.

    Keys: ``size_mb`` (file size, 1e6 bytes), ``accuracy`` (argmax of the first output vs
    ``y_test_indices`` on ``x_test``), ``latency_p50_ms`` / ``latency_p95_ms`` (batch 1, ONE
    thread, ``runs`` timed runs after 10 warm-up runs: ``framework.evaluation.onnx_latency``), ``ram_mb``,
    ``baseline_ram_mb``, ``peak_ram_mb`` (see the module doc; a clean subprocess). ``x_test``:
    the rows of the one input ``input_name``, or a model's feeds (typed inputs). A regression
    (``task``) reports ``r2`` and ``mae`` (``y_test_indices``: the target values) instead of
    ``accuracy``.
    """
    import numpy as np
    import onnxruntime as ort

    from ..evaluation import onnx_latency

    if isinstance(x_test, dict):
        feeds = x_test
        n = len(next(iter(feeds.values())))
        first = {name: a[:1] for name, a in feeds.items()}
    else:
        x = np.ascontiguousarray(np.asarray(x_test, dtype=np.float32))
        if x.ndim != 2 or len(x) == 0:
            raise StageError(f"device: measuring needs a non-empty 2-d test array, got shape {x.shape}")
        feeds, n, first = {input_name: x}, len(x), x[:1]
    y = np.asarray(y_test_indices)
    if n == 0:
        raise StageError("device: measuring needs test rows, got none")
    if len(y) != n:
        raise StageError(f"device: {n} test rows but {len(y)} labels")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    out = session.run(None, feeds)[0]
    result = {"size_mb": len(onnx_bytes) / 1e6}
    if task == "regression":
        from ..metrics import regression_metrics

        quality = regression_metrics(y, out)
        result.update(r2=quality["r2"], mae=quality["mae"])
    else:
        result["accuracy"] = float(np.mean(out.argmax(axis=1) == y))
    result.update(onnx_latency(onnx_bytes, input_name, first, int(runs)))
    result.update(measure_ram(onnx_bytes, input_name, first))
    return result


# ---------------------------------------------------------------------------------------------
# Picking
# ---------------------------------------------------------------------------------------------
def _value(candidate: Mapping, key: str) -> float:
    value = candidate.get(key)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return number


def _fits(candidate: Mapping, name: str, limit: float) -> bool:
    value = _value(candidate, BUDGET_FIELDS[name][0])
    return math.isfinite(value) and value <= limit  # an unmeasured value never fits


def pick_variant(candidates: list[dict], budget: Any) -> dict:
    """The most accurate candidate within every set budget (tie: the smallest file, then the
    first listed). Candidates: {name, exported, size_mb, latency_p95_ms, ram_mb, accuracy}; a
    regression's carry ``r2`` and ``mae`` instead: the highest r2 (tie: the lowest mae) wins.

    StageError when none fits: it names each budget no variant meets with the best value any
    variant reached, or, when each budget alone is met by some variant, why each variant fails.
    """
    if not candidates:
        raise StageError("device: no variant to choose from (the export stage produced none)")
    limits = budget_limits(budget)
    fitting = [c for c in candidates if all(_fits(c, n, limit) for n, limit in limits.items())]
    if fitting:
        def key(item):
            index, c = item
            accuracy = _value(c, "accuracy" if "accuracy" in c else "r2")
            error = _value(c, "mae") if "accuracy" not in c else 0.0
            size = _value(c, "size_mb")
            return (-(accuracy if math.isfinite(accuracy) else -math.inf), error if math.isfinite(error) else math.inf,
                    size if math.isfinite(size) else math.inf, index)

        return min(enumerate(fitting), key=key)[1]

    unmet = []
    for name, limit in limits.items():
        if any(_fits(c, name, limit) for c in candidates):
            continue
        field, unit, best_what = BUDGET_FIELDS[name]
        measured = [c for c in candidates if math.isfinite(_value(c, field))]
        if measured:
            best = min(measured, key=lambda c: _value(c, field))
            unmet.append(f"{name} {limit:g} ({best_what}: {best['name']} {_value(best, field):.4g} {unit})")
        else:
            unmet.append(f"{name} {limit:g} (no variant has a measured {field})")
    if unmet:
        raise StageError("device: no variant fits the budget: " + "; ".join(unmet)
                         + ". Raise the budget or add a compression step (compress: [...]) that gets there")
    # every budget alone is met by some variant, but no variant meets all of them at once
    reasons = []
    for c in candidates:
        failed = [f"{n} {_value(c, BUDGET_FIELDS[n][0]):.4g} > {limit:g} {BUDGET_FIELDS[n][1]}"
                  for n, limit in limits.items() if not _fits(c, n, limit)]
        reasons.append(f"{c['name']} fails {', '.join(failed)}")
    raise StageError("device: no variant fits the budget: no variant meets all budgets at once: " + "; ".join(reasons))


