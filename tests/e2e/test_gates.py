"""Quality gates for CI: thresholds and a champion comparison on the same test rows; a failed
gate stops the run before anything is registered and `python -m framework run` exits non-zero."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from framework.errors import GateError
from framework.plugins import default_components
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]
ROOT = Path(__file__).resolve().parents[2]
QUICK = ["+recipe=quickstart", "serve.enabled=false", "train.num_samples=1", "train.max_epochs=8"]


def gated_run(tmp_path, *overrides):
    plan = plan_recipe([*QUICK, f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}", *overrides])
    return execute(plan, default_components(), Reporter(quiet=True))


def gate_rows(result) -> list[dict]:
    gate_dir = next((result.run_dir / "stages").glob("*-gate"))
    return json.loads((gate_dir / "gates.json").read_text())


def test_gates_pass_then_champion_comparison_on_the_same_rows(ray_session, tmp_path):
    first = gated_run(tmp_path, "+gates.thresholds.accuracy.min=0.9", "+gates.thresholds.size_mb.max=1",
                      "gates.champion.ref=breast_cancer_mlp@prod")
    rows = {r["gate"]: r for r in gate_rows(first)}
    assert all(r["passed"] for r in rows.values())
    assert "no champion" in rows["champion accuracy"]["rule"]
    registry = Registry(str(tmp_path / "store"))
    champion = registry.get("breast_cancer_mlp@prod")
    # the same seeded recipe again: the same model, so the delta against the champion is exactly 0
    second = gated_run(tmp_path, "gates.champion.ref=breast_cancer_mlp@prod", "gates.champion.min_delta=0")
    row = gate_rows(second)[0]
    assert row["passed"] and row["value"] == 0.0 and champion.ref in row["rule"]
    with pytest.raises(GateError) as info:
        gated_run(tmp_path, "gates.champion.ref=breast_cancer_mlp@prod", "gates.champion.min_delta=0.05")
    assert "FAIL  champion accuracy" in str(info.value)


def test_failed_gate_exits_non_zero_prints_the_table_and_registers_nothing(ray_session, tmp_path):
    import ray

    store = tmp_path / "store"
    env = {**os.environ, "COLUMNS": "200"}
    cmd = [sys.executable, "-m", "framework", "run", *QUICK, f"store.uri={store}", f"runs_dir={tmp_path / 'runs'}",
           f"ray.address={ray.get_runtime_context().gcs_address}",
           "+gates.thresholds.accuracy.min=0.9999", "+gates.thresholds.latency_p95_ms.max=1000"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    output = proc.stdout + proc.stderr
    assert "FAIL  accuracy" in output and "PASS  latency_p95_ms" in output
    assert "the model was not registered" in output
    assert Registry(str(store)).list(kind="model") == []
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert status["gate"] == "failed" and "register" not in status
