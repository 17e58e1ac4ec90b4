"""Every recipe mistake fails before Ray or torch start, naming the place and the fix."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from framework.errors import RecipeError
from framework.run import plan_recipe

ROOT = Path(__file__).resolve().parents[2]


def error_of(*overrides: str) -> str:
    with pytest.raises(RecipeError) as info:
        plan_recipe(list(overrides))
    return str(info.value)


def test_quickstart_plans_with_every_stage_bound():
    plan = plan_recipe(["+recipe=quickstart"])
    enabled = [s.name for s in plan.stages if s.enabled]
    assert enabled == ["data", "checks", "version", "features", "train", "export", "register", "serve", "online_eval", "monitor"]
    assert plan.stage("features").component.type == "tabular"
    assert plan.stage("train").component.type == "tune"
    assert plan.stage("train").component.refs["model"].name == "mlp"
    assert plan.stage("train").component.plugin == "train_tune"
    assert plan.stage("serve").component.type == "single"


def test_overrides_reach_component_configs():
    plan = plan_recipe(["+recipe=quickstart", "train.max_epochs=5", "seed=11"])
    assert plan.stage("train").component.config.max_epochs == 5
    assert plan.recipe.seed == 11


def test_unknown_recipe_lists_the_recipes_that_exist():
    msg = error_of("+recipe=quikstart")
    assert "+recipe=quikstart" in msg
    assert "Did you mean 'quickstart'" in msg
    assert "Recipes that exist:" in msg and "quickstart" in msg


def test_recipe_without_plus_says_how():
    assert "+recipe=quickstart" in error_of("recipe=quickstart")


@pytest.mark.parametrize(
    "override, path",
    [
        ("trian.max_epochs=3", "trian"),
        ("serve.prot=8001", "serve.prot"),
        ("train.epochz=3", "train.epochz"),
        ("+monitor.0.drift_treshold=0.1", "monitor[0].drift_treshold"),
    ],
)
def test_misspelt_key_names_its_full_path(override, path):
    msg = error_of("+recipe=quickstart", override)
    assert msg.startswith(path), msg
    assert "unknown key" in msg


@pytest.mark.parametrize(
    "override, path, expected",
    [
        ("serve.port=abc", "serve.port", "int"),
        ("train.max_epochs=many", "train.max_epochs", "int"),
        ("online_eval.tolerance=tiny", "online_eval.tolerance", "float"),
        ("serve.enabled=maybe", "serve.enabled", "bool"),
    ],
)
def test_wrong_type_names_path_and_expected_type(override, path, expected):
    msg = error_of("+recipe=quickstart", override)
    assert msg.startswith(path), msg
    assert f"expected {expected}," in msg, msg
    assert "wrong type" in msg


def test_unknown_component_type_lists_names_and_nearest():
    msg = error_of("+recipe=quickstart", "strategy.type=singel")
    assert msg.startswith("strategy.type: unknown traffic_strategy type 'singel'"), msg
    assert "Did you mean 'single'" in msg
    assert "Known: " in msg and "single" in msg.split("Known: ")[1]
    msg = error_of("+recipe=quickstart", "train.type=tunne")
    assert "Did you mean 'tune'" in msg
    msg = error_of("+recipe=quickstart", "train.model=cnnn")
    assert msg.startswith("train.model: unknown model type 'cnnn'. Did you mean 'cnn'?"), msg


def test_unknown_config_group_choice_lists_options():
    msg = error_of("+recipe=quickstart", "strategy=canery")
    assert "canery" in msg and "single" in msg


def test_core_values_are_range_checked():
    assert error_of("+recipe=quickstart", "split.test=1.5").startswith("split.test")
    assert error_of("+recipe=quickstart", "serve.placement=edge").startswith("serve.placement")
    assert error_of("+recipe=quickstart", "+serve.models.other=nothing here").startswith("serve.models.other")
    assert error_of("+recipe=quickstart", "+serve.autoscaling.max_replicas=0").startswith("serve.autoscaling.max_replicas")
    assert error_of("+recipe=quickstart", "+serve.batching.max_batch_size=1").startswith("serve.batching.max_batch_size")
    assert error_of("+recipe=quickstart", "+serve.autoscaling.max_replicas=3", "serve.replicas=2").startswith("serve.replicas")


def test_recipe_typo_inside_a_recipe_file(tmp_path):
    (tmp_path / "mine.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        name: mine
        train:
          max_epoch: 3
        """))
    msg = error_of(f"recipes_dir={tmp_path}", "+recipe=mine")
    assert msg.startswith("train.max_epoch"), msg
    assert "mine.yaml" in msg or "unknown key" in msg


def test_users_own_recipe_folder(tmp_path, monkeypatch):
    (tmp_path / "tiny.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        defaults:
          - override /data: wine
        name: tiny
        train:
          max_epochs: 2
        """))
    plan = plan_recipe([f"recipes_dir={tmp_path}", "+recipe=tiny"])
    assert plan.recipe.name == "tiny"
    assert plan.stage("data").component.config.dataset == "wine"
    assert plan.stage("train").component.config.max_epochs == 2
    monkeypatch.setenv("FRAMEWORK_RECIPES", str(tmp_path))
    assert plan_recipe(["+recipe=tiny"]).recipe_path == tmp_path / "tiny.yaml"


def test_recipe_without_package_header_is_explained(tmp_path):
    (tmp_path / "nohdr.yaml").write_text("name: nohdr\n")
    msg = error_of(f"recipes_dir={tmp_path}", "+recipe=nohdr")
    assert "@package _global_" in msg


def test_errors_happen_before_ray_or_torch_are_imported():
    code = textwrap.dedent("""\
        import json, sys
        from framework.run import plan_recipe
        from framework.errors import RecipeError
        out = {}
        for bad in (["+recipe=typo"], ["+recipe=quickstart", "train.epochz=1"],
                    ["+recipe=quickstart", "serve.port=x"], ["+recipe=quickstart", "strategy.type=nope"]):
            try:
                plan_recipe(bad)
            except RecipeError as e:
                out[bad[-1]] = "error"
        plan_recipe(["+recipe=quickstart"])
        out["heavy"] = sorted(m for m in ("ray", "torch", "onnxruntime", "whylogs") if m in sys.modules)
        print(json.dumps(out))
        """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out.pop("heavy") == []
    assert set(out.values()) == {"error"} and len(out) == 4


def test_cli_exit_code_and_message_for_bad_recipe():
    proc = subprocess.run(
        [sys.executable, "-m", "framework", "run", "+recipe=typo"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "Recipes that exist" in proc.stderr


def test_plan_verb_prints_json_plan():
    proc = subprocess.run(
        [sys.executable, "-m", "framework", "plan", "+recipe=quickstart", "train.max_epochs=3", "--json"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    train = next(s for s in plan["stages"] if s["stage"] == "train")
    assert train["components"][0]["config"]["max_epochs"] == 3


@pytest.mark.parametrize("recipe", sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")))
def test_every_shipped_recipe_composes_and_plans(recipe):
    plan = plan_recipe([f"+recipe={recipe}"])
    assert plan.recipe.name == recipe
    # a model is trained, or distilled from a registered teacher without training (digits_student)
    assert plan.enabled("data") and (plan.enabled("train") or plan.stage("compress").components[0].config.teacher)
    assert plan.enabled("register")
    arms = plan.stage("serve").component.cls.arm_names(plan.stage("serve").component.config, plan.recipe.serve.models)
    assert list(arms) and set(arms) <= set(plan.recipe.serve.models)


def test_recipe_arms_replace_the_default_arm():
    plan = plan_recipe(["+recipe=canary"])
    assert plan.recipe.serve.models == {"champion": "this_run#2", "challenger": "this_run"}
    assert plan_recipe(["+recipe=quickstart"]).recipe.serve.models == {"primary": "this_run"}
