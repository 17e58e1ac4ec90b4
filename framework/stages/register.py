"""The register stage: every exported model stored as a version with its lineage and model card."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..artifacts import code_revision
from ..components import ExportedModel, TrainedModel
from ..context import RunStageContext
from ..errors import StageError
from ..evaluation import onnx_session
from ..labels import LabelSchema
from ..plan import Plan, PlannedStage
from ..plugins import Components
from ..registry.models import MODEL_FILE, SERVING_MANIFEST
from ..registry.versions import RECIPE_FILE
from .data import window_lineage
from .state import RunState, trainer_label


def run_register(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    # runners-up and intermediate compression variants first, so the served model is the newest
    for rank in sorted(state.exports, reverse=True):
        if rank == 1:
            for step, variant in enumerate(state.variants[:-1]):
                version = register_export(plan, state, variant["exported"], state.trained, components,
                                          {"candidate_rank": 1, "variant": variant["name"], "compression_step": step}, [])
                variant["version"] = version.ref
        chain = [v["name"] for v in state.variants] if rank == 1 else []
        state.model_versions[rank] = register_export(
            plan, state, state.exports[rank], state.candidate(rank, "register"), components,
            {"candidate_rank": rank, **({"compression_chain": chain} if len(chain) > 1 else {})},
            list(plan.recipe.register.aliases) if rank == 1 else [],
            # the compression comparison travels with the served version
            {"variants.json": json.dumps(state.variant_table, default=str).encode()} if rank == 1 and state.variant_table else None,
        )
    state.model_version = state.model_versions[1]
    ctx.metric("model_version", state.model_version.ref)
    ctx.metric("aliases", ",".join(state.model_version.aliases))
    if len(state.model_versions) > 1:
        ctx.metric("candidates", {f"this_run#{r}": v.ref for r, v in sorted(state.model_versions.items())})


def register_export(plan: Plan, state: RunState, exported: ExportedModel, trained: TrainedModel, components: Components,
                    lineage_extra: dict, aliases: list[str], extra_files: dict[str, bytes] | None = None) -> Any:
    """Store one exported model as a version (reusing an identical one) with its lineage."""
    from ..explain import training_means
    from ..model_card import render_markdown

    manifest = {
        "format": exported.format,
        "input_name": exported.input_name,
        "output_name": exported.output_name,
        "classes": list(exported.classes),
        "schema": exported.schema.to_dict(),
    }
    transform = state.splits.features
    if exported.inputs is not None and transform is not None:
        # typed raw rows: the feeds every layer builds, and an average case in raw space
        manifest["inputs"] = exported.inputs.to_dict()
        manifest["baseline"] = list(transform.baseline)
    else:
        x_train, _ = state.splits.arrays("train")
        manifest["baseline"] = training_means(x_train)  # for explain: true (occlusion against an average case)
    if exported.task != "classification":
        manifest["task"] = exported.task
    onnx_bytes = Path(exported.path).read_bytes()
    card = model_card(plan, state, exported, onnx_bytes, {**trained.metrics, **exported.metrics}, trained)
    files = {
        MODEL_FILE: onnx_bytes,
        # what made the model, diffed by `versions diff`; lineage: the version id does not cover it
        RECIPE_FILE: recipe_yaml(plan),
        SERVING_MANIFEST: json.dumps(manifest, sort_keys=True).encode(),
        "model_card.json": json.dumps(card, sort_keys=True, default=str).encode(),
        "model_card.md": render_markdown(card).encode(),
        **(extra_files or {}),
    }
    lineage = {
        "recipe": plan.recipe.name,
        "recipe_hash": plan.recipe_hash,
        "data_version": state.data_version.id if state.data_version else None,
        "code_revision": code_revision(),
        "trainer": trainer_label(plan),
        "hyperparameters": trained.hyperparameters,
        "seed": plan.recipe.seed,
        **({"data_window": window} if (window := window_lineage(plan, state)) else {}),
        # which classes it predicts: a label schema migration flags the models of the old one
        **({"label_schema": LabelSchema(list(exported.classes)).describe()} if exported.classes else {}),
        **({"label_version": state.label_version.id} if state.label_version is not None else {}),
        **lineage_extra,
    }
    registry = state.registry
    name = plan.recipe.register.model_name
    # the recipe file is lineage: the same model from an equivalent recipe is the same version
    hashes = {f: hashlib.sha256(b).hexdigest() for f, b in files.items() if f != RECIPE_FILE}
    existing = next((v for v in registry.list(kind="model", name=name)
                     if {f: h for f, h in v.files.items() if f != RECIPE_FILE} == hashes), None)
    if existing is not None:  # an identical re-run reuses its version
        version = existing
    else:
        previous = registry.list(kind="model", name=name)
        parent = previous[0].id if previous else None
        version = registry.put_model(name, files=files, metrics={**trained.metrics, **exported.metrics},
                                     lineage=lineage, parent=parent)
    for alias in aliases:
        registry.set_alias("model", name, alias, version.id)
    version = registry.get(f"{name}:{version.id}")
    components.hooks.model_registered(version)
    return version


def recipe_yaml(plan: Plan) -> bytes:
    """The resolved recipe as YAML (plain data: safe_dump, read back with safe_load)."""
    import yaml

    return yaml.safe_dump(json.loads(json.dumps(plan.resolved, default=str)), sort_keys=True).encode()


def model_card(plan: Plan, state: RunState, exported: ExportedModel, onnx_bytes: bytes, metrics: dict, trained: TrainedModel) -> dict:
    """The card of one version: measured overall and per declared slice on the test split, what
    the model relies on most (permutation importance), and the recipe's intended use and limits."""
    from ..explain import permutation_importance
    from ..model_card import build_model_card, slice_metrics

    from ..explain import negative_squared_error, permutation_importance_frame

    card_cfg = plan.recipe.register.card
    session = onnx_session(onnx_bytes)
    layout = exported.layout
    regression = exported.task == "regression"

    def probabilities(x: Any) -> Any:
        return session.run([exported.output_name], {exported.input_name: x.astype("float32")})[0]

    def outputs_of(frame: Any) -> Any:
        return session.run([exported.output_name], layout.feeds(frame))[0]

    dataset = state.splits.dataset
    typed = exported.inputs is not None
    score = {"score": negative_squared_error} if regression else {}
    try:
        slices = slice_metrics(outputs_of if typed else probabilities, state.splits.test, dataset.features,
                               dataset.target, list(exported.classes), dict(card_cfg.slices),
                               rows_of=(lambda part: part) if typed else None, task=exported.task)
    except ValueError as exc:
        raise StageError(f"register.card.slices: {exc}") from None
    if typed:  # shuffled in raw space: a category is one feature, not its one-hot columns
        y_test = _test_targets(state.splits, regression)
        importance = permutation_importance_frame(outputs_of, state.splits.test, y_test, exported.schema.names,
                                                  seed=plan.recipe.seed, **score)
    else:
        x_test, y_test = state.splits.arrays("test")
        importance = permutation_importance(probabilities, x_test, y_test, exported.schema.names, seed=plan.recipe.seed,
                                            **score)
    measured = _card_metrics(metrics, regression)
    card = build_model_card(
        f"{plan.recipe.register.model_name} (this version)",
        state.data_ref,
        measured,
        slices,
        importance,
        card_cfg.intended_use or "Not stated: the recipe has no register.card.intended_use.",
        list(card_cfg.limitations),
        {"target": dataset.target, "classes": list(exported.classes), "trainer": trainer_label(plan),
         **({"task": exported.task} if exported.task != "classification" else {}),
         "hyperparameters": trained.hyperparameters, "features": len(dataset.features),
         "rows": {"train": len(state.splits.train), "val": len(state.splits.val), "test": len(state.splits.test)},
         **({"privacy": trained.details["privacy"]} if trained.details.get("privacy") else {})},
    )
    if regression:
        card["explanations"] = {"method": "occlusion with a training average case",
                                "meaning": "how much this feature's value moved the predicted number, compared with an "
                                           "average case (the feature set to its training mean or most frequent value)"}
    return card


def _test_targets(splits: Any, regression: bool) -> Any:
    """The test split's targets: a regression's values, or class indices."""
    import numpy as np

    frame, dataset = splits.test, splits.dataset
    if regression:
        return frame[dataset.target].to_numpy(dtype=np.float64)
    index = {c: i for i, c in enumerate(dataset.classes or [])}
    return np.asarray([index[v] for v in frame[dataset.target]], dtype=np.int64)


def _card_metrics(metrics: dict, regression: bool) -> dict:
    """The card's figures: the run's, plus a regression's test mse / mae / r2 under their plain
    names (what the page's headline reads)."""
    if not regression:
        return metrics
    return {**metrics, **{k: metrics[f"test_{k}"] for k in ("mse", "mae", "r2") if f"test_{k}" in metrics}}
