"""``target: device``: measure variants, pick one within a budget, write and verify a bundle."""
from __future__ import annotations

import ast
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from framework.components import DataSplits, ExportedModel, InputSchema
from framework.device import (
    BUNDLE_FILES,
    DeviceBudget,
    check_manifest,
    measure_variant,
    pick_variant,
    verify_bundle,
    write_bundle,
)
from framework.errors import RecipeError, StageError
from framework.testing.data import breast_cancer_splits
from plugins.compress_onnx_quantize import Int8Dynamic, session
from plugins.export_onnx import INPUT_NAME, OUTPUT_NAME

#: the shared model has hidden=256: weights dominate the file, so int8 storage shows in its size


@pytest.fixture(scope="module")
def splits() -> DataSplits:
    return breast_cancer_splits()


@pytest.fixture(scope="module")
def fp32_model(mlp_onnx) -> ExportedModel:
    """A 30 -> 256 -> 2 MLP (tests/conftest.py), fp32 ONNX."""
    return mlp_onnx


@pytest.fixture(scope="module")
def int8_model(fp32_model, splits, tmp_path_factory) -> ExportedModel:
    from framework.context import RunStageContext

    ctx = RunStageContext(stage="compress", out_dir=tmp_path_factory.mktemp("int8"), seed=0)
    return Int8Dynamic().compress_onnx(fp32_model, splits, ctx)


@pytest.fixture(scope="module")
def candidates(fp32_model, int8_model, splits) -> list[dict]:
    x, y = splits.arrays("test")
    rows = []
    for name, model in (("onnx", fp32_model), ("int8_dynamic", int8_model)):
        measured = measure_variant(Path(model.path).read_bytes(), model.input_name, x, y, runs=50)
        rows.append({"name": name, "exported": model, **measured})
    return rows


def test_measure_variant(candidates, fp32_model):
    fp32, int8 = candidates
    for row in candidates:
        assert set(row) >= {"size_mb", "accuracy", "latency_p50_ms", "latency_p95_ms", "ram_mb", "baseline_ram_mb"}
        assert 0.0 < row["latency_p50_ms"] <= row["latency_p95_ms"]
        # measured in the child alone: not inflated by this torch-loaded test process
        assert 0.0 < row["baseline_ram_mb"] < row["peak_ram_mb"] and row["ram_mb"] > 0.0
        assert 0.85 <= row["accuracy"] <= 1.0
    assert fp32["size_mb"] == pytest.approx(Path(fp32_model.path).stat().st_size / 1e6)
    assert int8["size_mb"] < fp32["size_mb"] / 2


def _fake(name, accuracy, size_mb, p95=1.0, ram=1.0):
    return {"name": name, "exported": None, "accuracy": accuracy, "size_mb": size_mb,
            "latency_p95_ms": p95, "ram_mb": ram}


def test_pick_generous_budget_picks_most_accurate(candidates):
    generous = DeviceBudget(max_size_mb=100.0, max_p95_latency_ms=10_000.0, max_ram_mb=100_000.0)
    best = max(candidates, key=lambda c: (c["accuracy"], -c["size_mb"]))
    assert pick_variant(candidates, generous) is best
    assert pick_variant(candidates, DeviceBudget()) is best  # no limit set
    # tie on accuracy: the smaller file wins; a mapping (OmegaConf-like) budget works too
    tie = [_fake("a", 0.9, 2.0), _fake("b", 0.9, 1.0), _fake("c", 0.8, 0.5)]
    assert pick_variant(tie, {"max_size_mb": 5})["name"] == "b"


def test_pick_size_budget_only_smaller_fits(candidates):
    fp32, int8 = candidates
    budget = DeviceBudget(max_size_mb=(fp32["size_mb"] + int8["size_mb"]) / 2)
    assert pick_variant(candidates, budget) is int8


def test_pick_impossible_budget_names_it(candidates):
    _, int8 = candidates
    with pytest.raises(StageError) as err:
        pick_variant(candidates, DeviceBudget(max_size_mb=0.001, max_ram_mb=100_000.0))
    message = str(err.value)
    assert message.startswith("device: no variant fits the budget: max_size_mb 0.001 (smallest variant: int8_dynamic")
    assert f"{int8['size_mb']:.4g} MB" in message
    assert "max_ram_mb" not in message  # met by some variant: not named
    with pytest.raises(StageError, match=r"max_p95_latency_ms 1e-06 \(fastest variant.*max_ram_mb 1e-06"):
        pick_variant(candidates, DeviceBudget(max_p95_latency_ms=1e-6, max_ram_mb=1e-6))


def test_pick_budgets_met_only_separately():
    cands = [_fake("small", 0.9, 1.0, p95=5.0), _fake("fast", 0.9, 5.0, p95=1.0)]
    with pytest.raises(StageError, match="no variant meets all budgets at once: small fails max_p95_latency_ms"):
        pick_variant(cands, DeviceBudget(max_size_mb=2.0, max_p95_latency_ms=2.0))


def test_bad_budget_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"device.budget.max_size_mb: must be a positive number"):
        pick_variant([_fake("a", 0.9, 1.0)], DeviceBudget(max_size_mb=-1))


@pytest.fixture(scope="module")
def bundle(candidates, tmp_path_factory) -> Path:
    chosen = pick_variant(candidates, DeviceBudget(max_size_mb=100.0))
    measured = {k: v for k, v in chosen.items() if k not in ("name", "exported")}
    out = tmp_path_factory.mktemp("device") / "bundle"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")  # replaced as a whole
    return write_bundle(chosen["exported"], out, {"model_version": "m:abc123", "variant": chosen["name"],
                                                  "budget": DeviceBudget(max_size_mb=100.0), "measured": measured})


def test_bundle_files_and_manifest(bundle, fp32_model, splits):
    assert sorted(p.name for p in bundle.iterdir()) == sorted(BUNDLE_FILES + ("manifest.json",))
    assert not [p for p in bundle.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    manifest = json.loads((bundle / "manifest.json").read_text())
    for name in BUNDLE_FILES:
        assert manifest["files"][name]["sha256"] == hashlib.sha256((bundle / name).read_bytes()).hexdigest()
    assert manifest["model_version"] == "m:abc123"
    assert manifest["budget"] == {"max_size_mb": 100.0, "max_p95_latency_ms": None, "max_ram_mb": None}
    assert manifest["measured"]["size_mb"] > 0
    schema = json.loads((bundle / "schema.json").read_text())
    assert InputSchema.from_dict(schema["input_schema"]) == fp32_model.schema
    assert (schema["input_name"], schema["output_name"]) == (INPUT_NAME, OUTPUT_NAME)
    assert schema["classes"] == list(splits.dataset.classes)
    pre = json.loads((bundle / "preprocessing.json").read_text())
    assert pre["feature_order"] == splits.dataset.features and pre["dtype"] == "float32"
    assert "inside the model" in pre["standardization"]
    check_manifest(bundle)


def test_runner_imports_only_numpy_and_onnxruntime(bundle):
    tree = ast.parse((bundle / "runner.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported - set(sys.stdlib_module_names) == {"numpy", "onnxruntime"}


def test_verify_bundle_in_clean_process(bundle, candidates, splits):
    chosen = pick_variant(candidates, DeviceBudget(max_size_mb=100.0))
    x, _ = splits.arrays("test")
    rows = [dict(zip(splits.dataset.features, map(float, r))) for r in x]
    sess = session(chosen["exported"].path)  # one thread, as the runner
    expected = sess.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    labels = [splits.dataset.classes[i] for i in expected.argmax(axis=1)]
    report = verify_bundle(bundle, rows, labels)
    assert report["agreement"] == 1.0 and report["labels"] == labels
    assert np.array_equal(np.asarray(report["probabilities"], dtype=np.float32), expected)
    assert not {"torch", "ray", "framework", "plugins"} & set(report["modules_loaded"])
    with pytest.raises(StageError, match="agrees with the model on"):
        verify_bundle(bundle, rows[:2], [labels[1], labels[0]] if labels[0] != labels[1] else ["nope", "nope"])


def test_runner_rejects_bad_features(bundle, splits):
    sys.path.insert(0, str(bundle))
    try:
        import runner
    finally:
        sys.path.remove(str(bundle))
    predictor = runner.Predictor(bundle)
    x, _ = splits.arrays("test")
    names = splits.dataset.features
    row = dict(zip(names, map(float, x[0])))
    labels, probabilities = predictor.predict([row])
    assert labels[0] in splits.dataset.classes and probabilities.shape == (1, 2)
    assert predictor.predict(x[:3])[0] == predictor.predict([dict(zip(names, map(float, r))) for r in x[:3]])[0]
    missing = {k: v for k, v in row.items() if k != names[3]}
    with pytest.raises(ValueError, match=rf"instances\[0\]\.{names[3]}: missing feature"):
        predictor.predict([missing])
    with pytest.raises(ValueError, match=r"instances\[0\]\.colour: unknown feature"):
        predictor.predict([{**row, "colour": 1.0}])
    with pytest.raises(ValueError, match=rf"instances\[1\]\.{names[0]}: expected a finite number"):
        predictor.predict([row, {**row, names[0]: float("nan")}])
    with pytest.raises(ValueError, match=rf"{names[2]}: expected a finite number"):
        predictor.predict([{**row, names[2]: 1e39}])
    with pytest.raises(ValueError, match=r"expected shape \[n, 30\]"):
        predictor.predict(x[:2, :5])


def test_runner_cli_reports_bad_input(bundle, splits, tmp_path):
    names = splits.dataset.features
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{n: 1.0 for n in names[1:]}]))
    done = subprocess.run([sys.executable, "-I", str(bundle / "runner.py"), str(bundle), str(bad)],
                          capture_output=True, text=True, cwd=bundle)
    assert done.returncode == 1
    assert f"instances[0].{names[0]}: missing feature" in done.stderr


def test_changed_bundle_file_is_caught(bundle, tmp_path):
    import shutil

    copy = shutil.copytree(bundle, tmp_path / "copy")
    (copy / "README.txt").write_text("edited")
    with pytest.raises(StageError, match="README.txt does not match its sha256"):
        check_manifest(copy)
