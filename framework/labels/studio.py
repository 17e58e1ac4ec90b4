"""Label Studio files: the queue out as tasks, people's answers back in.

Out (``tasks.json``, Label Studio's JSON import format): a list of tasks, each::

    {"id": 1,
     "data": {"row_id": "17", "text": "Name: toyota corolla | Cylinders: 4 | ...", "fields": {...}},
     "predictions": [{"model_version": "active_learning/entropy", "score": 0.41,
                      "result": [{"id": "pred-1", "from_name": "label", "to_name": "text",
                                  "type": "choices", "value": {"choices": ["Japan"]}, "score": 0.41}]}],
     "meta": {"queue_position": 1, "batch": 1, "uncertainty": 1.02}}

``predictions`` are the model's pre-annotations (Label Studio shows them as a suggestion);
``label_config.xml`` beside it is the labeling interface (a ``Text`` named ``text`` and single
``Choices`` named ``label``) to paste into the project's settings.

In (Label Studio's JSON export): the same tasks with ``annotations``, each
``{"id", "completed_by", "was_cancelled", "result": [{"from_name": "label", "to_name": "text",
"type": "choices", "value": {"choices": ["Japan"]}}], ...}``. The newest annotation that was not
cancelled gives the row's label (``data.row_id``); a task without one is skipped, and a choice
that is not a class is an error naming the task.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence
from xml.sax.saxutils import quoteattr

from ..errors import StageError

FROM_NAME = "label"
TO_NAME = "text"
#: fields shown in a task's text, at most
TEXT_FIELDS = 12


def label_config(classes: Sequence[Any]) -> str:
    """The labeling interface for these classes (Label Studio's XML config)."""
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    return (f'<View>\n  <Text name="{TO_NAME}" value="$text"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" showInline="true">\n'
            f"{choices}\n  </Choices>\n</View>\n")


def _plain(value: Any) -> Any:
    """A cell as JSON: numbers, strings, None for missing."""
    import math

    if value is None:
        return None
    item = getattr(value, "item", None)
    if callable(item) and getattr(value, "shape", None) == ():
        value = item()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def task_text(row: Mapping[str, Any], columns: Sequence[str]) -> str:
    return " | ".join(f"{c}: {_plain(row[c])}" for c in columns[:TEXT_FIELDS])


def export_tasks(frame: Any, rows: Sequence[Any], classes: Sequence[Any], path: Path, *, columns: Sequence[str],
                 probabilities: Any = None, model_version: str = "", batch: int | None = None,
                 scores: Sequence[float] | None = None) -> Path:
    """Write the tasks of ``rows`` (labels of ``frame``'s index, in queue order) to ``path``, with
    the model's predictions as pre-annotations when ``probabilities`` (rows x classes) is given;
    ``label_config.xml`` goes beside it. Returns ``path``."""
    tasks = []
    for position, row in enumerate(rows):
        record = frame.loc[row]
        data = {"row_id": str(row), "text": task_text(record, columns),
                "fields": {c: _plain(record[c]) for c in columns}}
        task: dict[str, Any] = {"id": position + 1, "data": data,
                                "meta": {"queue_position": position + 1, **({"batch": batch} if batch is not None else {})}}
        if scores is not None:
            task["meta"]["uncertainty"] = float(scores[position])
        if probabilities is not None:
            p = probabilities[position]
            top = int(p.argmax())
            task["predictions"] = [{
                "model_version": model_version,
                "score": float(p[top]),
                "result": [{"id": f"pred-{position + 1}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "value": {"choices": [str(classes[top])]}, "score": float(p[top])}],
            }]
        tasks.append(task)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks, indent=1))
    (path.parent / "label_config.xml").write_text(label_config(classes))
    return path


@dataclass
class Imported:
    """What an export said: row id (text) -> class, and the tasks that gave no label."""

    labels: dict[str, Any] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    annotators: dict[str, Any] = field(default_factory=dict)  # row id -> completed_by
    tasks: int = 0


def read_export(path: Path, classes: Sequence[Any]) -> Imported:
    """People's labels from a Label Studio JSON export (see the module docstring)."""
    path = Path(path)
    try:
        tasks = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StageError(f"Label Studio export {path}: cannot read it as JSON: {exc}") from None
    if not isinstance(tasks, list):
        raise StageError(f"Label Studio export {path}: expected a list of tasks (the JSON export), got {type(tasks).__name__}")
    by_text = {str(c): c for c in classes}
    out = Imported(tasks=len(tasks))
    for t, task in enumerate(tasks):
        where = f"Label Studio export {path}, task {t} (id {task.get('id') if isinstance(task, dict) else '?'})"
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict) or "row_id" not in task["data"]:
            raise StageError(f"{where}: no data.row_id; was it exported from tasks this framework wrote?")
        row = str(task["data"]["row_id"])
        answers = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
        answers.sort(key=lambda a: str(a.get("updated_at") or a.get("created_at") or ""))
        choice = None
        for annotation in reversed(answers):
            for item in annotation.get("result") or []:
                if item.get("type") == "choices" and item.get("from_name", FROM_NAME) == FROM_NAME:
                    picked = (item.get("value") or {}).get("choices") or []
                    if picked:
                        choice = picked[0]
                        out.annotators[row] = annotation.get("completed_by")
                        break
            if choice is not None:
                break
        if choice is None:
            out.skipped.append(row)
            continue
        if str(choice) not in by_text:
            raise StageError(f"{where}: choice {choice!r} is not a class ({', '.join(by_text)}); "
                             "fix the labeling config's choices")
        out.labels[row] = by_text[str(choice)]
    return out


def simulate_annotator(tasks_path: Path, export_path: Path, truth: Mapping[str, Any], *, error_rate: float = 0.0,
                       seed: int = 0, classes: Sequence[Any] | None = None, annotator: int = 1) -> Path:
    """Play the person: read ``tasks_path`` (our task JSON), answer each task from ``truth``
    (row id -> hidden true label; a wrong class with probability ``error_rate``) and write
    Label Studio's JSON export to ``export_path``. Rows missing from ``truth`` are skipped."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tasks = json.loads(Path(tasks_path).read_text())
    now = datetime.now(timezone.utc).isoformat()
    exported = []
    for task in tasks:
        row = str(task["data"]["row_id"])
        done = dict(task)
        done["annotations"] = []
        known = {str(c) for c in classes} if classes else None
        # a person answers from the interface's choices: a true label outside them is skipped
        if row in truth and truth[row] is not None and (known is None or str(truth[row]) in known):
            answer = truth[row]
            if error_rate and classes and rng.random() < error_rate:
                answer = rng.choice([c for c in classes if str(c) != str(answer)])
            done["annotations"] = [{
                "id": task["id"], "completed_by": annotator, "was_cancelled": False, "ground_truth": False,
                "created_at": now, "updated_at": now, "lead_time": 1.0,
                "result": [{"id": f"ann-{task['id']}", "from_name": FROM_NAME, "to_name": TO_NAME, "type": "choices",
                            "origin": "manual", "value": {"choices": [str(answer)]}}],
            }]
        exported.append(done)
    export_path = Path(export_path)
    export_path.parent.mkdir(parents=True, exist_ok=True)
    export_path.write_text(json.dumps(exported, indent=1))
    return export_path


class StudioAnnotator:
    """People reached through Label Studio files. Each ``ask`` writes a task JSON (with the
    model's pre-annotations) into its own folder; ``simulated`` then answers it from the hidden
    true labels as Label Studio's JSON export and reads that file back, ``files`` leaves it for
    people (their export comes back with ``python -m framework labels import``)."""

    def __init__(self, out_dir: Path, mode: str, truth: Any = None, columns: Sequence[str] = (), error_rate: float = 0.0,
                 seed: int = 0):
        self.out_dir = Path(out_dir)
        self.mode = mode
        self.truth = {str(k): v for k, v in truth.items()} if truth is not None else {}
        self.columns = list(columns)
        self.error_rate = error_rate
        self.seed = seed
        self.asked = 0
        self.answered = 0
        self.files: list[dict] = []

    def ask(self, frame: Any, rows: Sequence[Any], classes: Sequence[Any], probabilities: Any = None, tag: str = "",
            scores: Sequence[float] | None = None) -> dict:
        """Labels for ``rows`` (index labels of ``frame``) as ``{row: class}``; the rows nobody
        answered are missing from it."""
        rows = list(rows)
        if not rows:
            return {}
        folder = self.out_dir / f"{len(self.files) + 1:02d}-{tag or 'queue'}"
        tasks = export_tasks(frame, rows, classes, folder / "tasks.json", columns=self.columns,
                                    probabilities=probabilities, model_version=tag, batch=len(self.files) + 1, scores=scores)
        entry = {"tag": tag, "tasks": str(tasks), "rows": len(rows)}
        self.files.append(entry)
        self.asked += len(rows)
        if self.mode != "simulated":
            return {}
        export = simulate_annotator(tasks, folder / "export.json", self.truth, error_rate=self.error_rate,
                                           seed=self.seed + len(self.files), classes=classes)
        imported = read_export(export, classes)
        entry.update(export=str(export), answered=len(imported.labels), skipped=len(imported.skipped))
        by_text = {str(r): r for r in rows}
        self.answered += len(imported.labels)
        return {by_text[r]: label for r, label in imported.labels.items()}
