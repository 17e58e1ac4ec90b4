"""Batch prediction: the exported model scores a table with the recipe's batch predictor."""
from __future__ import annotations

from ..context import RunStageContext
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_batch(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    predictions = stage.component.build().predict(state.exported, state.splits.test, ctx)
    ctx.metric("rows", len(predictions))
