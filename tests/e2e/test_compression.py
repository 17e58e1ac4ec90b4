"""A compression chain in a recipe: ONNX-level INT8 after export, every variant measured on the
same test rows and registered, the compressed model served and checked over HTTP."""
from __future__ import annotations

import json

import pytest

from framework.plugins import default_components
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def test_int8_chain_is_measured_registered_and_served(ray_session, serve_port, tmp_path):
    plan = plan_recipe(["+recipe=quickstart", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        f"serve.port={serve_port}", "monitor=none", "train.num_samples=2", "train.max_epochs=10",
                        "compress=[{type: int8_dynamic}]", "online_eval.rows=40"])
    assert plan.stage("export").label() == "onnx, int8_dynamic" and not plan.enabled("compress")
    result = execute(plan, default_components(), Reporter(quiet=True))
    assert result.status == "ok"
    export_dir = next((result.run_dir / "stages").glob("*-export"))
    table = json.loads((export_dir / "variants.json").read_text())
    assert [row["variant"] for row in table] == ["onnx", "int8_dynamic"]
    assert abs(table[0]["accuracy"] - table[1]["accuracy"]) <= 0.02
    registry = Registry(str(tmp_path / "store"))
    served = registry.get("breast_cancer_mlp@prod")
    assert served.lineage["compression_chain"] == ["onnx", "int8_dynamic"]
    assert json.loads(registry.read_file(served, "variants.json")) == json.loads(json.dumps(table))
    fp32 = next(v for v in registry.list(kind="model") if v.lineage.get("variant") == "onnx")
    assert fp32.id != served.id and not fp32.aliases
    online = next(s for s in result.stages if s.stage == "online_eval").metrics
    assert online["agreement"] == 1.0 and online["max_abs_diff"] <= 1e-5
