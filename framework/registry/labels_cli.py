"""``python -m framework labels export|import``: the Label Studio round trip of a label version.

``export LABELS --out tasks.json`` writes the rows of a label version that have no label yet (the
queue a migration or an active-learning run left, or every unlabeled row) as Label Studio tasks,
the stored probabilities as pre-annotations, ``label_config.xml`` beside it. People label them in
Label Studio; ``import EXPORT.json --labels LABELS`` reads its JSON export and stores a new label
version: the old labels plus the answers (source ``annotator``), whose parent is the old one and
whose lineage names the export file and its sha256.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from ..errors import StageError, StoreError
from ..labels import studio
from .labels import LABEL_COLUMN, PROBABILITY_PREFIX, SOURCE_COLUMN, labels_frame, typed_labels
from .cli import VerbParser, parse_verb
from .store import Registry


def _parser() -> argparse.ArgumentParser:
    p = VerbParser(prog="python -m framework labels", description="Label Studio files in and out of label versions.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=VerbParser)
    out = sub.add_parser("export", help="the unlabeled rows of a label version as Label Studio tasks")
    out.add_argument("labels", metavar="LABELS", help="a label version: NAME.labels@latest, NAME.labels:ID")
    out.add_argument("--out", required=True, help="the task JSON file to write")
    out.add_argument("--limit", type=int, default=None, help="at most this many tasks (most uncertain first)")
    into = sub.add_parser("import", help="a Label Studio JSON export as a new label version")
    into.add_argument("export", metavar="EXPORT.json")
    into.add_argument("--labels", required=True, help="the label version the tasks were exported from")
    into.add_argument("--alias", action="append", default=[], help="alias of the new version (repeatable)")
    return p


def labels_command(argv: list[str], store_uri: str) -> int:
    args = parse_verb(_parser(), argv, "labels")
    if isinstance(args, int):
        return args
    try:
        registry = Registry(store_uri)
        if args.command == "export":
            path, count = export_queue(registry, args.labels, Path(args.out), args.limit)
            print(f"{count} task(s) written to {path} (labeling interface: {path.parent / 'label_config.xml'})")
            return 0
        version, imported = import_export(registry, args.labels, Path(args.export), args.alias)
        print(f"label version {version.ref}: {len(imported.labels)} answer(s) imported, "
              f"{len(imported.skipped)} task(s) without an answer; parent {args.labels}")
        return 0
    except (StoreError, StageError) as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2


def export_queue(registry: Registry, ref: str, out: Path, limit: int | None = None) -> tuple[Path, int]:
    """Tasks for the rows of label version ``ref`` without a label; returns (path, tasks)."""
    import numpy as np

    version = registry.get(ref, kind="label")
    frame = registry.load_labels(version)
    classes = list(version.schema.get("classes") or [])
    data = registry.load_frame(registry.get(version.lineage["data_version"], kind="data"))
    rows = frame.index[frame[LABEL_COLUMN].isna().to_numpy()]
    columns = [f"{PROBABILITY_PREFIX}{c}" for c in classes]
    probs = frame.loc[rows, columns].to_numpy(dtype=float) if all(c in frame.columns for c in columns) else None
    if probs is not None and np.isnan(probs).all(axis=1).any():
        probs = None  # pre-annotations only when every task has one
    if probs is not None:  # the least sure first, as active learning would ask them
        order = np.argsort(probs.max(axis=1), kind="stable")
        rows, probs = rows[order], probs[order]
    if limit is not None:
        rows = rows[:limit]
        probs = probs[:limit] if probs is not None else None
    target = version.schema.get("target")
    shown = [c for c in data.columns if c != target]
    path = studio.export_tasks(data, list(rows), classes, out, columns=shown, probabilities=probs,
                               model_version=version.ref)
    return path, len(rows)


def import_export(registry: Registry, ref: str, export: Path, aliases: list[str] | None = None):
    """A new label version: ``ref``'s labels plus the answers in Label Studio's JSON ``export``."""
    import pandas as pd

    version = registry.get(ref, kind="label")
    frame = registry.load_labels(version)
    classes = list(version.schema.get("classes") or [])
    imported = studio.read_export(export, classes)
    by_text = {str(r): r for r in frame.index}
    strangers = [r for r in imported.labels if r not in by_text]
    if strangers:
        raise StageError(f"Label Studio export {export}: rows {strangers[:5]} are not rows of label version {version.ref}")
    labels = typed_labels(frame, classes)
    sources = frame[SOURCE_COLUMN].astype("object") if SOURCE_COLUMN in frame.columns else pd.Series(None, index=frame.index, dtype="object")
    for row, label in imported.labels.items():
        labels[by_text[row]] = label
        sources[by_text[row]] = "annotator"
    probability_columns = [f"{PROBABILITY_PREFIX}{c}" for c in classes]
    probs = frame[probability_columns].to_numpy(dtype=float) if all(c in frame.columns for c in probability_columns) else None
    stored = labels_frame(labels, classes, probs, sources)
    lineage = {**version.lineage, "labeler": "label_studio_import", "from_labels": version.ref,
               "label_studio_export": {"path": str(export), "sha256": hashlib.sha256(Path(export).read_bytes()).hexdigest(),
                                       "answers": len(imported.labels), "skipped": len(imported.skipped)}}
    new = registry.put_labels(version.name, stored, schema=dict(version.schema), lineage=lineage,
                              meta={"description": f"{version.ref} plus the answers of {Path(export).name}"},
                              parent=f"{version.name}:{version.id}")
    for alias in aliases or []:
        registry.set_alias("label", new.name, alias, new.id)
    return registry.get(f"{new.name}:{new.id}", kind="label"), imported
