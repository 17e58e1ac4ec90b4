"""Training stages: train (and tune) a model, then the model-level compression steps."""
from __future__ import annotations

from typing import Any

from ..artifacts import write_json
from ..components import TrainedModel
from ..context import RunStageContext
from ..plan import Plan, PlannedStage
from ..plugins import Components
from ..registry.models import serving_manifest
from ..components import InputSchema
from .state import RunState


def run_train(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    trained = stage.component.build().fit(state.splits, ctx)
    state.trained = trained
    for key, value in trained.metrics.items():
        ctx.metric(key, value)
    write_json(ctx.out_dir / "hyperparameters.json", trained.hyperparameters)


def run_compress(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    """Model-level compression steps, in recipe order (ONNX-level ones run in the export stage)."""
    if state.trained is None:  # no training: the chain starts from a registered version (see plan)
        state.trained = registered_input(stage.components[0], state.registry)
    teacher = state.trained
    for i, planned in enumerate(stage.components):
        sub = ctx.child(ctx.out_dir / f"{i:02d}-{planned.type}")
        compressed = planned.build().compress(state.trained, state.splits, sub)
        compressed.runners_up = teacher.runners_up  # the other candidates stay as they were
        state.trained = compressed
        for key, value in sub.metrics.items():  # each step's own (prefixed) figures, in the stage's
            ctx.metric(key, value)
    # the comparison table's teacher is the trained model, not the input of the last step
    state.trained.details["teacher_metrics"] = teacher.metrics
    for key, value in state.trained.metrics.items():
        ctx.metric(key, value)


def registered_input(first: Any, registry: Any) -> TrainedModel:
    """What a chain that starts from a registered version gets as its input model: no module,
    the version's schema, classes and metrics."""
    ref = next(iter(first.cls.registry_refs(first.config).values()))
    version, manifest = serving_manifest(registry, ref)
    return TrainedModel(module=None, schema=InputSchema.from_dict(manifest["schema"]), classes=list(manifest["classes"]),
                        metrics=dict(version.metrics), hyperparameters={},
                        details={"registered": version.ref, "trainer": version.lineage.get("trainer")})
