"""Label schemas and their migrations.

A label schema is the list of classes a model predicts; its id is a hash of those classes
(order-free), so two models are on the same schema exactly when they predict the same classes.

A migration is declared as a mapping (recipe data, nothing evaluated)::

    add: [hail]                       # a new class; no existing row is moved into it
    remove: [fog]                     # rows of a removed class lose their label (out of training)
    merge: {wet: [rain, drizzle]}     # NEW: [OLD, ...]; rows are relabeled automatically
    split: {wet: [rain, drizzle]}     # OLD: [NEW, ...]; rows of OLD are queued for people

The comparison mapping says how predictions of the two schemas are judged against each other
(a canary of an old-schema model against a new-schema one): every class goes to the coarser
side: a split's new classes to the old class, a merge's old classes to the new one.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ..errors import RecipeError

MIGRATION_KEYS = ("add", "remove", "merge", "split")


def schema_id(classes: Sequence[Any]) -> str:
    """12 hex characters naming the set of classes (order-free)."""
    blob = json.dumps(sorted(str(c) for c in classes)).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


@dataclass
class LabelSchema:
    classes: list
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or schema_id(self.classes)

    def describe(self) -> dict:
        return {"id": self.id, "classes": [str(c) for c in self.classes]}


@dataclass
class Migration:
    """A validated migration; :meth:`apply` moves labels from the old schema to the new one."""

    add: list = field(default_factory=list)
    remove: list = field(default_factory=list)
    merge: dict = field(default_factory=dict)  # new class -> [old classes]
    split: dict = field(default_factory=dict)  # old class -> [new classes]

    @classmethod
    def parse(cls, raw: Mapping, key: str) -> "Migration":
        """Plan-time checks that need no data: shapes, names, a class moved twice."""
        if not isinstance(raw, Mapping) or not raw:
            raise RecipeError(f"{key}: give at least one of {', '.join(MIGRATION_KEYS)}, e.g. split: {{wet: [rain, drizzle]}}")
        unknown = sorted(set(raw) - set(MIGRATION_KEYS))
        if unknown:
            raise RecipeError(f"{key}.{unknown[0]}: unknown key; use {', '.join(MIGRATION_KEYS)}")
        out = cls()
        for name in ("add", "remove"):
            values = raw.get(name) or []
            if not isinstance(values, (list, tuple)) or not all(isinstance(v, (str, int)) for v in values):
                raise RecipeError(f"{key}.{name}: a list of class names, got {values!r}")
            setattr(out, name, list(values))
        for name in ("merge", "split"):
            mapping = raw.get(name) or {}
            if not isinstance(mapping, Mapping):
                raise RecipeError(f"{key}.{name}: a mapping of class -> [classes], got {mapping!r}")
            for k, v in mapping.items():
                if not isinstance(v, (list, tuple)) or len(v) < (1 if name == "merge" else 2) or \
                        not all(isinstance(c, (str, int)) for c in v):
                    need = "one or more old classes" if name == "merge" else "two or more new classes"
                    raise RecipeError(f"{key}.{name}.{k}: {need}, got {v!r}")
            getattr(out, name).update({k: list(v) for k, v in mapping.items()})
        moved = [c for group in out.merge.values() for c in group] + list(out.split) + list(out.remove)
        twice = sorted({str(c) for c in moved if moved.count(c) > 1})
        if twice:
            raise RecipeError(f"{key}: class(es) {', '.join(twice)} are merged, split or removed more than once")
        return out

    def check_classes(self, classes: Sequence[Any], where: str) -> None:
        """The old classes the migration names exist; the new ones do not clash."""
        known = {str(c) for c in classes}
        for name, names in (("remove", self.remove), ("merge", [c for g in self.merge.values() for c in g]),
                            ("split", list(self.split))):
            missing = [str(c) for c in names if str(c) not in known]
            if missing:
                raise RecipeError(f"{where}.{name}: {', '.join(missing)} not among the current classes "
                                  f"({', '.join(sorted(known))})")
        clash = [str(c) for c in self.add if str(c) in known]
        if clash:
            raise RecipeError(f"{where}.add: {', '.join(clash)} already a class")

    def new_classes(self, classes: Sequence[Any]) -> list:
        """The new schema's classes, in the old order with each change in place, additions last."""
        merged_into = {str(o): n for n, olds in self.merge.items() for o in olds}
        removed = {str(c) for c in self.remove}
        out: list = []
        for c in classes:
            s = str(c)
            if s in removed:
                continue
            if s in merged_into:
                new = merged_into[s]
            elif s in {str(k) for k in self.split}:
                for new in self.split[next(k for k in self.split if str(k) == s)]:
                    if new not in out:
                        out.append(new)
                continue
            else:
                new = c
            if new not in out:
                out.append(new)
        out += [c for c in self.add if c not in out]
        return out

    def comparison(self) -> dict:
        """class -> class both schemas can be judged in (the coarser side of each change)."""
        out = {str(n): str(old) for old, news in self.split.items() for n in news}
        out.update({str(o): str(n) for n, olds in self.merge.items() for o in olds})
        return {k: v for k, v in out.items() if k != v}

    def apply(self, labels: Any) -> tuple[Any, Any, dict]:
        """(new labels, rows to queue for relabeling, counts). Merged rows are relabeled; rows of a
        split class lose their label and are queued; rows of a removed class lose theirs."""
        import pandas as pd

        text = labels.astype("object").map(lambda v: None if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v))
        out = labels.astype("object").copy()
        counts: dict[str, Any] = {"merged": {}, "split": {}, "removed": {}}
        for new, olds in self.merge.items():
            hit = text.isin([str(o) for o in olds])
            out[hit] = new
            counts["merged"][str(new)] = int(hit.sum())
        queued = pd.Series(False, index=labels.index)
        for old in self.split:
            hit = text == str(old)
            out[hit] = None
            queued |= hit
            counts["split"][str(old)] = int(hit.sum())
        for old in self.remove:
            hit = text == str(old)
            out[hit] = None
            counts["removed"][str(old)] = int(hit.sum())
        counts["queued"] = int(queued.sum())
        return out, labels.index[queued.to_numpy()], counts

    def describe(self) -> dict:
        return {k: v for k, v in (("add", self.add), ("remove", self.remove), ("merge", self.merge),
                                  ("split", self.split)) if v}
