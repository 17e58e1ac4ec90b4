"""Labeler ``schema_migration``: the classes change after a model is deployed.

The current labels (a stored label version, ``from_labels``, or the data's own) move to the new
schema the recipe declares (``framework.labels.schema``): merged classes are relabeled at once,
rows of a split class are queued for people and only those, removed classes lose their rows'
labels, added classes start empty. The queue is ordered by active learning (margin, optionally
diverse) on the rows already relabeled, and asked in batches through ``label.annotator`` (Label
Studio files); ``budget`` bounds how many rows are asked. The label version records the migration
(old and new schema ids, the comparison mapping), which flags models trained on the old schema in
the registry, and says how old and new models compare (``serve.label_mapping``).

```yaml
label:
  type: schema_migration
  from_labels: seattle_weather.labels@coarse
  migration: {split: {wet: [rain, drizzle]}}
  annotator: {type: simulated}
```
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from framework import LabelSet, Labeler, hookimpl
from framework.errors import RecipeError
from framework.labels import LabelSchema, Migration
from framework.labels.active import UNCERTAINTY


class SchemaMigration(Labeler):
    name = "schema_migration"
    summary = "label schema migration: add, remove, merge (relabeled) and split (queued for people) classes"

    @dataclass
    class Config:
        #: {add: [...], remove: [...], merge: {NEW: [OLD, ...]}, split: {OLD: [NEW, ...]}}
        migration: Dict[str, Any] = field(default_factory=dict)
        #: the current labels: a stored label version (NAME@latest, NAME:ID); None: the data's own
        from_labels: Optional[str] = None
        #: how the queue is ordered: entropy | margin | least_confidence
        strategy: str = "margin"
        diverse: bool = False
        batch_size: int = 50
        #: at most this many queued rows are asked (None: all of them)
        budget: Optional[int] = None

    @classmethod
    def check_config(cls, config, key, refs=None):
        Migration.parse(config.migration, f"{key}.migration")
        if config.strategy not in UNCERTAINTY:
            raise RecipeError(f"{key}.strategy: one of {', '.join(UNCERTAINTY)}, got '{config.strategy}'")
        if config.batch_size < 1:
            raise RecipeError(f"{key}.batch_size: must be >= 1, got {config.batch_size}")
        if config.budget is not None and config.budget < 0:
            raise RecipeError(f"{key}.budget: must be >= 0, got {config.budget}")

    def label(self, dataset, ctx):
        import math

        import numpy as np
        import pandas as pd

        from framework.labels.active import Loop

        migration = Migration.parse(self.config.migration, "label.migration")
        frame = dataset.frame
        if self.config.from_labels:
            stored = ctx.registered_labels(self.config.from_labels)
            old_classes = list(stored.schema.get("classes") or [])
            current = stored.frame["label"].reindex(frame.index)
        else:
            old_classes = [str(c) for c in dataset.classes or []]
            current = frame[dataset.target].astype("object").map(lambda v: None if pd.isna(v) else str(v))
        migration.check_classes(old_classes, "label.migration")
        new_classes = migration.new_classes(old_classes)
        labels, queued, counts = migration.apply(current)
        sources = pd.Series(np.where(labels.notna(), "kept", None), index=frame.index, dtype="object")
        merged_rows = current.isin([str(o) for olds in migration.merge.values() for o in olds])
        sources[merged_rows.to_numpy()] = "migration"

        annotator = getattr(ctx, "annotator", None)
        budget = len(queued) if self.config.budget is None else min(self.config.budget, len(queued))
        answered = 0
        if annotator is not None and budget:
            x = frame.loc[queued, list(dataset.features)].to_numpy(dtype=float)
            index = {c: i for i, c in enumerate(new_classes)}
            batches = math.ceil(budget / self.config.batch_size)
            if annotator.mode != "simulated":
                batches = 1
            loop = Loop(x, len(new_classes), self.config.strategy, self.config.batch_size, self.config.diverse,
                        seed=ctx.seed)

            def ask(positions):
                positions = positions[:budget - len(loop.labels)]
                probs = loop.learner().predict_proba(x[positions]) if loop.labels else None
                answers = annotator.ask(frame, list(queued[positions]), new_classes, probs, tag="relabel")
                return {p: index[answers[queued[p]]] for p in positions if queued[p] in answers}

            loop.run(batches, ask)
            for p, c in loop.labels.items():
                labels[queued[p]] = new_classes[c]
                sources[queued[p]] = "annotator"
            answered = len(loop.labels)
        old_schema, new_schema = LabelSchema(old_classes), LabelSchema(new_classes)
        comparison = migration.comparison()
        summary = ", ".join(f"{k} {v}" for k, v in migration.describe().items())
        report = {"counts": counts, "old_schema": old_schema.describe(), "new_schema": new_schema.describe(),
                  "metrics": {"queued_for_relabeling": counts["queued"], "queued_share": counts["queued"] / max(1, len(frame)),
                              "relabeled_by_people": answered, "relabeled_automatically": int(sum(counts["merged"].values()))}}
        ctx.logger.info("label schema %s -> %s (%s): %d of %d rows queued for relabeling, %d answered",
                        old_schema.id, new_schema.id, summary, counts["queued"], len(frame), answered)
        still_queued = [r for r in queued if labels[r] is None]
        return LabelSet(labels=labels, classes=new_classes, sources=sources, report=report, queued=still_queued,
                        comparison=comparison,
                        lineage={"migration": {"from_schema": old_schema.id, "to_schema": new_schema.id,
                                               "declared": migration.describe(), "summary": summary,
                                               "comparison": comparison, "counts": counts},
                                 **({"from_labels": self.config.from_labels} if self.config.from_labels else {})})


@hookimpl
def register_labelers():
    return [SchemaMigration]
