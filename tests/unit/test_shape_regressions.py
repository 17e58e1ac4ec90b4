"""Regression tests of the defects found while reshaping the architecture ([shape])."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from framework import CheckReport, DataCheck, Dataset, hookimpl
from framework.errors import DataCheckError, RecipeError
from framework.run import plan_recipe

ROOT = Path(__file__).resolve().parents[2]


def error_of(*overrides: str) -> str:
    with pytest.raises(RecipeError) as info:
        plan_recipe(list(overrides))
    return str(info.value)


# 1. a `+` on a key the schema does not have fails like any misspelt key ----------------------
@pytest.mark.parametrize("override, path, hint", [
    ("+bogus_key=1", "bogus_key", None),
    ("+serve.prot=9000", "serve.prot", "port"),
    ("+register.card.slicez={}", "register.card.slicez", "slices"),
    ("+gates.champion.reff=x@prod", "gates.champion.reff", "ref"),
])
def test_plus_on_an_unknown_schema_key_fails(override, path, hint):
    msg = error_of("+recipe=quickstart", override)
    assert msg.startswith(f"{path}: unknown key"), msg
    if hint:
        assert f"Did you mean '{hint}'" in msg


def test_plus_on_a_free_mapping_still_works():
    """serve.faults is a mapping the user fills: adding a key there is what `+` is for."""
    plan = plan_recipe(["+recipe=quickstart", "+serve.faults.primary={error_rate: 0.1}"])
    assert plan.recipe.serve.faults["primary"]["error_rate"] == 0.1


# 2. the core enforces a check's severity from its report ---------------------------------------
class AlwaysFails(DataCheck):
    name = "always_fails"

    def check(self, dataset, ctx):
        return CheckReport(check=self.name, passed=False, rows_checked=len(dataset.frame),
                           failures=[{"column": "x", "check": "never_ok", "rows": [0, 1]}])


class _Plugin:
    @staticmethod
    @hookimpl
    def register_data_checks():
        return [AlwaysFails]


def _recipe(tmp_path, body: str) -> str:
    (tmp_path / "r.yaml").write_text("# @package _global_\ndefaults:\n  - override /data: breast_cancer\nname: r\n" + body)
    return f"recipes_dir={tmp_path}"


def _run_checks(severity: str, tmp_path):
    from framework.context import RunStageContext
    from framework.plan import build_plan
    from framework.plugins import Components, get_plugin_manager
    from framework.recipe import compose
    from framework.stages import RunState
    from framework.stages.data import run_checks

    components = Components.collect(get_plugin_manager(extra=[_Plugin]))
    cfg, path = compose([_recipe(tmp_path, f"checks: [{{type: always_fails, severity: {severity}}}]\n"), "+recipe=r"])
    plan = build_plan(cfg, path, components)
    state = RunState(dataset=Dataset("t", pd.DataFrame({"x": [1.0, 2.0], "y": [0, 1]}), ["x"], "y", classes=[0, 1]))
    ctx = RunStageContext("checks", tmp_path / "checks")
    run_checks(plan, plan.stage("checks"), state, ctx, components)
    return ctx


def test_a_failing_report_with_severity_fail_stops_the_run(tmp_path):
    with pytest.raises(DataCheckError) as info:
        _run_checks("fail", tmp_path)
    assert "checks[0] (always_fails)" in str(info.value) and "'x'" in str(info.value)
    assert info.value.failures and info.value.failures[0]["check"] == "never_ok"


def test_a_failing_report_with_severity_warn_lets_the_run_go_on(tmp_path):
    ctx = _run_checks("warn", tmp_path)
    assert ctx.metrics["checks_passed"] == "0/1"
    assert (tmp_path / "checks" / "reports.json").is_file()


def test_an_unknown_severity_is_refused_at_plan_time(tmp_path):
    msg = error_of(_recipe(tmp_path, "checks: [{type: pandera_schema, severity: loud}]\n"), "+recipe=r")
    assert msg.startswith("checks[0].severity: must be one of fail, warn")


# 5. a YAML syntax error in a recipe is one error naming file, line and column ------------------
def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    (tmp_path / "broken.yaml").write_text("# @package _global_\nname: bad\ndata: {type: sklearn\n  x: [1,\n")
    done = subprocess.run([sys.executable, "-m", "framework", "plan", f"recipes_dir={tmp_path}", "+recipe=broken"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
    assert len(lines) <= 2, done.stderr  # one error, no traceback (rich may wrap it once)
    assert f"{tmp_path / 'broken.yaml'}:4:4: YAML syntax error" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


# 6. `recipes recipes_dir=DIR` lists that folder's recipes ---------------------------------------
def test_recipes_verb_reads_recipes_dir(tmp_path):
    (tmp_path / "mine.yaml").write_text("# @package _global_\nname: mine\n")
    done = subprocess.run([sys.executable, "-m", "framework", "recipes", f"recipes_dir={tmp_path}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "mine" in done.stdout and str(tmp_path / "mine.yaml") in done.stdout
    bad = subprocess.run([sys.executable, "-m", "framework", "recipes", "seed=3"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "recipes_dir" in bad.stderr


# 7. switching a component in the recipe body, and component keys without `+` -------------------
def test_switching_the_data_component_in_a_recipe_body_needs_no_override_null(tmp_path):
    """conf's default data group (sklearn breast_cancer) leaves `dataset` behind; a recipe that
    says `data: {type: ...}` for another component must not inherit it."""
    from framework.plan import build_plan
    from framework.plugins import Components, get_plugin_manager
    from framework.recipe import compose

    from framework import DataSource

    class Rows(DataSource):
        name = "rows_for_test"

        from dataclasses import dataclass as _dc

        @_dc
        class Config:
            n: int = 3

    class Plugin:
        @staticmethod
        @hookimpl
        def register_data_sources():
            return [Rows]

    (tmp_path / "switch.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        name: switch
        data:
          type: rows_for_test
          n: 5
    """))
    components = Components.collect(get_plugin_manager(extra=[Plugin]))
    cfg, path = compose([f"recipes_dir={tmp_path}", "+recipe=switch"])
    plan = build_plan(cfg, path, components)
    assert plan.stage("data").component.type == "rows_for_test"
    assert plan.stage("data").component.config.n == 5


def test_a_component_key_without_plus_is_set():
    plan = plan_recipe(["+recipe=quickstart", "train.cpus_per_trial=0.5"])
    assert plan.stage("train").component.config.cpus_per_trial == 0.5


def test_a_misspelt_component_key_without_plus_names_what_the_component_accepts():
    msg = error_of("+recipe=quickstart", "train.cpus_per_tril=1")
    assert msg.startswith("train.cpus_per_tril: unknown key")
    assert "'tune' accepts:" in msg and "cpus_per_trial" in msg


# 3. a PROMOTE that names its arm, without weights, moves the registry's prod alias -----------
def test_the_traffic_stage_promotes_the_arm_the_event_names():
    """The host records the arm answering after a verdict; the traffic stage moves `prod` to it
    (before, it took `decision.arm or max(weights)` and the host dropped `arm`)."""
    from framework.components import Decision, Route, TrafficStrategy, Verdict
    from framework.serving.host import StrategyHost
    from framework.stages.traffic import promoted_arm

    class NamesItsArm(TrafficStrategy):
        name = "names_its_arm"

        def choose(self, request):
            return Route(self.routable[0])

        def decide(self):
            return Decision(Verdict.PROMOTE, "x is better", arm="x")

    host = StrategyHost(NamesItsArm(None, {"a": "m:1", "x": "m:2", "b": "m:3"}), {"a": "m:1", "x": "m:2", "b": "m:3"})
    host.decide()
    [event] = host.events_since(0)
    assert promoted_arm(event) == "x"
    assert event["decision_arm"] == "x" and event["weights"] is None
    assert promoted_arm({"weights": {"a": 0.2, "b": 0.8}}) == "b"  # events of older hosts
