"""The stage table: every stage of a run declared once, in run order.

The planner binds each stage's recipe section to components, the runner executes the stages in
this order (starting Ray before the first one that needs it), and the CLI shows them. A stage's
runner is named as ``module:function`` under ``framework.stages`` and imported only when the stage
runs, so planning stays cheap (no torch, no Ray).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class StageSpec:
    name: str
    #: the recipe section that configures the stage (None: the stage has no section of its own)
    recipe_key: str | None
    #: the component kind that section names with ``type:`` (None: the core does the work)
    kind: str | None
    #: the section is a list of components run in order (checks, compress, monitor)
    many: bool
    #: Ray must be running before the stage starts
    needs_ray: bool
    #: ``module:function`` under ``framework.stages``
    runner: str
    summary: str

    def load_runner(self) -> Callable[..., None]:
        module, function = self.runner.split(":")
        return getattr(importlib.import_module(f"framework.stages.{module}"), function)


STAGES: tuple[StageSpec, ...] = (
    StageSpec("data", "data", "data_source", False, False, "data:run_data", "load the table from the data source"),
    StageSpec("checks", "checks", "data_check", True, False, "data:run_checks", "data checks; a failed 'fail' check stops the run"),
    StageSpec("version", None, None, False, False, "data:run_version", "store a content-addressed data version; split it"),
    StageSpec("label", "label", "labeler", False, False, "label:run_label", "produce or change labels; store them as a label version"),
    StageSpec("features", "features", "preprocessor", False, False, "features:run_features",
              "fit imputation, encoding and scaling on the train split; it travels with the model"),
    StageSpec("train", "train", "trainer", False, True, "train:run_train", "train (and tune) a model"),
    StageSpec("compress", "compress", "compressor", True, True, "train:run_compress", "model-level compression steps"),
    StageSpec("export", "export", "exporter", False, False, "export:run_export", "export to ONNX; ONNX-level compression"),
    StageSpec("gate", None, None, False, False, "gate:run_gate", "quality gates: thresholds and champion"),
    StageSpec("register", None, None, False, False, "register:run_register", "store model versions with lineage and cards"),
    StageSpec("device", None, None, False, False, "device:run_device", "the best variant within device budgets, as a bundle"),
    StageSpec("serve", "strategy", "traffic_strategy", False, True, "serve:run_serve", "deploy on Ray Serve behind the traffic strategy"),
    StageSpec("online_eval", None, None, False, False, "serve:run_online_eval", "held-out rows over HTTP vs offline"),
    StageSpec("traffic", None, None, False, False, "traffic:run_traffic", "simulated users; the strategy's verdicts acted on"),
    StageSpec("batch", "batch", "batch_predictor", False, True, "batch:run_batch", "batch prediction"),
    StageSpec("monitor", "monitor", "monitor", True, False, "monitor:run_monitor", "profiles, drift and alerts on served traffic"),
    StageSpec("act", "actions", "action", True, False, "act:run_act",
              "the recipe's actions on the monitors' alerts: log, webhook, roll back, retrain"),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage_spec(name: str) -> StageSpec:
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"no stage '{name}'; stages: {', '.join(STAGE_NAMES)}")
