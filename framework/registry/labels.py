"""Label versions: a label column (and probabilities) keyed by a data version's rows.

A label version of dataset ``D`` is named ``D.labels``. Its one file, ``labels.parquet``, holds a
row per labeled or queued row of the data version (index: the data version's index labels) with
the columns ``label`` (missing: no label yet), ``source`` (gold, label_model, annotator,
migration ...) and ``p:CLASS`` probabilities when the labeler gave them. Its schema is the label
schema (``classes``, ``schema_id``, ``target``); its lineage names the data version, the labeler
and its configuration, the Label Studio export it came from and the migration that made it.

The id covers the labels, the schema, the parent and the data version: the same labels of the
same rows are one version.
"""
from __future__ import annotations

import io
from typing import Any

from ..errors import StoreError
from .versions import Version

LABELS_FILE = "labels.parquet"
LABEL_COLUMN = "label"
SOURCE_COLUMN = "source"
PROBABILITY_PREFIX = "p:"
#: the class a diff names for a row without a label
NO_LABEL = "(none)"


def labels_name(dataset: str) -> str:
    return f"{dataset}.labels"


def labels_frame(labels: Any, classes: list, probabilities: Any = None, sources: Any = None) -> Any:
    """The stored frame: ``label`` (object, None where missing), ``source``, ``p:CLASS``."""
    import numpy as np
    import pandas as pd

    frame = pd.DataFrame(index=labels.index)
    frame[LABEL_COLUMN] = pd.Series([None if _missing(v) else str(v) for v in labels], index=labels.index, dtype="object")
    if sources is not None:
        frame[SOURCE_COLUMN] = pd.Series([None if _missing(v) else str(v) for v in sources.reindex(labels.index)],
                                         index=labels.index, dtype="object")
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=float)
        if probs.shape != (len(labels), len(classes)):
            raise StoreError(f"label probabilities have shape {probs.shape}, expected {(len(labels), len(classes))}")
        for j, c in enumerate(classes):
            frame[f"{PROBABILITY_PREFIX}{c}"] = probs[:, j]
    return frame


def normalised(frame: Any) -> Any:
    """``label`` and ``source`` as object columns with None where missing (how ids are hashed)."""
    import pandas as pd

    frame = frame.copy()
    for column in (LABEL_COLUMN, SOURCE_COLUMN):
        if column in frame.columns:
            frame[column] = pd.Series([None if _missing(v) else str(v) for v in frame[column]], index=frame.index,
                                      dtype="object")
    return frame


def _missing(value: Any) -> bool:
    import pandas as pd

    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def to_parquet(frame: Any) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, engine="pyarrow")
    return buffer.getvalue()


def from_parquet(data: bytes, where: str) -> Any:
    import pandas as pd

    try:
        frame = pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # pyarrow raises its own types on a bad file
        raise StoreError(f"{where}: cannot read {LABELS_FILE}: {exc}") from None
    return normalised(frame)


def typed_labels(frame: Any, classes: list) -> Any:
    """The ``label`` column with each value as its class (labels are stored as text)."""
    import pandas as pd

    by_text = {str(c): c for c in classes}
    return pd.Series([None if _missing(v) else by_text.get(str(v), v) for v in frame[LABEL_COLUMN]],
                     index=frame.index, dtype="object")


def label_diff(a: Version, b: Version, frame_a: Any, frame_b: Any) -> dict:
    """How many rows' labels changed from A to B, by class pair (``(none)``: no label)."""
    import pandas as pd

    la = frame_a[LABEL_COLUMN].astype("object").where(frame_a[LABEL_COLUMN].notna(), NO_LABEL)
    lb = frame_b[LABEL_COLUMN].astype("object").where(frame_b[LABEL_COLUMN].notna(), NO_LABEL)
    rows = la.index.union(lb.index)
    la, lb = la.reindex(rows, fill_value=NO_LABEL), lb.reindex(rows, fill_value=NO_LABEL)
    changed = la != lb
    pairs = pd.DataFrame({"a": la[changed].astype(str), "b": lb[changed].astype(str)}).value_counts()
    classes_a, classes_b = list(a.schema.get("classes", [])), list(b.schema.get("classes", []))
    counts_a = la.astype(str).value_counts().to_dict()
    counts_b = lb.astype(str).value_counts().to_dict()
    return {
        "kind": "label",
        "a": a.ref,
        "b": b.ref,
        "same": a.id == b.id,
        "rows": {"a": int(len(frame_a)), "b": int(len(frame_b)), "compared": int(len(rows))},
        "changed": int(changed.sum()),
        "unchanged": int((~changed).sum()),
        "pairs": [{"from": f, "to": t, "rows": int(n)} for (f, t), n in pairs.items()],
        "classes": {"a": classes_a, "b": classes_b,
                    "added": [c for c in classes_b if c not in classes_a],
                    "removed": [c for c in classes_a if c not in classes_b]},
        "counts": {c: {"a": int(counts_a.get(c, 0)), "b": int(counts_b.get(c, 0))}
                   for c in sorted(set(counts_a) | set(counts_b))},
        "schema": {"a": a.schema.get("schema_id"), "b": b.schema.get("schema_id")},
        "data_version": {"a": a.lineage.get("data_version"), "b": b.lineage.get("data_version")},
        "labeler": {"a": a.lineage.get("labeler"), "b": b.lineage.get("labeler")},
    }


def diff_lines(d: dict) -> list[str]:
    """A label diff as a short report (``versions diff``)."""
    lines = [f"label {d['a']} -> {d['b']}" + ("  (same version)" if d["same"] else "")]
    sa, sb = d["schema"]["a"], d["schema"]["b"]
    lines.append(f"schema: {sa} -> {sb}" + ("" if sa != sb else "  (same classes)"))
    if d["classes"]["added"] or d["classes"]["removed"]:
        lines.append(f"classes: added {', '.join(d['classes']['added']) or '-'}; "
                     f"removed {', '.join(d['classes']['removed']) or '-'}")
    lines.append(f"labels: {d['changed']} of {d['rows']['compared']} rows changed, {d['unchanged']} unchanged")
    if d["pairs"]:
        width = max(len(p["from"]) for p in d["pairs"])
        lines.append("changed, by class pair (A -> B):")
        lines += [f"  {p['from']:<{width}} -> {p['to']}: {p['rows']}" for p in d["pairs"]]
    lines.append("rows per class (A -> B): " + ", ".join(f"{c} {n['a']}->{n['b']}" for c, n in d["counts"].items()))
    la, lb = d["labeler"]["a"], d["labeler"]["b"]
    if la != lb:
        lines.append(f"labeler: {la} -> {lb}")
    return lines
