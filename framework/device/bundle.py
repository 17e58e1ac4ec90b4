"""The device bundle: a self-contained folder that runs the model with numpy and onnxruntime only.

Files: model.onnx, schema.json, preprocessing.json, runner.py (``framework/device/runner.py``,
copied as is), README.txt and manifest.json (the sha256 of every file). ``verify_bundle`` runs the
bundle's runner in a clean subprocess before a stage passes.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from ..components import ExportedModel
from ..errors import StageError
from .measure import CHILD_TIMEOUT_S, PROBES, clean_env

#: files of a bundle, in the order the manifest lists them (manifest.json itself excluded)
BUNDLE_FILES = ("model.onnx", "schema.json", "preprocessing.json", "runner.py", "README.txt")
#: modules the bundle's runner must not load: it runs where none of them is installed
FORBIDDEN_MODULES = ("torch", "ray", "framework", "plugins")
#: watched in the verification child and reported (``modules_loaded``), forbidden or not
WATCHED_MODULES = FORBIDDEN_MODULES + ("pandas", "sklearn", "onnx", "omegaconf", "pluggy")


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
    typed = exported.inputs is not None
    if not typed:
        unsupported = [f"{f.name} ({f.dtype})" for f in exported.schema.features if f.dtype not in ("float", "int")]
        if unsupported:
            raise StageError(f"device: a model of one float matrix takes numbers only; not supported: {', '.join(unsupported)}")
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
        **({"inputs": exported.inputs.to_dict()} if typed else {}),
        **({"task": exported.task} if exported.task != "classification" else {}),
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
    if typed:
        layout = exported.inputs
        preprocessing.update({
            "dtype": "typed",
            "layout": (f"inputs: '{layout.numeric}' float32 [batch, {len(layout.numeric_columns)}] of "
                       f"{layout.numeric_columns} (NaN where missing, booleans 0/1); '{layout.categorical}' string "
                       f"[batch, {len(layout.categorical_columns)}] of {layout.categorical_columns} "
                       f"('{layout.missing_token}' where missing)"),
            "standardization": "inside the model: imputation, missing indicators, one-hot encoding (unknown "
                               "categories: all zeros) and scaling, fitted on the training split; send raw rows",
            "inputs": layout.to_dict(),
        })
    if exported.task == "regression":
        preprocessing["output"] = f"the predicted value, float32 [batch, 1] ('{exported.output_name}')"
    files = {
        "model.onnx": model,
        "schema.json": _dump(schema),
        "preprocessing.json": _dump(preprocessing),
        "runner.py": (PROBES / "runner.py").read_bytes(),
        "README.txt": _readme(metadata, names, classes, typed, exported.task).encode(),
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


def verify_bundle(bundle_dir: Path, x_rows: list[dict], expected_labels: Any, min_agreement: float = 1.0,
                  tolerance: float | None = None) -> dict:
    """Run the bundle's runner.py CLI on ``x_rows`` in a clean subprocess and compare its labels.

    The child is ``python -I`` (isolated: no user site, no PYTHON* variables, no script or
    current folder on sys.path; the interpreter's own site-packages stay, that is where
    onnxruntime lives) started in ``bundle_dir`` with PYTHON* variables removed. It reports which
    of ``WATCHED_MODULES`` got loaded. StageError when the runner fails, loads one of
    ``FORBIDDEN_MODULES``, a file does not match the manifest, or the agreement with
    ``expected_labels`` (class labels, as the runner returns them) is below ``min_agreement``.

    ``tolerance``: a regression's labels are numbers; one agrees when it is within ``tolerance``
    of the expected value, relative to the value's size (at least 1).

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
        cmd = [sys.executable, "-I", str(PROBES / "verify_probe.py"), str(bundle_dir), str(inputs), ",".join(WATCHED_MODULES)]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=bundle_dir, env=clean_env(), capture_output=True, text=True,
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
    if tolerance is not None:
        same = [abs(float(a) - float(b)) <= tolerance * max(1.0, abs(float(b))) for a, b in zip(labels, expected)]
    else:
        same = [a == b for a, b in zip(labels, expected)]
    agreement = sum(same) / len(expected) if expected else 1.0
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


def _readme(metadata: Mapping, names: list[str], classes: list, typed: bool = False,
            task: str = "classification") -> str:
    version = metadata.get("model_version") or "(not registered)"
    variant = metadata.get("variant") or "?"
    example = {name: 0.0 for name in names[:3]}
    typed_note = ("""
Raw rows
  This model takes raw rows, as the server does: numbers, true/false, categories as strings,
  null where schema.json says a feature may be missing (nullable). Imputation, encoding (an
  unknown category goes to the model's unknown bucket) and scaling are inside model.onnx.
""" if typed else "")
    output_note = ("  A regression: labels are the predicted numbers; probabilities is null.\n"
                   if task == "regression" else "")
    return f"""Device bundle: model {version}, variant {variant}
{typed_note}
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

{output_note}Features, in order: {", ".join(names)}
Classes: {", ".join(map(str, classes))}
A missing, unknown or non-finite feature raises ValueError naming it.
"""
