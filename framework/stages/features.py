"""The features stage: preprocessing fitted on the train split only, handed to the trainer (through
``DataSplits.arrays``) and to the exporter (which puts its ONNX graph in front of the model's)."""
from __future__ import annotations

from ..artifacts import write_json
from ..components import FeatureTransform
from ..context import RunStageContext
from ..errors import PluginError
from ..plan import Plan, PlannedStage
from ..plugins import Components
from .state import RunState


def run_features(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    planned = stage.component
    transform = planned.build().fit(state.splits, ctx)
    if transform is not None and not isinstance(transform, FeatureTransform):
        raise PluginError(f"features ({planned.type}, plugin {planned.plugin}): fit() returned a "
                          f"{type(transform).__name__}, not a FeatureTransform or None")
    state.splits.features = transform
    if transform is None:
        ctx.metric("preprocessing", "none: every feature is a number that is never missing")
        return
    schema = transform.schema
    ctx.metric("features", len(schema.features))
    ctx.metric("encoded_columns", len(transform.output_names))
    ctx.metric("categorical", sum(f.dtype == "category" for f in schema.features))
    ctx.metric("nullable", sum(bool(f.nullable) for f in schema.features))
    write_json(ctx.out_dir / "features.json", {
        "schema": schema.to_dict(),
        "inputs": transform.layout.to_dict(),
        "encoded_columns": list(transform.output_names),
        "baseline": list(transform.baseline),
    })
