"""Plugin discovery through the entry-point group, duplicates, blocking, and the hook catalogue."""
from __future__ import annotations

import inspect
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from framework import hookimpl, hookspecs
from framework.components import COMPONENT_KINDS, DataSource
from framework.errors import PluginError, RecipeError
from framework.plugins import Components, get_plugin_manager

ROOT = Path(__file__).resolve().parents[2]
BUILTINS = {"data_sklearn", "check_pandera", "train_tune", "model_mlp", "model_cnn", "model_ranker", "export_onnx", "strategy_single", "monitor_whylogs"}


def test_builtins_are_loaded_through_the_entry_point_group():
    pm = get_plugin_manager()
    assert BUILTINS <= {name for name, _ in pm.list_name_plugin()}
    comps = Components.collect(pm)
    assert comps.get("data_source", "sklearn", "data.type").plugin == "data_sklearn"
    assert comps.get("traffic_strategy", "single", "strategy.type").plugin == "strategy_single"
    assert "pandera_schema" in comps.names("data_check")
    assert "whylogs_drift" in comps.names("monitor")


def _source(name: str):
    class Source(DataSource):
        pass

    Source.name = name
    return Source


def test_duplicate_component_name_names_both_plugins():
    class First:
        @hookimpl
        def register_data_sources(self):
            return [_source("table")]

    class Second:
        @hookimpl
        def register_data_sources(self):
            return [_source("table")]

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(First(), name="first_plugin")
    pm.register(Second(), name="second_plugin")
    with pytest.raises(PluginError) as info:
        Components.collect(pm)
    msg = str(info.value)
    assert "duplicate data_source 'table'" in msg
    assert "'first_plugin'" in msg and "'second_plugin'" in msg


def test_registration_hook_returning_a_wrong_class_is_named():
    class Broken:
        @hookimpl
        def register_traffic_strategies(self):
            return [dict]

    pm = get_plugin_manager(load_entry_points=False)
    pm.register(Broken(), name="broken_plugin")
    with pytest.raises(PluginError, match="broken_plugin.*not a TrafficStrategy subclass"):
        Components.collect(pm)


def test_unknown_hook_in_a_plugin_fails_at_start():
    class Typo:
        @hookimpl
        def register_data_sorces(self):
            return []

    with pytest.raises(PluginError, match="register_data_sorces"):
        get_plugin_manager(load_entry_points=False, extra=[Typo()])


def test_unknown_type_suggests_nearest():
    comps = Components.collect(get_plugin_manager())
    with pytest.raises(RecipeError, match=r"data.type: unknown data_source type 'sklaern'. Did you mean 'sklearn'"):
        comps.get("data_source", "sklaern", "data.type")


def _write_third_party(tmp_path: Path, body: str, name: str = "acme_strategy") -> None:
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[framework]\n{name} = {name}\n")


THIRD_PARTY = """
    from dataclasses import dataclass
    from framework import hookimpl, TrafficStrategy, Route

    class StickyFirst(TrafficStrategy):
        name = "sticky_first"
        summary = "always the first arm (a third-party example)"

        @dataclass
        class Config:
            note: str = "hello"

        def route(self, request):
            return Route(primary=next(iter(self.arms)))

    @hookimpl
    def register_traffic_strategies():
        return [StickyFirst]
"""


def _run_python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    import os

    full_env = {**os.environ, "PYTHONPATH": str(tmp_path), **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=ROOT, env=full_env, timeout=120)


def test_third_party_plugin_installed_by_entry_point_is_found_and_usable(tmp_path):
    _write_third_party(tmp_path, THIRD_PARTY)
    proc = _run_python("""
        from framework.run import plan_recipe
        plan = plan_recipe(["+recipe=quickstart", "strategy.type=sticky_first", "+strategy.note=hi"])
        c = plan.stage("serve").component
        print(c.type, c.plugin, c.config.note)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["sticky_first", "acme_strategy", "hi"]


def test_blocked_plugin_is_not_loaded(tmp_path):
    _write_third_party(tmp_path, THIRD_PARTY)
    proc = _run_python("""
        from framework.plugins import default_components
        print(default_components().names("traffic_strategy"))
    """, tmp_path, FRAMEWORK_DISABLE_PLUGINS="acme_strategy")
    assert proc.returncode == 0, proc.stderr
    assert "sticky_first" not in proc.stdout and "single" in proc.stdout


def test_plugin_that_fails_to_import_is_named(tmp_path):
    _write_third_party(tmp_path, "import not_a_module_anywhere\n", name="broken_thing")
    proc = _run_python("""
        from framework.plugins import get_plugin_manager
        get_plugin_manager()
    """, tmp_path)
    assert proc.returncode != 0
    assert "plugin 'broken_thing'" in proc.stderr and "FRAMEWORK_DISABLE_PLUGINS=broken_thing" in proc.stderr


def test_plugins_verb_lists_hooks_components_and_providers():
    proc = subprocess.run([sys.executable, "-m", "framework", "plugins"], capture_output=True, text=True,
                          cwd=ROOT, timeout=120, env={**__import__("os").environ, "COLUMNS": "200"})
    assert proc.returncode == 0, proc.stderr
    for name in BUILTINS | {"tune", "mlp", "cnn", "ranker", "register_models", "pandera_schema", "register_trainers", "on_stage_finished"}:
        assert name in proc.stdout


# ----- meta-tests: every hook is documented, every registration hook has a component kind -----
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(fn, "framework_spec")]


def test_every_hook_is_documented():
    assert len(HOOKS) >= 15
    for name in HOOKS:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc) > 20, f"hook {name} needs a docstring"


def test_every_registration_hook_backs_a_component_kind():
    registration = {n for n in HOOKS if n.startswith("register_")}
    assert registration == {hook for _, hook in COMPONENT_KINDS.values()}


def test_every_hook_is_exercised_by_the_test_suite():
    tests = "\n".join(p.read_text() for p in (ROOT / "tests").rglob("*.py"))
    plugins = "\n".join(p.read_text() for p in (ROOT / "plugins").rglob("*.py"))
    for name in HOOKS:
        assert name in tests or name in plugins, f"hook {name} is neither implemented by a built-in nor tested"


def test_plugin_can_ship_recipes_through_recipe_search_paths(tmp_path):
    shipped = tmp_path / "acme_recipes"
    shipped.mkdir()
    (shipped / "acme_demo.yaml").write_text("# @package _global_\nname: acme_demo\ntrain:\n  max_epochs: 3\n")
    _write_third_party(tmp_path, f"""
        from framework import hookimpl

        @hookimpl
        def recipe_search_paths():
            return [{str(shipped)!r}]
    """, name="acme_recipes_plugin")
    proc = _run_python("""
        from framework.run import plan_recipe
        plan = plan_recipe(["+recipe=acme_demo"])
        print(plan.recipe.name, plan.stage("train").component.config.max_epochs, plan.recipe_path)
    """, tmp_path)
    assert proc.returncode == 0, proc.stderr
    name, epochs, path = proc.stdout.split()
    assert (name, epochs) == ("acme_demo", "3") and path.endswith("acme_recipes/acme_demo.yaml")


# Stages with no built-in yet (labeling, compression, batch prediction) are still real extension
# points: a plugin's components bind to them in the plan like any other.
class ExtensionPlugin:
    @hookimpl
    def register_labelers(self):
        from framework import Labeler

        class KeepLabels(Labeler):
            name = "keep_labels"

            def label(self, dataset, ctx):
                return dataset

        return [KeepLabels]

    @hookimpl
    def register_compressors(self):
        from framework import Compressor

        class NoOpCompressor(Compressor):
            name = "noop_compress"

            @dataclass
            class Config:
                ratio: float = 0.5

            def compress(self, model, splits, ctx):
                return model

        return [NoOpCompressor]

    @hookimpl
    def register_batch_predictors(self):
        from framework import BatchPredictor

        class CountRows(BatchPredictor):
            name = "count_rows"

            def predict(self, model, frame, ctx):
                return frame

        return [CountRows]


def test_extension_stage_components_bind_into_the_plan():
    from framework.run import plan_recipe

    comps = Components.collect(get_plugin_manager(extra=[ExtensionPlugin()]))
    plan = plan_recipe(["+recipe=quickstart", "+label.type=keep_labels",
                        "compress=[{type: noop_compress, ratio: 0.25}]", "+batch.type=count_rows"], comps)
    assert plan.stage("label").component.type == "keep_labels"
    assert plan.stage("compress").component.config.ratio == 0.25
    assert plan.stage("batch").enabled
    with pytest.raises(RecipeError, match=r"compress\[0\].ratio: wrong type"):
        plan_recipe(["+recipe=quickstart", "compress=[{type: noop_compress, ratio: half}]"], comps)


def test_model_level_compressor_after_an_onnx_level_one_is_refused():
    from framework.run import plan_recipe

    comps = Components.collect(get_plugin_manager(extra=[ExtensionPlugin()]))
    plan = plan_recipe(["+recipe=quickstart", "compress=[{type: noop_compress}, {type: int8_dynamic}]"], comps)
    assert plan.stage("compress").label() == "noop_compress"
    assert plan.stage("export").label() == "onnx, int8_dynamic"
    with pytest.raises(RecipeError, match=r"compress\[1\]: 'noop_compress' works on the trained model, but comes after 'int8_dynamic'"):
        plan_recipe(["+recipe=quickstart", "compress=[{type: int8_dynamic}, {type: noop_compress}]"], comps)
