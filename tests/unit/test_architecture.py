"""The architecture holds: import-linter contracts, no import cycles in the core, no private name
imported across modules, third-party internals only in framework/compat, one stage table, and
every built-in plugin can be switched off without breaking the others."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = ("framework", "plugins", "hydra_plugins")


def _sources(*packages: str):
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), filename=str(path))


def test_import_linter_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    assert exe, "import-linter is part of the test extra: pip install -e '.[test]'"
    done = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" not in done.stdout.split("Contracts:")[-1].split("\n")[0] or " 0 broken" in done.stdout


def test_no_import_cycles_in_the_core():
    import grimp

    graph = grimp.build_graph("framework", exclude_type_checking_imports=True)
    cycles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            # a package importing its own submodules (its face) is not a cycle of meaning
            if imported.startswith(module + ".") or module.startswith(imported + "."):
                continue
            if graph.chain_exists(importer=imported, imported=module):
                chain = graph.find_shortest_chain(importer=imported, imported=module)
                if chain and not all(a.startswith(module) for a in chain):
                    cycles.append(" -> ".join((module, *chain)))
    assert not cycles, "import cycles:\n" + "\n".join(sorted(set(cycles))[:20])


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path, tree in _sources(*FIRST_PARTY):
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or node.module is None:
                continue
            top = node.module.split(".")[0]
            first_party = node.level > 0 or top in FIRST_PARTY
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                if private and first_party:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {alias.name} from {node.module}")
    assert not offenders, "\n".join(offenders)


def test_third_party_internals_only_in_compat():
    offenders = []
    for path, tree in _sources("framework"):
        if "compat" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] not in FIRST_PARTY and any(p.startswith("_") and not p.startswith("__") for p in parts[1:]):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {name}")
    assert not offenders, "third-party internals belong in framework/compat:\n" + "\n".join(offenders)


def test_every_stage_is_declared_once_and_runs_a_real_function():
    from framework.components import COMPONENT_KINDS
    from framework.pipeline import STAGES

    names = [s.name for s in STAGES]
    assert len(names) == len(set(names))
    for spec in STAGES:
        assert callable(spec.load_runner()), spec
        assert spec.kind is None or spec.kind in COMPONENT_KINDS, spec
        assert (spec.kind is None) == (spec.recipe_key is None), spec


def test_the_plan_follows_the_stage_table():
    from framework.pipeline import STAGES
    from framework.run import plan_recipe

    plan = plan_recipe(["+recipe=quickstart"])
    assert [s.name for s in plan.stages] == [s.name for s in STAGES]
    assert all(s.spec is spec for s, spec in zip(plan.stages, STAGES))


def _built_in_plugins() -> list[str]:
    from importlib.metadata import entry_points

    return sorted(ep.name for ep in entry_points(group="framework") if ep.value.startswith("plugins."))


def test_each_built_in_plugin_can_be_disabled_and_the_rest_still_plan(monkeypatch):
    """Switch each built-in off in turn: the others load, and every recipe either plans or fails
    naming a component type that only the switched-off plugin provides."""
    from framework.errors import RecipeError
    from framework.plan import build_plan
    from framework.plugins import DISABLE_ENV, Components, default_components, get_plugin_manager
    from framework.recipe import available_recipes, compose, recipe_folders

    everything = default_components()
    composed = {name: compose([f"+recipe={name}"]) for name in available_recipes(recipe_folders())}
    plugins = _built_in_plugins()
    assert len(plugins) >= 10
    for disabled in plugins:
        monkeypatch.setenv(DISABLE_ENV, disabled)
        components = Components.collect(get_plugin_manager())
        assert components.pm.is_blocked(disabled) and components.pm.get_plugin(disabled) is None
        lost = {name for kind, entries in everything.by_kind.items() for name, entry in entries.items()
                if entry.plugin == disabled}
        for recipe, (cfg, path) in composed.items():
            try:
                build_plan(cfg.copy(), path, components)
            except RecipeError as exc:
                assert any(f"'{name}'" in str(exc) for name in lost), (
                    f"with {disabled} disabled, recipe {recipe} fails for another reason: {exc}")
    monkeypatch.delenv(DISABLE_ENV)


def test_plugins_module_names_stay_out_of_the_core():
    """The core names no built-in plugin module, not even in a string (a plugin may be uninstalled)."""
    offenders = []
    for path in sorted((ROOT / "framework").rglob("*.py")):
        text = path.read_text()
        for line_no, line in enumerate(text.splitlines(), 1):
            if "import plugins" in line or "from plugins" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{line_no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("verb", ["plan", "stages", "recipes"])
def test_cli_verbs_answer_without_heavy_imports(verb):
    """plan / stages / recipes read the stage table and the recipes only: no torch, no Ray."""
    code = (
        "import sys; from framework.cli import main; "
        f"rc = main({[verb] + (['+recipe=quickstart'] if verb == 'plan' else [])!r}); "
        "heavy = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "print('HEAVY', heavy); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "HEAVY []" in done.stdout, done.stdout[-500:]
