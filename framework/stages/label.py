"""The label stage: a labeler produces or changes the labels of the data version; the core stores
them as a label version (lineage: the data version, the labeler and its configuration, the Label
Studio files, the migration) and training then uses the data version with those labels.

The split stays as the version stage cut it (the same rows in train, val and test, so runs stay
comparable); rows left without a label leave their part. ``label.hide`` (a simulation) hides the
labels of some parts from the labeler; the hidden labels are what the simulated annotator answers
from, and what the stored labels are scored against (``label_accuracy_hidden``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ..artifacts import write_json
from ..components import DataSplits, Dataset, LabelSet
from ..context import RunStageContext
from ..errors import StageError
from ..labels.studio import StudioAnnotator
from ..labels.schema import schema_id
from ..plan import Labeling, Plan, PlannedStage
from ..plugins import Components
from ..registry.labels import labels_frame, labels_name
from .state import RunState

PARTS = ("train", "val", "test")


def row_parts(splits: DataSplits, index: Any) -> Any:
    import pandas as pd

    parts = pd.Series(None, index=index, dtype="object")
    for part in PARTS:
        frame = getattr(splits, part)
        parts[parts.index.isin(frame.index)] = part
    return parts


def hidden_rows(labeling: Labeling, parts: Any) -> Any:
    """The rows whose labels ``label.hide`` hides: those of its parts, less ``keep`` of them."""
    import numpy as np

    hide = labeling.hide
    if hide is None:
        return parts.index[:0]
    candidates = parts.index[parts.isin(hide.parts).to_numpy()]
    keep = int(hide.keep) if hide.keep >= 1 else int(round(hide.keep * len(candidates)))
    rng = np.random.default_rng(hide.seed)
    kept = rng.choice(len(candidates), size=min(keep, len(candidates)), replace=False) if keep else []
    return candidates.delete(sorted(kept)) if len(kept) else candidates


def run_label(plan: Plan, stage: PlannedStage, state: RunState, ctx: RunStageContext, components: Components) -> None:
    planned = stage.component
    labeling = planned.labeling or Labeling()
    dataset, splits = state.dataset, state.splits
    frame, target = dataset.frame, dataset.target
    truth = frame[target]
    parts = row_parts(splits, frame.index)
    hidden = hidden_rows(labeling, parts)
    shown = frame.copy()
    if len(hidden):
        shown[target] = shown[target].astype("object")
        shown.loc[hidden, target] = None
    ctx.parts = parts
    if labeling.annotator is not None:
        columns = [c for c in frame.columns if c != target]
        ctx.annotator = StudioAnnotator(ctx.out_dir / "label_studio", labeling.annotator.type, truth, columns,
                                        labeling.annotator.error_rate, plan.recipe.seed)
    result = planned.build().label(dataclasses.replace(dataset, frame=shown), ctx)
    labelset = _as_labelset(result, dataset, planned.type)
    labels = _checked_labels(labelset, frame.index, planned.type)

    version = _store(plan, state, planned, labeling, labelset, labels, ctx)
    state.label_version = version
    _apply(state, dataset, labelset, labels)
    _metrics(ctx, labelset, labels, truth, hidden, parts, version, state)
    flagged = _flag_models(state, labelset)
    if flagged:
        ctx.metric("models_on_old_schema", flagged)
        ctx.logger.warning("models trained on the replaced label schema (flagged in the registry): %s", ", ".join(flagged))
    write_json(ctx.out_dir / "labels_report.json", {"report": labelset.report, "lineage": labelset.lineage,
                                                    "label_version": version.ref, "queued": [str(r) for r in labelset.queued]})


def _as_labelset(result: Any, dataset: Dataset, labeler: str) -> LabelSet:
    if isinstance(result, LabelSet):
        return result
    if isinstance(result, Dataset):  # a labeler that rewrites the target column
        if result.target not in result.frame.columns:
            raise StageError(f"label ({labeler}): the returned dataset has no target column '{result.target}'")
        classes = result.classes or sorted(result.frame[result.target].dropna().unique().tolist())
        return LabelSet(labels=result.frame[result.target], classes=list(classes))
    raise StageError(f"label ({labeler}): label() returned {type(result).__name__}, not a LabelSet or a Dataset")


def _checked_labels(labelset: LabelSet, index: Any, labeler: str) -> Any:
    """The labels on the data's index, each a class (or None)."""
    import pandas as pd

    labels = labelset.labels
    if not isinstance(labels, pd.Series):
        raise StageError(f"label ({labeler}): LabelSet.labels must be a pandas Series on the data's index")
    strangers = labels.index.difference(index)
    if len(strangers):
        raise StageError(f"label ({labeler}): labels for rows {list(strangers[:5])} that are not rows of the data version")
    labels = labels.reindex(index)
    by_text = {str(c): c for c in labelset.classes}
    unknown = sorted({str(v) for v in labels.dropna()} - set(by_text))
    if unknown:
        raise StageError(f"label ({labeler}): labels {unknown[:5]} are not among its classes {list(by_text)}")
    # a list, not Series.map: map would turn int classes with gaps into floats (1 -> 1.0)
    typed = pd.Series([None if v is None or (not isinstance(v, str) and pd.isna(v)) else by_text[str(v)] for v in labels],
                      index=labels.index, dtype="object")
    if labelset.probabilities is not None and len(labelset.probabilities) != len(labelset.labels):
        raise StageError(f"label ({labeler}): {len(labelset.probabilities)} probability rows for {len(labelset.labels)} labels")
    return typed


def _store(plan: Plan, state: RunState, planned: Any, labeling: Labeling, labelset: LabelSet, labels: Any,
           ctx: RunStageContext) -> Any:
    import numpy as np

    probs = None
    if labelset.probabilities is not None:
        probs = np.full((len(labels), len(labelset.classes)), np.nan)
        positions = labels.index.get_indexer(labelset.labels.index)
        probs[positions] = np.asarray(labelset.probabilities, dtype=float)
    sources = labelset.sources.reindex(labels.index) if labelset.sources is not None else None
    frame = labels_frame(labels, labelset.classes, probs, sources)
    dataset = state.dataset
    schema = {"target": dataset.target, "classes": [str(c) for c in labelset.classes],
              "schema_id": schema_id(labelset.classes)}
    lineage = {
        "data_version": state.data_version.id if state.data_version else None,
        "data_ref": state.data_ref,
        "labeler": planned.type,
        "config": planned.describe()["config"],
        "recipe": plan.recipe.name,
        "recipe_hash": plan.recipe_hash,
        **({"labeling": labeling.describe()} if labeling.describe() else {}),
        **({"label_studio": ctx.annotator.files} if ctx.annotator is not None and ctx.annotator.files else {}),
        **labelset.lineage,
    }
    parent = labelset.lineage.get("from_labels")
    version = state.registry.put_labels(labels_name(dataset.name), frame, schema=schema, lineage=lineage,
                                        meta={"description": f"labels of {state.data_ref} by {planned.type}"},
                                        parent=parent)
    for alias in labeling.aliases:
        state.registry.set_alias("label", version.name, alias, version.id)
    return state.registry.get(f"{version.name}:{version.id}", kind="label")


def _apply(state: RunState, dataset: Dataset, labelset: LabelSet, labels: Any) -> None:
    """Training uses the data version with these labels: the target becomes them, unlabeled rows
    leave the part of the split that holds them."""
    import pandas as pd

    labeled = labels.dropna()
    frame = dataset.frame.loc[labeled.index].copy()
    values = pd.Series(list(labeled), index=labeled.index).infer_objects()
    frame[dataset.target] = values
    relabeled = dataclasses.replace(dataset, frame=frame, classes=list(labelset.classes))
    parts = {p: frame.loc[getattr(state.splits, p).index.intersection(frame.index)] for p in PARTS}
    empty = [p for p, f in parts.items() if f.empty]
    if empty:
        raise StageError(f"label: no labeled rows are left in the {', '.join(empty)} part(s) of the split; "
                         "label more rows or hide fewer (label.hide)")
    state.dataset = relabeled
    state.splits = DataSplits(dataset=relabeled, **parts)


def _metrics(ctx: RunStageContext, labelset: LabelSet, labels: Any, truth: Any, hidden: Any, parts: Any, version: Any,
             state: RunState) -> None:
    ctx.metric("label_version", version.ref)
    ctx.metric("label_schema", schema_id(labelset.classes))
    ctx.metric("labeled_rows", int(labels.notna().sum()))
    ctx.metric("unlabeled_rows", int(labels.isna().sum()))
    if len(hidden):
        ctx.metric("hidden_labels", int(len(hidden)))
        got = labels.loc[hidden].dropna()
        ctx.metric("hidden_rows_labeled", int(len(got)))
        if len(got):
            right = sum(str(a) == str(b) for a, b in zip(got, truth.loc[got.index]))
            ctx.metric("label_accuracy_hidden", right / len(got))
    if labelset.queued:
        ctx.metric("queued_rows", len(labelset.queued))
    if ctx.annotator is not None:
        ctx.metric("asked_rows", ctx.annotator.asked)
        ctx.metric("answered_rows", ctx.annotator.answered)
    for part in PARTS:
        ctx.metric(f"{part}_rows", len(getattr(state.splits, part)))
    for key, value in (labelset.report.get("metrics") or {}).items():
        ctx.metric(key, value)


def _flag_models(state: RunState, labelset: LabelSet) -> list[str]:
    """Registered models trained on the schema a migration replaced (``versions list`` flags them)."""
    migration = labelset.lineage.get("migration") or {}
    if not migration.get("from_schema"):
        return []
    return [v.ref for v in state.registry.list(kind="model")
            if (v.lineage.get("label_schema") or {}).get("id") == migration["from_schema"]]

