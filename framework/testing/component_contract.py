"""What every conformance kit checks, whatever the component kind.

Each kit in :mod:`framework.testing` subclasses :class:`ComponentContract`; a plugin author
subclasses the kit of their component's kind (``DataSourceContract``, ``MonitorContract`` ...) in
a test module, names the component in one class attribute and, where the defaults do not fit,
overrides plain ``make_*`` methods. pytest collects the inherited ``test_*`` methods; the kits
themselves do not start with ``Test`` and are never collected on their own.

The shared checks:

* the class is a registered-style component: a subclass of its kind's base class with that
  ``kind`` and ``recipe_key``, a non-empty ``name``, a ``Config`` dataclass that OmegaConf can
  structure (what the planner validates a recipe section with);
* ``check_config`` has exactly the signature ``(config, key, refs=None)`` and accepts the kit's own
  config; the constructor takes ``(config, refs=...)`` as the planner calls it, runs
  ``check_config`` itself and refuses ``invalid_config()`` with a RecipeError;
* ``references`` name component kinds through ``Config`` fields, ``registry_refs`` returns
  ``NAME@ALIAS`` strings keyed by ``Config`` fields;
* the class and the kit's config survive pickling (Ray ships both to worker processes).
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import pickle
from pathlib import Path
from typing import Any, ClassVar, Mapping

import pytest

from ..components import COMPONENT_KINDS, Component
from ..errors import RecipeError

__all__ = ["ComponentContract", "assert_jsonable", "make_stage_context"]


def assert_jsonable(value: Any, what: str) -> None:
    """``value`` goes into a run directory's JSON files as it is (no ``default=str`` rescue)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise AssertionError(f"{what} is not JSON-able ({exc}): {value!r}"[:2000]) from None


def make_stage_context(out_dir: Path, stage: str, seed: int = 0) -> Any:
    """The StageContext the core hands to a component, outside a run (no registry)."""
    from ..context import RunStageContext

    return RunStageContext(stage=stage, out_dir=Path(out_dir), seed=seed)


class _ProbeError(Exception):
    """Raised by a probe's check_config: proves the constructor called it."""


class ComponentContract:
    """The checks every kind shares. A kit sets ``kind`` and ``component_attr`` (the class
    attribute a plugin author's subclass sets, e.g. ``source_cls``)."""

    #: the component kind (a key of ``framework.components.COMPONENT_KINDS``)
    kind: ClassVar[str]
    #: the class attribute naming the component under test
    component_attr: ClassVar[str]

    # -- what the subclass provides --------------------------------------------------------
    @property
    def component_cls(self) -> type[Component]:
        try:
            return getattr(type(self), self.component_attr)
        except AttributeError:
            raise AssertionError(f"{type(self).__name__} must set `{self.component_attr}` to the class under test") from None

    def make_config(self) -> Any:
        """The config the kit builds the component with (default: ``Config()``)."""
        return self.component_cls.Config()

    def make_refs(self) -> dict[str, type]:
        """The classes the config names through ``references`` (default: looked up among the
        installed plugins, as the planner does)."""
        references = self.component_cls.references
        if not references:
            return {}
        from ..plugins import default_components

        config = self.make_config()
        components = default_components()
        return {field: components.get(kind, str(getattr(config, field)), where=f"{self.recipe_key}.{field}").cls
                for field, kind in references.items()}

    def invalid_config(self) -> Any:
        """A config the constructor must refuse with a RecipeError (None: skip that test)."""
        return None

    # -- helpers ---------------------------------------------------------------------------
    @property
    def base_cls(self) -> type[Component]:
        return COMPONENT_KINDS[self.kind][0]

    @property
    def recipe_key(self) -> str:
        return self.base_cls.recipe_key

    def new_component(self, config: Any = None) -> Any:
        """The component built from ``config`` (default: ``make_config()``). Refs are passed only
        when there are some, so a constructor that forgot ``refs`` fails one test, not all."""
        config = self.make_config() if config is None else config
        refs = self.make_refs()
        return self.component_cls(config, refs=refs) if refs else self.component_cls(config)

    def make_context(self, tmp_path: Path, stage: str | None = None) -> Any:
        return make_stage_context(Path(tmp_path) / (stage or self.kind), stage or self.recipe_key)

    # -- the shared tests ------------------------------------------------------------------
    def test_is_a_registered_style_component(self):
        cls = self.component_cls
        assert issubclass(cls, self.base_cls), f"{cls.__name__} is not a {self.base_cls.__name__} subclass"
        assert cls.kind == self.kind, f"{cls.__name__}.kind is {cls.kind!r}, not {self.kind!r}"
        assert cls.recipe_key == self.recipe_key, f"{cls.__name__}.recipe_key changed to {cls.recipe_key!r}"
        assert isinstance(cls.name, str) and cls.name.strip(), f"{cls.__name__} needs a `name` (the recipe's type)"
        assert isinstance(cls.summary, str), "`summary` is one line of text for `python -m framework plugins`"
        assert dataclasses.is_dataclass(cls.Config) and isinstance(cls.Config, type), "`Config` must be a dataclass"

    def test_config_is_omegaconf_structured(self):
        from omegaconf import OmegaConf

        from ..plan import validate_component_config

        cls = self.component_cls
        assert isinstance(OmegaConf.to_object(OmegaConf.structured(cls.Config)), cls.Config)
        config = self.make_config()
        assert isinstance(config, cls.Config), f"make_config() returned a {type(config).__name__}, not {cls.__name__}.Config"
        # the kit's config written as recipe options goes through the planner's validation, and
        # what comes out is stable (a dict field merges into its default, as in a recipe)
        options = OmegaConf.to_container(OmegaConf.structured(config))
        validated = validate_component_config(cls, options, self.recipe_key)
        assert isinstance(validated, cls.Config)
        again = OmegaConf.to_container(OmegaConf.structured(validated))
        assert validate_component_config(cls, again, self.recipe_key) == validated

    def test_check_config_signature_is_config_key_refs(self):
        # the planner calls check_config(config, key, refs) on every component: one signature
        check = self.component_cls.check_config
        params = list(inspect.signature(check).parameters.values())
        assert [p.name for p in params] == ["config", "key", "refs"], (
            f"{self.component_cls.__name__}.check_config{inspect.signature(check)}: expected (config, key, refs=None)"
        )
        assert params[0].default is params[1].default is inspect.Parameter.empty
        assert params[2].default is None
        assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params)
        assert isinstance(inspect.getattr_static(self.component_cls, "check_config"), classmethod), \
            "check_config must be a classmethod: the planner calls it before any component exists"

    def test_kit_config_passes_check_config(self):
        assert self.component_cls.check_config(self.make_config(), self.recipe_key, self.make_refs()) is None

    def test_constructor_takes_config_and_refs(self):
        # exactly how the planner builds a component: PlannedComponent.build
        component = self.component_cls(self.make_config(), refs=self.make_refs())
        assert component.config == self.make_config()

    def test_constructor_validates_its_config(self):
        def refuse(cls, config, key, refs=None):
            raise _ProbeError(key)

        probe = type(f"Probe{self.component_cls.__name__}", (self.component_cls,), {"check_config": classmethod(refuse)})
        with pytest.raises(_ProbeError):
            refs = self.make_refs()
            probe(self.make_config(), refs=refs) if refs else probe(self.make_config())
        invalid = self.invalid_config()
        if invalid is None:
            pytest.skip(f"{type(self).__name__} provides no invalid_config()")
        with pytest.raises(RecipeError):
            self.new_component(invalid)

    def test_references_and_registry_refs_name_config_fields(self):
        cls = self.component_cls
        fields = {f.name for f in dataclasses.fields(cls.Config)}
        for field, kind in cls.references.items():
            assert field in fields, f"references names '{field}', which is not a field of {cls.__name__}.Config"
            assert kind in COMPONENT_KINDS, f"references['{field}'] = {kind!r} is not a component kind"
        refs = cls.registry_refs(self.make_config())
        assert isinstance(refs, Mapping)
        for field, ref in refs.items():
            # a field, or a path into one (``functions[2].ref``: a model a list entry names)
            assert field.split("[")[0].split(".")[0] in fields, \
                f"registry_refs names '{field}', which is not a field of {cls.__name__}.Config"
            assert isinstance(ref, str) and ("@" in ref or ":" in ref), f"registry_refs['{field}'] = {ref!r}: not NAME@ALIAS"

    def test_class_and_config_pickle(self):
        assert pickle.loads(pickle.dumps(self.component_cls)) is self.component_cls
        config = self.make_config()
        assert pickle.loads(pickle.dumps(config)) == config
