"""The one plugin-manager factory, and the typed component registry built from it.

Built-in plugins are registered through the same ``framework`` entry-point group a third party
uses, so the third-party path runs on every invocation. ``FRAMEWORK_DISABLE_PLUGINS`` (comma
separated entry-point names) blocks plugins.
"""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import pluggy

from . import hookspecs
from .components import COMPONENT_KINDS, Component
from .errors import PluginError, RecipeError

if TYPE_CHECKING:  # annotations only: the plugin manager must not import the planner
    from .components import Decision
    from .plan import Plan
    from .registry import Version

ENTRY_POINT_GROUP = "framework"
DISABLE_ENV = "FRAMEWORK_DISABLE_PLUGINS"


def get_plugin_manager(load_entry_points: bool = True, extra: list[Any] | None = None) -> pluggy.PluginManager:
    """A plugin manager with every hookspec, blocked names applied and entry points loaded."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for name in filter(None, (n.strip() for n in os.environ.get(DISABLE_ENV, "").split(","))):
        pm.set_blocked(name)
    if load_entry_points:
        _load_entry_points(pm)
    for plugin in extra or []:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from exc
    return pm


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    """Like pluggy's loader, but a plugin that fails to import is named in the error."""
    from importlib.metadata import entry_points

    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if pm.is_blocked(ep.name) or pm.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            dist = getattr(ep.dist, "name", "?")
            raise PluginError(
                f"plugin '{ep.name}' ({ep.value}, package {dist}) failed to import: {exc!r}. "
                f"Fix or uninstall it, or block it with {DISABLE_ENV}={ep.name}"
            ) from exc
        pm.register(plugin, name=ep.name)


@dataclass
class ComponentEntry:
    cls: type[Component]
    plugin: str


@dataclass
class Components:
    """Typed view over a plugin manager: one registry per component kind."""

    pm: pluggy.PluginManager
    by_kind: dict[str, dict[str, ComponentEntry]] = field(default_factory=dict)

    @classmethod
    def collect(cls, pm: pluggy.PluginManager) -> "Components":
        registry = cls(pm)
        for kind, (base, hook_name) in COMPONENT_KINDS.items():
            entries: dict[str, ComponentEntry] = {}
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
                result = impl.function()
                for comp in result or []:
                    if not (isinstance(comp, type) and issubclass(comp, base)):
                        raise PluginError(
                            f"plugin '{plugin_name}' hook {hook_name} returned {comp!r}, "
                            f"which is not a {base.__name__} subclass"
                        )
                    if not comp.name:
                        raise PluginError(f"plugin '{plugin_name}': {comp.__qualname__} has no `name`")
                    if comp.name in entries:
                        raise PluginError(
                            f"duplicate {kind} '{comp.name}': provided by plugin '{entries[comp.name].plugin}' "
                            f"and by plugin '{plugin_name}'. Rename one, or block a plugin with "
                            f"{DISABLE_ENV}=NAME"
                        )
                    entries[comp.name] = ComponentEntry(comp, plugin_name)
            registry.by_kind[kind] = entries
        return registry

    def names(self, kind: str) -> list[str]:
        return sorted(self.by_kind.get(kind, {}))

    def get(self, kind: str, name: str, where: str) -> ComponentEntry:
        """The component ``name`` of ``kind``; ``where`` is the recipe key path for the message."""
        entries = self.by_kind.get(kind, {})
        if name in entries:
            return entries[name]
        known = sorted(entries)
        close = difflib.get_close_matches(str(name), known, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise RecipeError(
            f"{where}: unknown {kind} type '{name}'.{hint} Known: {', '.join(known) or '(none installed)'}"
        )

    def recipe_dirs(self) -> list[str]:
        dirs: list[str] = []
        for result in self.pm.hook.recipe_search_paths():
            dirs.extend(str(d) for d in result or [])
        return dirs

    @property
    def hooks(self) -> "LifecycleHooks":
        return LifecycleHooks(self.pm)


class LifecycleHooks:
    """Typed calls of the lifecycle hooks, in one place (as tox does): the core calls these
    methods, never ``pm.hook.on_...`` by name. A failing observer is a plugin bug and says so."""

    def __init__(self, pm: pluggy.PluginManager):
        self._hook = pm.hook

    def _call(self, caller: Any, **kwargs: Any) -> None:
        try:
            caller(**kwargs)
        except Exception as exc:
            raise PluginError(f"lifecycle hook {caller.name} failed: {exc!r}") from exc

    def plan_created(self, plan: "Plan") -> None:
        self._call(self._hook.on_plan_created, plan=plan)

    def stage_started(self, stage: str, component: str) -> None:
        self._call(self._hook.on_stage_started, stage=stage, component=component)

    def stage_finished(self, stage: str, component: str, status: str, seconds: float, metrics: dict) -> None:
        self._call(self._hook.on_stage_finished, stage=stage, component=component, status=status, seconds=seconds,
                   metrics=metrics)

    def data_versioned(self, version: "Version") -> None:
        self._call(self._hook.on_data_versioned, version=version)

    def model_registered(self, version: "Version") -> None:
        self._call(self._hook.on_model_registered, version=version)

    def rollout_decided(self, decision: "Decision", strategy: str) -> None:
        self._call(self._hook.on_rollout_decided, decision=decision, strategy=strategy)

    def alert_raised(self, monitor: str, alert: str) -> None:
        self._call(self._hook.on_alert_raised, monitor=monitor, alert=alert)

    def run_finished(self, run_dir: str, summary: dict) -> None:
        self._call(self._hook.on_run_finished, run_dir=run_dir, summary=summary)


@lru_cache(maxsize=1)
def default_components() -> Components:
    """The components of every installed plugin (cached per process)."""
    return Components.collect(get_plugin_manager())
