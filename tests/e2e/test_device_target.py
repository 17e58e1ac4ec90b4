"""target: device end to end on digits: distillation + pruning + static INT8, the best variant within the
budgets bundled, and the bundle run in a clean process; an impossible budget is named."""
from __future__ import annotations

import json

import pytest

from framework.errors import StageError
from framework.plugins import default_components
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]
FAST = ["train.num_samples=2", "train.max_epochs=10", "compress.0.epochs=8", "compress.1.fine_tune_epochs=3"]


def run(tmp_path, *overrides):
    plan = plan_recipe(["+recipe=digits_device", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        *FAST, *overrides])
    return execute(plan, default_components(), Reporter(quiet=True))


def test_digits_bundle_within_budget_runs_without_torch_or_ray(ray_session, tmp_path):
    result = run(tmp_path, f"device.bundle_dir={tmp_path / 'bundle'}")
    device = next(s for s in result.stages if s.stage == "device").metrics
    assert device["size_mb"] <= 0.5 and device["latency_p95_ms"] <= 2.0 and device["ram_mb"] <= 200
    assert device["bundle_agreement"] == 1.0
    assert not {"torch", "ray", "framework"} & set(device["bundle_modules"].split(","))
    bundle = tmp_path / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {"model.onnx", "schema.json", "preprocessing.json", "runner.py"} <= set(manifest["files"])
    assert manifest["variant"] == device["variant"] and manifest["model_version"] == device["model_version"]
    compress = next(s for s in result.stages if s.stage == "compress")
    assert compress.component == "distill, prune_structured" and compress.status == "ok"
    names = [s.stage for s in result.stages if s.status == "ok"]
    assert "serve" not in names and names.index("device") > names.index("register")


def test_impossible_budget_is_named(ray_session, tmp_path):
    with pytest.raises(StageError, match=r"device: no variant fits the budget: max_size_mb 1e-06"):
        run(tmp_path, "device.max_size_mb=0.000001")


def test_student_distilled_from_a_registered_cnn_with_no_training_of_its_own(ray_session, tmp_path):
    """digits_cnn registers a CNN as digits_cnn@prod; digits_student distils it (ONNX teacher) for the device."""
    from framework.registry import Registry

    common = [f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}"]
    # before the teacher exists: the run stops at once, naming the key, before Ray or any stage
    with pytest.raises(Exception, match=r"compress\[0\]\.teacher: unknown model 'digits_cnn'"):
        execute(plan_recipe(["+recipe=digits_student", *common]), default_components(), Reporter(quiet=True))

    teacher_run = execute(plan_recipe(["+recipe=digits_cnn", *common, "train.num_samples=1", "train.max_epochs=8",
                                       "gates.thresholds.accuracy.min=0.8"]),
                          default_components(), Reporter(quiet=True))
    teacher = Registry(tmp_path / "store").get("digits_cnn@prod", kind="model")
    assert teacher.lineage["hyperparameters"]["model"] == "cnn"
    assert {s.stage for s in teacher_run.stages if s.status == "skipped"} >= {"serve", "compress", "device"}

    plan = plan_recipe(["+recipe=digits_student", *common, "compress.0.epochs=10", "compress.1.fine_tune_epochs=3",
                        f"device.bundle_dir={tmp_path / 'bundle'}"])
    assert not plan.enabled("train") and plan.enabled("compress")
    result = execute(plan, default_components(), Reporter(quiet=True))
    stages = {s.stage: s for s in result.stages}
    assert stages["train"].status == "skipped" and stages["device"].status == "ok"
    assert stages["compress"].metrics["distill_teacher"] == f"registered {teacher.ref}"
    assert stages["compress"].metrics["distill_parameter_ratio"] < 0.4
    student = Registry(tmp_path / "store").get(stages["register"].metrics["model_version"], kind="model")
    assert student.lineage["trainer"] == "none (distill from digits_cnn@prod)"
    assert stages["device"].metrics["bundle_agreement"] == 1.0


def test_a_model_level_step_without_training_is_refused_at_plan_time(tmp_path):
    from framework.errors import RecipeError

    with pytest.raises(RecipeError, match=r"compress\[0\]: 'prune_structured' needs a model trained by this run"):
        plan_recipe(["+recipe=digits_student", "compress=[{type: prune_structured}]"])
