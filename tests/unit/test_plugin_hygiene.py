"""The built-in plugins are written the way a third party's must be: they use the framework's public
API and their own support modules, never another plugin's module or an underscore-prefixed name.

Read from the source (every import, also those inside functions), so a helper borrowed from another
plugin fails here even when no test happens to run the code path that imports it.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from framework.plugins import ENTRY_POINT_GROUP

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"
#: modules registered as plugins (entry points); every other module in plugins/ supports them
PLUGIN_MODULES = {ep.value for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.value.startswith("plugins.")}
SOURCES = sorted(p for p in PLUGINS.glob("*.py") if p.name != "__init__.py")


def _imports(path: Path):
    """(line, module, names) of every absolute import of a framework or plugins module."""
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "plugins":  # from plugins import tune_support
                yield node.lineno, node.module, []
                for alias in node.names:
                    yield node.lineno, f"plugins.{alias.name}", []
            else:
                yield node.lineno, node.module, [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []


def test_every_plugin_module_is_registered():
    assert PLUGIN_MODULES and all((PLUGINS / f"{m.split('.', 1)[1]}.py").is_file() for m in PLUGIN_MODULES)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_private_names_from_other_modules(path):
    private = [
        f"{path.name}:{line}: from {module} import {name}"
        for line, module, names in _imports(path)
        if module.split(".")[0] in ("framework", "plugins")
        for name in names
        if name.startswith("_")
    ]
    assert not private, "underscore-prefixed names are private to their module:\n" + "\n".join(private)


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_plugin_imports_another_plugin(path):
    own = f"plugins.{path.stem}"
    borrowed = [
        f"{path.name}:{line}: {module}"
        for line, module, _ in _imports(path)
        if module in PLUGIN_MODULES and module != own
    ]
    assert not borrowed, (
        "a plugin module may be disabled (FRAMEWORK_DISABLE_PLUGINS): share code through a support "
        "module in plugins/ instead:\n" + "\n".join(borrowed)
    )


def test_planning_imports_no_training_helpers():
    """Plan-time validation of a trainer with privacy on and of the compressors stays cheap: no
    Opacus code, no Ray Tune helpers, no torch."""
    code = (
        "import sys, plugins.train_tune, plugins.compress_distill, plugins.compress_prune\n"
        "from plugins.privacy_config import PrivacyConfig\n"
        "from plugins.train_tune import TuneTrainer\n"
        "from plugins.compress_distill import DistillCompressor\n"
        "TuneTrainer.check_config(TuneTrainer.Config(privacy=PrivacyConfig(enabled=True)), 'train')\n"
        "DistillCompressor.check_config(DistillCompressor.Config(), 'compress')\n"
        "heavy = ('plugins.privacy_opacus', 'plugins.tune_support', 'plugins.nets', 'torch', 'ray', 'opacus')\n"
        "loaded = [m for m in heavy if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
