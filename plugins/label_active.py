"""Labeler ``active_learning``: people label the rows the current model is least sure about.

Starting from the labels the train rows have (``label.hide.keep`` of them in a simulation, or a
stored label version: ``from_labels``), each batch is chosen by uncertainty (entropy, margin,
least confidence; ``diverse: true`` spreads a batch over clusters) among the unlabeled train
rows, exported as Label Studio tasks with the model's predictions as pre-annotations, and
answered through the recipe's ``label.annotator``: ``simulated`` answers from the hidden true
labels (real task and export JSON files in the stage folder), ``files`` writes the first batch
for people and stops (``python -m framework labels import`` brings their export back).

After every batch the learning curve gets a point: the scoring model's accuracy on the val rows
(their labels are never hidden). ``compare_random: true`` runs random batches of the same size
from the same start beside it, so the two curves can be compared; only the chosen strategy's
labels are kept.

```yaml
label:
  type: active_learning
  strategy: margin
  diverse: true
  batch_size: 20
  batches: 8
  hide: {keep: 20}                 # a simulation: 20 train labels known at the start
  annotator: {type: simulated}
```
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from framework import LabelSet, Labeler, hookimpl
from framework.errors import RecipeError, StageError
from framework.labels.active import STRATEGIES


class ActiveLearning(Labeler):
    name = "active_learning"
    summary = "uncertainty sampling (entropy, margin, least confidence; diversity-aware) in batches through Label Studio files"

    @dataclass
    class Config:
        #: entropy | margin | least_confidence | random
        strategy: str = "margin"
        #: pick each batch across clusters of the most uncertain rows
        diverse: bool = False
        #: diverse: cluster the diversity_pool x batch_size most uncertain rows
        diversity_pool: int = 5
        batch_size: int = 20
        batches: int = 5
        #: also run random batches of the same size from the same start (the learning-curve baseline)
        compare_random: bool = True
        #: start from a stored label version (NAME@latest, NAME:ID) instead of the data's own labels
        from_labels: Optional[str] = None

    @classmethod
    def check_config(cls, config, key, refs=None):
        if config.strategy not in STRATEGIES:
            raise RecipeError(f"{key}.strategy: one of {', '.join(STRATEGIES)}, got '{config.strategy}'")
        for name in ("batch_size", "batches", "diversity_pool"):
            if getattr(config, name) < 1:
                raise RecipeError(f"{key}.{name}: must be >= 1, got {getattr(config, name)}")

    def label(self, dataset, ctx):
        import numpy as np
        import pandas as pd

        from framework.labels.active import Loop, uncertainty

        classes = list(dataset.classes or [])
        frame, target = dataset.frame, dataset.target
        labels = frame[target].astype("object").where(frame[target].notna(), None)
        sources = pd.Series(np.where(labels.notna(), "gold", None), index=frame.index, dtype="object")
        if self.config.from_labels:
            stored = ctx.registered_labels(self.config.from_labels)
            kept = stored.frame["label"].reindex(frame.index)
            by_text = {str(c): c for c in classes}
            for row, value in kept.dropna().items():
                labels[row] = by_text.get(str(value), value)
                sources[row] = "stored"
        annotator = getattr(ctx, "annotator", None)
        if annotator is None:
            raise StageError("label (active_learning): asks people, but the recipe has no label.annotator; "
                             "add label.annotator: {type: simulated} (a simulation) or {type: files}")
        parts = getattr(ctx, "parts", None)
        in_train = (parts == "train").to_numpy() if parts is not None else np.ones(len(frame), dtype=bool)
        train_rows = frame.index[in_train]
        val_rows = frame.index[(parts == "val").to_numpy() & labels.notna().to_numpy()] if parts is not None else frame.index[:0]
        features = list(dataset.features)
        x = frame.loc[train_rows, features].to_numpy(dtype=float)
        index = {c: i for i, c in enumerate(classes)}
        start = {p: index[labels[r]] for p, r in enumerate(train_rows) if labels[r] is not None}
        if not start:
            raise StageError("label (active_learning): no train row has a label to start from; keep some "
                             "(label.hide.keep) or start from a stored label version (from_labels)")
        x_val = frame.loc[val_rows, features].to_numpy(dtype=float)
        y_val = np.asarray([index[labels[r]] for r in val_rows])
        evaluate = (lambda learner: learner.accuracy(x_val, y_val)) if len(val_rows) else None
        batches = self.config.batches if annotator.mode == "simulated" else 1  # files: one batch, then people

        def run(strategy, diverse, tag):
            loop = Loop(x, len(classes), strategy, self.config.batch_size, diverse, self.config.diversity_pool,
                        ctx.seed, labels=dict(start))

            def ask(positions):
                probs = loop.learner().predict_proba(x[positions])
                scores = uncertainty(probs, strategy) if strategy != "random" else None
                answers = annotator.ask(frame, list(train_rows[positions]), classes, probs, tag=tag, scores=scores)
                return {p: index[answers[train_rows[p]]] for p in positions if train_rows[p] in answers}

            rounds = loop.run(batches, ask, evaluate)
            return loop, rounds

        loop, rounds = run(self.config.strategy, self.config.diverse, self.config.strategy + ("-diverse" if self.config.diverse else ""))
        acquired = [p for r in rounds for p in r.picked if p in loop.labels and p not in start]
        for p in acquired:
            labels[train_rows[p]] = classes[loop.labels[p]]
            sources[train_rows[p]] = "annotator"
        queued = [train_rows[p] for r in rounds for p in r.picked if p not in loop.labels]
        report = {"curve": [{"batch": r.batch, "labeled": r.labeled, "val_accuracy": r.accuracy} for r in rounds]}
        metrics = {"start_labels": len(start), "acquired_labels": len(acquired)}
        if rounds and rounds[-1].accuracy is not None:
            metrics["val_accuracy_" + self.config.strategy] = rounds[-1].accuracy
        if self.config.compare_random and self.config.strategy != "random" and annotator.mode == "simulated":
            _, random_rounds = run("random", False, "random")
            report["random_curve"] = [{"batch": r.batch, "labeled": r.labeled, "val_accuracy": r.accuracy} for r in random_rounds]
            if random_rounds and random_rounds[-1].accuracy is not None:
                metrics["val_accuracy_random"] = random_rounds[-1].accuracy
        report["metrics"] = metrics
        return LabelSet(labels=labels, classes=classes, sources=sources, report=report, queued=queued,
                        lineage={"active_learning": {"strategy": self.config.strategy, "diverse": self.config.diverse,
                                                     "batch_size": self.config.batch_size, "batches": batches},
                                 **({"from_labels": self.config.from_labels} if self.config.from_labels else {})})


@hookimpl
def register_labelers():
    return [ActiveLearning]
