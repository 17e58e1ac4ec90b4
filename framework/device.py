"""``target: device``: pick the best model variant that fits a device budget and bundle it.

A run keeps ``state.variants`` (the fp32 export, then each ONNX-level compression of it). For a
device target the framework

1. measures every variant (:func:`measure_variant`): file size, test accuracy, batch-1 latency on
   ONE thread and the RAM it takes to run it,
2. keeps those within every set budget and picks the most accurate (:func:`pick_variant`), or
   fails naming each budget no variant meets and the best value any variant reached for it,
3. writes a self-contained bundle (:func:`write_bundle`): the ONNX model, its input schema,
   preprocessing metadata, a small runner that needs only onnxruntime and numpy (no torch, no
   Ray, no framework), a README and a manifest with the sha256 of every file,
4. checks the bundle by running its runner in a clean subprocess (:func:`verify_bundle`).

RAM, as measured here (``ram_mb``): the growth of the peak resident set size of a fresh Python
process (on Linux ``VmHWM`` of /proc/self/status, the peak of this process image; elsewhere
``ru_maxrss`` of ``getrusage(RUSAGE_SELF)``. Not ``ru_maxrss`` on Linux: the kernel carries it over
fork+exec from the parent, so a child of a 250 MB process with torch loaded reports >= 250 MB), from just after it imported numpy and
onnxruntime (the baseline: what any runner pays before touching a model) to after it created a
one-thread CPU session on the model and ran batch 1 a few times. So it is what the model adds on
top of the runtime: weights, the session's graph and arenas, buffers of a batch-1 run. A device
must also fit the interpreter and onnxruntime themselves (``baseline_ram_mb``, reported too).

Importing this module is cheap: numpy and onnxruntime are imported inside functions.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional

from .components import ExportedModel
from .errors import RecipeError, StageError

#: budget field -> (candidate key, unit, what "best" means for the error message)
BUDGET_FIELDS = {
    "max_size_mb": ("size_mb", "MB", "smallest variant"),
    "max_p95_latency_ms": ("latency_p95_ms", "ms", "fastest variant (p95, batch 1, one thread)"),
    "max_ram_mb": ("ram_mb", "MB", "leanest variant (RAM)"),
}
#: files of a bundle, in the order the manifest lists them (manifest.json itself excluded)
BUNDLE_FILES = ("model.onnx", "schema.json", "preprocessing.json", "runner.py", "README.txt")
#: modules the bundle's runner must not load: it runs where none of them is installed
FORBIDDEN_MODULES = ("torch", "ray", "framework", "plugins")
#: watched in the verification child and reported (``modules_loaded``), forbidden or not
WATCHED_MODULES = FORBIDDEN_MODULES + ("pandas", "sklearn", "onnx", "omegaconf", "pluggy")
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


# ---------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------
_RAM_CHILD = r"""
import json, resource, sys
def peak_mb():
    try:  # Linux: this process image's own peak (VmHWM, kB); ru_maxrss keeps the parent's across fork+exec
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6  # bytes on macOS, KiB on Linux
import numpy as np
import onnxruntime as ort
baseline = peak_mb()
model_path, row_path, input_name, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
options = ort.SessionOptions()
options.log_severity_level = 3
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
feed = {input_name: np.load(row_path)}
for _ in range(runs):
    session.run(None, feed)
peak = peak_mb()
print(json.dumps({"baseline_ram_mb": baseline, "peak_ram_mb": peak, "ram_mb": max(peak - baseline, 0.0)}))
"""


def _clean_env() -> dict:
    """The environment of a clean child: no PYTHON* variables (``-I`` ignores them anyway)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}


def measure_ram(onnx_bytes: bytes, input_name: str, x_row: Any, runs: int = RAM_RUNS) -> dict:
    """``ram_mb`` (see the module doc), ``baseline_ram_mb`` and ``peak_ram_mb`` of running the
    model at batch 1 in a fresh ``python -I`` process."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="device-ram-") as tmp:
        model_path, row_path = Path(tmp) / "model.onnx", Path(tmp) / "row.npy"
        model_path.write_bytes(onnx_bytes)
        np.save(row_path, np.ascontiguousarray(np.asarray(x_row, dtype=np.float32).reshape(1, -1)))
        cmd = [sys.executable, "-I", "-c", _RAM_CHILD, str(model_path), str(row_path), input_name, str(runs)]
        try:
            done = subprocess.run(cmd, cwd=tmp, env=_clean_env(), capture_output=True, text=True,
                                  timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise StageError(f"device: measuring RAM timed out after {CHILD_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise StageError(f"device: measuring RAM failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_variant(onnx_bytes: bytes, input_name: str, x_test: Any, y_test_indices: Any, runs: int = 200) -> dict:
    """What a device budget is checked against, for one ONNX model.

    Keys: ``size_mb`` (file size, 1e6 bytes), ``accuracy`` (argmax of the first output vs
    ``y_test_indices`` on ``x_test``), ``latency_p50_ms`` / ``latency_p95_ms`` (batch 1, ONE
    thread, ``runs`` timed runs after 10 warm-up runs: ``stages._onnx_latency``), ``ram_mb``,
    ``baseline_ram_mb``, ``peak_ram_mb`` (see the module doc; a clean subprocess).
    """
    import numpy as np
    import onnxruntime as ort

    from .stages import _onnx_latency

    x = np.ascontiguousarray(np.asarray(x_test, dtype=np.float32))
    y = np.asarray(y_test_indices)
    if x.ndim != 2 or len(x) == 0:
        raise StageError(f"device: measuring needs a non-empty 2-d test array, got shape {x.shape}")
    if len(y) != len(x):
        raise StageError(f"device: {len(x)} test rows but {len(y)} labels")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    probabilities = session.run(None, {input_name: x})[0]
    result = {
        "size_mb": len(onnx_bytes) / 1e6,
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == y)),
    }
    result.update(_onnx_latency(onnx_bytes, input_name, x[:1], int(runs)))
    result.update(measure_ram(onnx_bytes, input_name, x[:1]))
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
    first listed). Candidates: {name, exported, size_mb, latency_p95_ms, ram_mb, accuracy}.

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
            accuracy = _value(c, "accuracy")
            size = _value(c, "size_mb")
            return (-(accuracy if math.isfinite(accuracy) else -math.inf),
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


# ---------------------------------------------------------------------------------------------
# The bundle
# ---------------------------------------------------------------------------------------------
def _jsonable(value: Any) -> Any:
    """numpy scalars and paths as plain JSON values (class labels may be numpy ints)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (TypeError, ValueError):
            pass
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:  # OmegaConf containers, dataclasses
        from omegaconf import OmegaConf

        return _jsonable(OmegaConf.to_container(value, resolve=True))
    except Exception:
        pass
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return _jsonable(dataclasses.asdict(value))
    return str(value)


def _dump(data: Any) -> bytes:
    return (json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n").encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_bundle(exported: ExportedModel, out_dir: Path, metadata: dict) -> Path:
    """Write the device bundle of ``exported`` to ``out_dir`` (replaced as a whole) and return it.

    Files: model.onnx, schema.json, preprocessing.json, runner.py, README.txt, manifest.json.
    ``metadata`` goes into the manifest; known keys: ``model_version``, ``variant``, ``budget``,
    ``measured`` (anything else is kept under its own key). Written to a temporary folder next to
    ``out_dir`` and renamed into place, so a reader never sees half a bundle.
    """
    if exported.format != "onnx":
        raise StageError(f"device: a bundle needs an ONNX model, got format '{exported.format}'")
    unsupported = [f"{f.name} ({f.dtype})" for f in exported.schema.features if f.dtype not in ("float", "int")]
    if unsupported:
        raise StageError(f"device: the runner takes numeric features only; not supported: {', '.join(unsupported)}")
    out_dir = Path(out_dir)
    model = Path(exported.path).read_bytes()
    names = exported.schema.names
    classes = _jsonable(list(exported.classes))
    schema = {
        "format": "onnx",
        "input_name": exported.input_name,
        "output_name": exported.output_name,
        "input_schema": exported.schema.to_dict(),
        "classes": classes,
    }
    preprocessing = {
        "feature_order": names,
        "dtype": "float32",
        "layout": "[batch, n_features], features in feature_order",
        "standardization": "inside the model: send raw feature values, the ONNX graph standardizes them",
        "integer_features": [f.name for f in exported.schema.features if f.dtype == "int"],
        "output": "class probabilities (softmax), one column per class in class_labels order",
        "class_labels": classes,
    }
    files = {
        "model.onnx": model,
        "schema.json": _dump(schema),
        "preprocessing.json": _dump(preprocessing),
        "runner.py": RUNNER_SOURCE.encode(),
        "README.txt": _readme(metadata, names, classes).encode(),
    }
    manifest = {
        "bundle_format": 1,
        "model_version": metadata.get("model_version"),
        "variant": metadata.get("variant"),
        "budget": metadata.get("budget"),
        "measured": metadata.get("measured"),
        **{k: v for k, v in metadata.items() if k not in ("model_version", "variant", "budget", "measured")},
        "requires": ["numpy", "onnxruntime"],
        "files": {name: {"sha256": _sha256(data), "bytes": len(data)} for name, data in files.items()},
    }
    files["manifest.json"] = _dump(manifest)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            old.rmdir()
            out_dir.rename(old)
            tmp.rename(out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def check_manifest(bundle_dir: Path) -> dict:
    """The manifest of a bundle, after checking every file's sha256 (StageError naming a file
    that is missing or changed)."""
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    for name, entry in manifest["files"].items():
        path = bundle_dir / name
        if not path.is_file():
            raise StageError(f"device: bundle {bundle_dir}: {name} is missing")
        if _sha256(path.read_bytes()) != entry["sha256"]:
            raise StageError(f"device: bundle {bundle_dir}: {name} does not match its sha256 in manifest.json")
    return manifest


_VERIFY_CHILD = r"""
import contextlib, io, json, runpy, sys
bundle, inputs, watched = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
sys.argv = ["runner.py", bundle, inputs]
out = io.StringIO()
code = 0
with contextlib.redirect_stdout(out):
    try:
        runpy.run_path("runner.py", run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
loaded = sorted(m for m in watched if m in sys.modules)
print(json.dumps({"exit": code, "stdout": out.getvalue(), "modules_loaded": loaded, "executable": sys.executable}))
"""


def verify_bundle(bundle_dir: Path, x_rows: list[dict], expected_labels: Any, min_agreement: float = 1.0) -> dict:
    """Run the bundle's runner.py CLI on ``x_rows`` in a clean subprocess and compare its labels.

    The child is ``python -I`` (isolated: no user site, no PYTHON* variables, no script or
    current folder on sys.path; the interpreter's own site-packages stay, that is where
    onnxruntime lives) started in ``bundle_dir`` with PYTHON* variables removed. It reports which
    of ``WATCHED_MODULES`` got loaded. StageError when the runner fails, loads one of
    ``FORBIDDEN_MODULES``, a file does not match the manifest, or the agreement with
    ``expected_labels`` (class labels, as the runner returns them) is below ``min_agreement``.

    Returns {agreement, seconds, modules_loaded, labels, probabilities, rows}.
    """
    bundle_dir = Path(bundle_dir).resolve()
    check_manifest(bundle_dir)
    expected = json.loads(json.dumps(_jsonable(list(expected_labels))))
    if len(expected) != len(x_rows):
        raise StageError(f"device: {len(x_rows)} rows to verify but {len(expected)} expected labels")
    with tempfile.TemporaryDirectory(prefix="device-verify-") as tmp:
        inputs = Path(tmp) / "input.json"
        inputs.write_bytes(_dump({"instances": list(x_rows)}))
        cmd = [sys.executable, "-I", "-c", _VERIFY_CHILD, str(bundle_dir), str(inputs), ",".join(WATCHED_MODULES)]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=bundle_dir, env=_clean_env(), capture_output=True, text=True,
                                  timeout=CHILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise StageError(f"device: the bundle's runner timed out after {CHILD_TIMEOUT_S} s") from None
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise StageError(f"device: the bundle's runner failed in a clean process: {done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    if report["exit"] != 0:
        raise StageError(f"device: the bundle's runner exited with {report['exit']}: {done.stderr.strip()[-2000:]}")
    forbidden = [m for m in report["modules_loaded"] if m in FORBIDDEN_MODULES]
    if forbidden:
        raise StageError(f"device: the bundle's runner loaded {', '.join(forbidden)}; it must need only onnxruntime and numpy")
    predictions = json.loads(report["stdout"])
    labels = predictions["labels"]
    agreement = sum(a == b for a, b in zip(labels, expected)) / len(expected) if expected else 1.0
    if len(labels) != len(expected) or agreement < min_agreement:
        raise StageError(f"device: the bundle's runner agrees with the model on {agreement:.2%} of "
                         f"{len(expected)} rows (needs {min_agreement:.2%})")
    return {
        "agreement": agreement,
        "seconds": seconds,
        "modules_loaded": report["modules_loaded"],
        "labels": labels,
        "probabilities": predictions["probabilities"],
        "rows": len(expected),
    }


def _readme(metadata: Mapping, names: list[str], classes: list) -> str:
    version = metadata.get("model_version") or "(not registered)"
    variant = metadata.get("variant") or "?"
    example = {name: 0.0 for name in names[:3]}
    return f"""Device bundle: model {version}, variant {variant}

Needs Python 3 with numpy and onnxruntime only (pip install numpy onnxruntime).

Files
  model.onnx          the model: float32 [batch, {len(names)}] raw features in, class probabilities out
  schema.json         input and output names, the features (name, dtype) and the class labels
  preprocessing.json  feature order, dtype; standardization is inside the model: send raw values
  runner.py           command line and importable Predictor (numpy + onnxruntime only)
  manifest.json       sha256 of every file, model version, budget and measured figures

Command line
  python runner.py BUNDLE_DIR input.json
  input.json: {{"instances": [{{"feature": number, ...}}, ...]}}, a list of such objects, or a
  list of rows of {len(names)} numbers in feature order. Prints JSON:
  {{"labels": [...], "probabilities": [[...], ...], "classes": [...]}}.
  Use - as the file to read standard input.

Python
  from runner import Predictor
  labels, probabilities = Predictor("BUNDLE_DIR").predict([{json.dumps(example)[:-1]}, ...}}])

Features, in order: {", ".join(names)}
Classes: {", ".join(map(str, classes))}
A missing, unknown or non-finite feature raises ValueError naming it.
"""


RUNNER_SOURCE = r'''"""Run a device bundle's model: needs only numpy and onnxruntime.

    python runner.py BUNDLE_DIR input.json     (input.json: {"instances": [{feature: number}, ...]})

    from runner import Predictor
    labels, probabilities = Predictor(BUNDLE_DIR).predict(rows)
"""
import hashlib
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort

FLOAT32_MAX = float(np.finfo(np.float32).max)


class Predictor:
    """The bundle's model with the server's input checks. ``threads``: onnxruntime intra-op
    threads (1: as measured for the budget)."""

    def __init__(self, bundle_dir=None, threads=1, check_hashes=True):
        self.bundle_dir = os.path.abspath(bundle_dir or os.path.dirname(os.path.abspath(__file__)))
        if check_hashes:
            self._check_hashes()
        with open(os.path.join(self.bundle_dir, "schema.json")) as f:
            schema = json.load(f)
        self.input_name = schema["input_name"]
        self.output_name = schema["output_name"]
        self.classes = list(schema["classes"])
        features = schema["input_schema"]["features"]
        self.names = [f["name"] for f in features]
        self.integer = {f["name"] for f in features if f.get("dtype") == "int"}
        self._name_set = set(self.names)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(self.bundle_dir, "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    def _check_hashes(self):
        path = os.path.join(self.bundle_dir, "manifest.json")
        if not os.path.exists(path):
            return
        with open(path) as f:
            manifest = json.load(f)
        for name, entry in manifest.get("files", {}).items():
            with open(os.path.join(self.bundle_dir, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != entry["sha256"]:
                    raise RuntimeError(name + " does not match its sha256 in manifest.json")

    def features(self, rows):
        """float32 [n, n_features] from a list of {feature: number} objects or a 2-d array."""
        if isinstance(rows, dict):  # {"instances": [...]} as the server takes, or one instance
            rows = rows["instances"] if "instances" in rows else [rows]
        if isinstance(rows, np.ndarray):
            return self._array(rows)
        rows = list(rows)
        if not rows:
            raise ValueError("instances: empty: send at least one instance")
        if all(isinstance(r, dict) for r in rows):
            return self._array([self._row(r, "instances[%d]" % i) for i, r in enumerate(rows)], checked=True)
        if any(isinstance(r, dict) for r in rows):
            raise ValueError("instances: mix of objects and rows: send one kind")
        return self._array(rows)

    def _row(self, instance, at):
        values = []
        for name in self.names:
            if name not in instance:
                raise ValueError("%s.%s: missing feature" % (at, name))
            values.append(self._number(instance[name], "%s.%s" % (at, name), name))
        extra = [k for k in instance if k not in self._name_set]
        if extra:
            raise ValueError("%s.%s: unknown feature; expected only: %s" % (at, extra[0], ", ".join(self.names)))
        return values

    def _number(self, value, at, name):
        if type(value) not in (int, float):  # exact types: bool is not a number here
            raise ValueError("%s: expected a finite number, got %r" % (at, value))
        try:
            finite = math.isfinite(float(value)) and abs(float(value)) <= FLOAT32_MAX
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError("%s: expected a finite number, got %r" % (at, value))
        if name in self.integer and not float(value).is_integer():
            raise ValueError("%s: expected an integer, got %r" % (at, value))
        return value

    def _array(self, rows, checked=False):
        try:
            with np.errstate(over="ignore"):
                x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError("instances: expected rows of %d numbers: %s" % (len(self.names), exc))
        if x.ndim == 1 and not checked:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError("instances: expected shape [n, %d], got %s" % (len(self.names), list(x.shape)))
        if len(x) == 0:
            raise ValueError("instances: empty: send at least one instance")
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            i, j = bad[0]
            raise ValueError("instances[%d].%s: expected a finite number, got %r" % (i, self.names[j], float(x[i, j])))
        return np.ascontiguousarray(x)

    def predict(self, rows):
        """(labels: list of class labels, probabilities: float32 array [n, n_classes])."""
        x = self.features(rows)
        probabilities = self.session.run([self.output_name], {self.input_name: x})[0]
        labels = [self.classes[i] for i in probabilities.argmax(axis=1)]
        return labels, probabilities


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python runner.py BUNDLE_DIR input.json  (- reads standard input)\n")
        return 2
    bundle_dir, source = argv
    if source == "-":
        data = json.load(sys.stdin)
    else:
        with open(source) as f:
            data = json.load(f)
    predictor = Predictor(bundle_dir)
    try:
        labels, probabilities = predictor.predict(data)
    except ValueError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    json.dump({"labels": labels, "probabilities": probabilities.tolist(), "classes": predictor.classes}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
'''
