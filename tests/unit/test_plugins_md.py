"""PLUGINS.md, the plugin author's guide, is checked against the code, and its tutorials run.

* every hook of framework/hookspecs.py is documented under its stage with its exact signature;
* every component kind of COMPONENT_KINDS is documented with its base class, method, hook,
  recipe key and conformance kit;
* each tutorial's code blocks are read from PLUGINS.md at test time (never copied here): the
  ``# NAME.py`` blocks become modules, the tutorial's own ``Test*`` kit subclasses are collected
  below, the tutorial module is registered as a plugin, its recipe block is
  planned from a recipe folder (also through ``python -m framework plan``) and its component exercised;
* datasette-style meta-test: every hook is implemented by a built-in, the acme example package
  or a tutorial, or is listed below with the reason it is not.
"""
from __future__ import annotations

import inspect
import json
import re
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import framework
from framework import hookspecs
from framework.components import COMPONENT_KINDS
from framework.errors import RecipeError
from framework.plugins import DISABLE_ENV, ENTRY_POINT_GROUP, Components, get_plugin_manager
from framework.run import plan_recipe
from framework.testing import CONTRACTS, make_stage_context, served_window
from framework.testing.data import breast_cancer_splits

ROOT = Path(__file__).resolve().parents[2]
PLUGINS_MD = (ROOT / "PLUGINS.md").read_text()
HOOKSPECS = ROOT / "framework" / "hookspecs.py"

#: hooks no installed plugin implements yet, with the reason (remove an entry once one does)
NO_IMPLEMENTATION_YET = {
}


# ---------------------------------------------------------------------------------------------
# Reading PLUGINS.md and hookspecs.py
# ---------------------------------------------------------------------------------------------
def section(text: str, heading: str) -> str:
    """The body under the line ``heading``, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    lines = text.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == heading)
    except StopIteration:
        raise AssertionError(f"PLUGINS.md has no heading '{heading}'") from None
    body = []
    in_code = False
    for line in lines[start + 1:]:
        in_code ^= line.startswith("```")
        if not in_code and re.match(rf"^#{{1,{level}}} ", line):
            break
        body.append(line)
    return "\n".join(body)


def subsections(text: str, level: int) -> dict[str, str]:
    """Heading text -> body, for the headings of exactly ``level`` in ``text`` (code skipped)."""
    found: dict[str, list[str]] = {}
    current = None
    in_code = False
    for line in text.splitlines():
        in_code ^= line.startswith("```")
        match = None if in_code else re.match(r"^(#+) (.*)$", line)
        if match and len(match.group(1)) <= level:
            current = match.group(2).strip() if len(match.group(1)) == level else None
            if current is not None:
                found[current] = []
            continue
        if current is not None:
            found[current].append(line)
    return {k: "\n".join(v) for k, v in found.items()}


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, code) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)]


def hookspec_groups() -> dict[str, list[str]]:
    """Banner title -> hook names, in the order of framework/hookspecs.py."""
    groups: dict[str, list[str]] = {}
    banner = None
    lines = HOOKSPECS.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("# ---") and i + 2 < len(lines) and lines[i + 2].startswith("# ---"):
            banner = lines[i + 1].lstrip("# ").strip()
            groups[banner] = []
        match = re.match(r"^def (\w+)\(", line)
        if match and lines[i - 1].strip() == "@hookspec":
            groups[banner].append(match.group(1))
    return groups


HOOKS = [name for names in hookspec_groups().values() for name in names]


def spec_signature(name: str) -> str:
    """``name(param: annotation, ...) -> return`` as hookspecs.py spells it (string annotations)."""
    sig = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in sig.parameters.values())
    return f"{name}({params}) -> {sig.return_annotation}"


# ---------------------------------------------------------------------------------------------
# Hooks
# ---------------------------------------------------------------------------------------------
def test_hookspecs_are_read_completely():
    declared = {n for n, f in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(f, "framework_spec")}
    assert set(HOOKS) == declared and len(HOOKS) == len(declared)


def test_every_hook_is_documented_under_its_stage_with_its_signature():
    hooks_md = section(PLUGINS_MD, "## Hooks")
    groups = subsections(hooks_md, 3)
    assert list(groups) == list(hookspec_groups()), "PLUGINS.md's hook groups differ from hookspecs.py's banners"
    for group, names in hookspec_groups().items():
        documented = subsections(groups[group], 4)
        signatures = [h.strip("`") for h in documented]
        expected = [spec_signature(n) for n in names]
        assert signatures == expected, f"under '### {group}': PLUGINS.md documents {signatures}, hookspecs.py has {expected}"
        for heading, body in documented.items():
            assert len(body.strip()) > 30, f"hook {heading} has no description in PLUGINS.md"


def test_every_hook_is_mentioned_in_plugins_md():
    missing = [name for name in HOOKS if f"`{name}(" not in PLUGINS_MD]
    assert not missing, f"hooks missing from PLUGINS.md: {missing}"


def test_discovery_section_names_the_real_group_and_switches():
    discovery = section(PLUGINS_MD, "## How plugins are found")
    assert f"[project.entry-points.{ENTRY_POINT_GROUP}]" in discovery
    assert f"`{ENTRY_POINT_GROUP}` entry-point group" in discovery
    assert DISABLE_ENV in discovery
    assert "python -m framework plugins" in discovery and "duplicate" in discovery.lower()
    assert "get_plugin_manager(extra=[" in discovery and "Components.collect(pm)" in discovery


# ---------------------------------------------------------------------------------------------
# Component contracts
# ---------------------------------------------------------------------------------------------
def contract_tables() -> dict[str, dict[str, str]]:
    """kind -> {row name: cell} of each kind's table in '## Component contracts'."""
    kinds = subsections(section(PLUGINS_MD, "## Component contracts"), 3)
    tables = {}
    for heading, body in kinds.items():
        rows = re.findall(r"^\| (\w[\w ]*?) \| (.+?) \|$", body, re.M)
        tables[heading.strip("`")] = {k: v for k, v in rows}
    return tables


def test_every_component_kind_is_documented():
    assert list(contract_tables()) == list(COMPONENT_KINDS)


@pytest.mark.parametrize("kind", list(COMPONENT_KINDS))
def test_each_kind_says_what_to_subclass_implement_register_and_test(kind):
    base, hook = COMPONENT_KINDS[kind]
    table = contract_tables()[kind]
    assert table["subclass"] == f"`framework.{base.__name__}`" and getattr(framework, base.__name__) is base
    assert table["hook"] == f"`{hook}`"
    assert table["recipe key"] == f"`{base.recipe_key}`"
    kit = CONTRACTS[kind]
    attribute = getattr(kit, "component_attr", "strategy_cls")
    assert table["kit"] == f"`{kit.__name__}` (`{attribute}`)"
    methods = re.findall(r"`(\w+)\(", table["implement"])
    assert methods, f"{kind}: the 'implement' row names no method"
    for method in methods:
        assert callable(getattr(base, method, None)), f"{kind}: {base.__name__} has no method {method}()"


def test_shared_contract_is_documented():
    contracts = section(PLUGINS_MD, "## Component contracts")
    for needle in ("check_config(config, key, refs=None)", "`references`", "`registry_refs(config)`", "`Config`",
                   "(config, refs=None)", "(config, arms, refs=None)"):
        assert needle in contracts, f"'{needle}' missing from PLUGINS.md's component contracts"
    assert str(inspect.signature(framework.Component.check_config)) == "(config: 'Any', key: 'str', refs: 'Mapping[str, type] | None' = None) -> 'None'"


def test_every_kit_is_listed_in_the_testing_section():
    testing = section(PLUGINS_MD, "## Testing a plugin: the conformance kits")
    for kind, kit in CONTRACTS.items():
        assert f"| `{kit.__name__}` |" in testing, f"{kit.__name__} ({kind}) missing from the kits table"


# ---------------------------------------------------------------------------------------------
# The tutorials
# ---------------------------------------------------------------------------------------------
@dataclass
class Tutorial:
    title: str
    modules: dict[str, types.ModuleType] = field(default_factory=dict)
    recipes: dict[str, str] = field(default_factory=dict)  # file name -> YAML text

    @property
    def plugin(self) -> types.ModuleType:
        """The tutorial's plugin module: the first python block."""
        return next(iter(self.modules.values()))

    def write_recipes(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in self.recipes.items():
            (folder / name).write_text(text)
        return folder


def load_tutorial(title: str) -> Tutorial:
    """Each ``# NAME.py`` python block of the section becomes module NAME (in order, so a test
    block imports the plugin block), each yaml block the recipe file ``NAME.yaml`` of its ``name``."""
    tutorial = Tutorial(title)
    for language, code in code_blocks(section(PLUGINS_MD, f"## {title}")):
        first = code.splitlines()[0]
        if language == "python":
            name = re.fullmatch(r"# (\w+)\.py", first)
            assert name, f"{title}: a python block must start with '# NAME.py', got {first!r}"
            module_name = name.group(1)
            assert module_name not in sys.modules, f"{title}: module name '{module_name}' is taken"
            module = types.ModuleType(module_name)
            sys.modules[module_name] = module  # before running it: dataclasses and pickling look it up
            exec(compile(code, f"PLUGINS.md ({title}) {module_name}.py", "exec"), module.__dict__)
            tutorial.modules[module_name] = module
        elif language == "yaml":
            name = re.search(r"^name: (\w+)$", code, re.M)
            assert first == "# @package _global_" and name, f"{title}: a recipe block starts '# @package _global_' and sets name"
            tutorial.recipes[f"{name.group(1)}.yaml"] = code
    assert len(tutorial.modules) == 2 and len(tutorial.recipes) == 1, f"{title}: expected a plugin, a test and a recipe"
    return tutorial


TUTORIALS = {
    "strategy": load_tutorial("Tutorial 1: a traffic strategy"),
    "data_source": load_tutorial("Tutorial 2: a data source"),
    "monitor": load_tutorial("Tutorial 3: a monitor"),
}


def _collect_tutorial_kits() -> None:
    """Bind each tutorial's kit subclasses here, so pytest collects them as the tutorial's reader would."""
    for key, tutorial in TUTORIALS.items():
        test_module = list(tutorial.modules.values())[1]
        for name, obj in vars(test_module).items():
            if name.startswith("Test") and isinstance(obj, type) and obj.__module__ == test_module.__name__:
                globals()[f"TestTutorial_{key}_{name[4:]}"] = obj


_collect_tutorial_kits()


def components_with(tutorial: Tutorial) -> Components:
    return Components.collect(get_plugin_manager(extra=[tutorial.plugin]))


def plan_verb(monkeypatch, capsys, components: Components, args: list[str]) -> str:
    """``python -m framework plan ARGS`` in this process, with the tutorial's plugin installed."""
    import framework.plugins
    from framework.cli import main

    monkeypatch.setattr(framework.plugins, "default_components", lambda: components)
    monkeypatch.setenv("COLUMNS", "200")
    capsys.readouterr()
    assert main(["plan", *args]) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_tutorial_kits_are_collected():
    collected = sorted(n for n in globals() if n.startswith("TestTutorial_"))
    assert collected == ["TestTutorial_data_source_JsonLinesTable", "TestTutorial_monitor_ClassShare",
                         "TestTutorial_strategy_KeySplit"]


def test_tutorial_strategy_is_planned_listed_and_splits_sticky_by_weight(tmp_path, monkeypatch, capsys):
    tutorial = TUTORIALS["strategy"]
    components = components_with(tutorial)
    args = [f"recipes_dir={tutorial.write_recipes(tmp_path / 'my-recipes')}", "+recipe=sticky_split"]
    plan = plan_recipe(args, components)
    planned = plan.stage("serve").component
    assert (planned.type, planned.plugin, planned.cls) == ("key_split", "key_split", tutorial.plugin.KeySplit)
    assert dict(planned.config.weights) == {"champion": 9.0, "challenger": 1.0}
    out = plan_verb(monkeypatch, capsys, components, args)
    assert re.search(r"serve\s+│\s+key_split\s+│\s+key_split", out), out

    from framework import RouteRequest

    strategy = planned.build(dict(plan.recipe.serve.models))  # as the serving host builds it
    routes = [strategy.route(RouteRequest(f"r{i}", key=f"user{i % 2000}")).primary for i in range(10_000)]
    assert abs(routes.count("champion") / len(routes) - 0.9) < 0.02
    assert routes[:2000] == routes[2000:4000], "the same user reached another arm"
    with pytest.raises(RecipeError, match=r"strategy\.weights"):
        plan_recipe([*args, "strategy.weights.champion=-1"], components)
    with pytest.raises(RecipeError, match=r"strategy\.weights: \['canary'\]"):
        plan_recipe([*args, "+strategy.weights.canary=1"], components)


def test_tutorial_data_source_validates_at_plan_time_is_listed_and_loads(tmp_path, monkeypatch, capsys):
    tutorial = TUTORIALS["data_source"]
    components = components_with(tutorial)
    table = tmp_path / "widgets.jsonl"
    rows = [{"id": f"W{i}", "length": 10.0 + i % 3, "weight": 2.5 * (i % 4), "label": ["ok", "scrap"][i % 3 == 0]}
            for i in range(30)]
    table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipes = tutorial.write_recipes(tmp_path / "my-recipes")
    monkeypatch.chdir(tmp_path)  # the recipe's own path, parts.jsonl, does not exist here
    with pytest.raises(RecipeError, match=r"data\.path: no file 'parts\.jsonl'"):
        plan_recipe([f"recipes_dir={recipes}", "+recipe=parts_quality"], components)
    args = [f"recipes_dir={recipes}", "+recipe=parts_quality", f"data.path={table}"]
    with pytest.raises(RecipeError, match=r"data\.features: lists the target 'label'"):
        plan_recipe([*args, "data.features=[length,label]"], components)

    plan = plan_recipe(args, components)
    planned = plan.stage("data").component
    assert (planned.type, planned.plugin) == ("jsonl_table", "jsonl_table")
    assert re.search(r"data\s+│\s+jsonl_table\s+│\s+jsonl_table", plan_verb(monkeypatch, capsys, components, args))

    ctx = make_stage_context(tmp_path / "stage", "data")
    dataset = planned.build().load(ctx)  # as the data stage builds and calls it
    assert dataset.name == "widgets" and dataset.target == "label"
    assert dataset.features == ["length", "weight"], "the text column 'id' is not a feature"
    assert dataset.classes == ["ok", "scrap"] and len(dataset.frame) == 30 and ctx.metrics["rows"] == 30


def test_tutorial_monitor_is_planned_listed_and_alerts_on_a_moved_class_mix(tmp_path, monkeypatch, capsys):
    tutorial = TUTORIALS["monitor"]
    components = components_with(tutorial)
    args = [f"recipes_dir={tutorial.write_recipes(tmp_path / 'my-recipes')}", "+recipe=watch_classes"]
    plan = plan_recipe(args, components)
    planned, = plan.stage("monitor").components
    assert (planned.type, planned.plugin, planned.config.max_shift) == ("class_share", "share_monitor", 0.1)
    assert re.search(r"monitor\s+│\s+class_share\s+│\s+share_monitor", plan_verb(monkeypatch, capsys, components, args))
    with pytest.raises(RecipeError, match=r"monitor\[0\]\.max_shift"):
        plan_recipe([*args, "monitor.0.max_shift=1.5"], components)

    reference = breast_cancer_splits()
    rows, features = reference.test, reference.dataset.features
    monitor = planned.build()
    calm = monitor.evaluate(served_window(rows, features, rows["diagnosis"].tolist()), reference,
                            make_stage_context(tmp_path / "calm", "monitor"))
    assert calm.alerts == [] and calm.metrics["served_rows"] == len(rows)
    assert calm.metrics["largest_shift"] < 0.05  # a stratified split: the test mix is the training mix
    # a model that calls two thirds of the cases malignant, when about a third were
    moved = ["malignant" if i % 3 else "benign" for i in range(len(rows))]
    alarm = monitor.evaluate(served_window(rows, features, moved), reference, make_stage_context(tmp_path / "moved", "monitor"))
    assert len(alarm.alerts) == 2 and any(a.startswith("class 'malignant'") for a in alarm.alerts), alarm.alerts


# ---------------------------------------------------------------------------------------------
# Meta-test (as datasette's): every hook is implemented somewhere, or we say why not
# ---------------------------------------------------------------------------------------------
def test_every_hook_is_implemented_by_a_builtin_acme_or_tutorial_plugin():
    pm = get_plugin_manager(extra=[t.plugin for t in TUTORIALS.values()])
    names = {name for name, _ in pm.list_name_plugin()}
    assert {"acme_jsonl", "acme_audit", "acme_recipes"} <= names, \
        "the example package examples/plugin-acme is not installed: run `make setup`"
    for hook in HOOKS:
        implementers = sorted(pm.get_name(i.plugin) for i in getattr(pm.hook, hook).get_hookimpls())
        if hook in NO_IMPLEMENTATION_YET:
            assert not implementers, f"{hook} is implemented now (by {implementers}): remove it from NO_IMPLEMENTATION_YET"
        else:
            assert implementers, f"no built-in, acme or tutorial plugin implements {hook}: add one, or say why in NO_IMPLEMENTATION_YET"
    assert set(NO_IMPLEMENTATION_YET) <= set(HOOKS)

