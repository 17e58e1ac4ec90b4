"""Every hook a plugin may implement, grouped by stage.

Two kinds, as in pytest and datasette:

* **registration hooks** (``register_*``) return a list of component classes; the core keeps one
  typed registry per kind and fails at start-up on a duplicate name, naming both plugins;
* **lifecycle hooks** (``on_*``) observe the run; their return value is ignored.

A plugin is a module (or object) with functions named like these, decorated with
``framework.hookimpl``, and listed under the ``framework`` entry-point group.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:  # annotations only: importing the hookspecs stays free
    from .components import (Action, BatchPredictor, Compressor, DataCheck, DataSource, Decision, Exporter, Labeler, Model,
                             Monitor, Preprocessor, Trainer, TrafficStrategy)
    from .plan import Plan
    from .registry import Version

PROJECT = "framework"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------
@hookspec
def recipe_search_paths() -> list[str]:
    """Folders of ``NAME.yaml`` recipes this plugin ships; ``+recipe=NAME`` looks in them."""


# ---------------------------------------------------------------------------------------------
# Data: sources and checks
# ---------------------------------------------------------------------------------------------
@hookspec
def register_data_sources() -> list[type[DataSource]]:
    """Return :class:`framework.components.DataSource` subclasses (recipe key ``data``)."""


@hookspec
def register_data_checks() -> list[type[DataCheck]]:
    """Return :class:`framework.components.DataCheck` subclasses (recipe list ``checks``)."""


# ---------------------------------------------------------------------------------------------
# Versioning
# ---------------------------------------------------------------------------------------------
@hookspec
def on_data_versioned(version: Version) -> None:
    """A data snapshot was stored as a content-addressed version (a ``registry.Version``)."""


@hookspec
def on_model_registered(version: Version) -> None:
    """A model was stored as a version with its lineage (a ``registry.Version``)."""


# ---------------------------------------------------------------------------------------------
# Labeling
# ---------------------------------------------------------------------------------------------
@hookspec
def register_labelers() -> list[type[Labeler]]:
    """Return :class:`framework.components.Labeler` subclasses (recipe key ``label``)."""


# ---------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------
@hookspec
def register_preprocessors() -> list[type[Preprocessor]]:
    """Return :class:`framework.components.Preprocessor` subclasses (recipe key ``features``)."""


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
@hookspec
def register_models() -> list[type[Model]]:
    """Return :class:`framework.components.Model` subclasses (recipe key ``train.model``)."""


@hookspec
def register_trainers() -> list[type[Trainer]]:
    """Return :class:`framework.components.Trainer` subclasses (recipe key ``train``)."""


# ---------------------------------------------------------------------------------------------
# Compression and export
# ---------------------------------------------------------------------------------------------
@hookspec
def register_compressors() -> list[type[Compressor]]:
    """Return :class:`framework.components.Compressor` subclasses (recipe list ``compress``)."""


@hookspec
def register_exporters() -> list[type[Exporter]]:
    """Return :class:`framework.components.Exporter` subclasses (recipe key ``export``)."""


# ---------------------------------------------------------------------------------------------
# Serving and traffic
# ---------------------------------------------------------------------------------------------
@hookspec
def register_traffic_strategies() -> list[type[TrafficStrategy]]:
    """Return :class:`framework.components.TrafficStrategy` subclasses (recipe key ``strategy``)."""


@hookspec
def on_rollout_decided(decision: Decision, strategy: str) -> None:
    """A traffic strategy promoted, rolled back or held (a ``components.Decision``)."""


# ---------------------------------------------------------------------------------------------
# Batch prediction
# ---------------------------------------------------------------------------------------------
@hookspec
def register_batch_predictors() -> list[type[BatchPredictor]]:
    """Return :class:`framework.components.BatchPredictor` subclasses (recipe key ``batch``)."""


# ---------------------------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------------------------
@hookspec
def register_monitors() -> list[type[Monitor]]:
    """Return :class:`framework.components.Monitor` subclasses (recipe list ``monitor``)."""


@hookspec
def on_alert_raised(monitor: str, alert: str) -> None:
    """A monitor raised an alert (drift, accuracy drop, SLO breach)."""


# ---------------------------------------------------------------------------------------------
# Actions
# ---------------------------------------------------------------------------------------------
@hookspec
def register_actions() -> list[type[Action]]:
    """Return :class:`framework.components.Action` subclasses (recipe list ``actions``): what is
    done when a monitor alerts (log, webhook, roll back, retrain)."""


# ---------------------------------------------------------------------------------------------
# Run lifecycle
# ---------------------------------------------------------------------------------------------
@hookspec
def on_plan_created(plan: Plan) -> None:
    """The recipe validated into a ``plan.Plan``; nothing heavy has started yet."""


@hookspec
def on_stage_started(stage: str, component: str) -> None:
    """A stage is about to run the named component."""


@hookspec
def on_stage_finished(stage: str, component: str, status: str, seconds: float, metrics: dict) -> None:
    """A stage ended; ``status`` is ``ok``, ``failed`` or ``skipped``."""


@hookspec
def on_run_finished(run_dir: str, summary: dict) -> None:
    """The run wrote ``summary.json`` into ``run_dir``."""
