"""Labeling functions: declared in YAML, applied to a table, analysed.

A labeling function votes for one class per row or abstains. The kinds a recipe can declare:

* ``keywords``: any of ``words`` (whole words, case-insensitive) in a text ``column`` -> ``label``;
* ``regex``: ``pattern`` found in a text ``column`` -> ``label``. A pattern is data: compiled
  with :mod:`re`, at most :data:`MAX_PATTERN` characters, and refused when a quantified group is
  itself quantified (``(a+)+``), the shape behind catastrophic backtracking;
* ``threshold``: a numeric ``column`` compared (``op``: < <= > >= == !=) with ``value`` -> ``label``;
* ``model``: a registered model version's (``ref: NAME@ALIAS``) predicted class when its
  probability is at least ``min_confidence``;
* ``callable``: a function put on the allow-list with :func:`labeling_function` by an installed
  plugin; the recipe names it, never an import path, and nothing in a recipe is evaluated.

Applying functions gives the label matrix ``L`` (rows x functions, class index or ``ABSTAIN``).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from ..errors import RecipeError, StageError

ABSTAIN = -1
#: the longest regex a recipe may give
MAX_PATTERN = 200
#: text cells are cut to this many characters before a regex sees them (bounds the work per cell)
MAX_TEXT = 10_000
KINDS = ("keywords", "regex", "threshold", "model", "callable")
OPS = {"<": "lt", "<=": "le", ">": "gt", ">=": "ge", "==": "eq", "!=": "ne"}
_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# a group holding a quantifier, itself quantified: (a+)+, (a*b?)*, (x{2,})+ ...
_NESTED_QUANTIFIER = re.compile(r"\((?:[^()\\]|\\.)*[+*}](?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d)")

_CALLABLES: dict[str, Callable[[Any], Any]] = {}


def labeling_function(name: str) -> Callable[[Callable], Callable]:
    """Decorator: allow recipes to name ``fn`` as ``{type: callable, callable: NAME}``.

    ``fn(frame)`` gets the table (a pandas DataFrame) and returns one label per row (a Series on
    the frame's index or a sequence), None / NaN where it abstains. Put it in a module your
    plugin's entry point imports, so it is registered whenever the framework starts."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"labeling function name {name!r}: use 1-64 letters, digits, '_', '.', '-'")

    def register(fn: Callable) -> Callable:
        known = _CALLABLES.get(name)
        if known is not None and known is not fn and getattr(known, "__qualname__", None) != getattr(fn, "__qualname__", None):
            raise ValueError(f"labeling function '{name}' is registered twice ({_where(known)} and {_where(fn)})")
        _CALLABLES[name] = fn
        return fn

    return register


def registered_callables() -> dict[str, Callable]:
    """The allow-list: name -> function, as plugins registered them."""
    return dict(_CALLABLES)


def _where(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


@dataclass
class LabelingFunction:
    """One declared function; ``apply`` gives one class index or ABSTAIN per row."""

    name: str
    kind: str
    label: Any = None  # the class voted for (keywords, regex, threshold)
    column: str | None = None
    options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"name": self.name, "type": self.kind, **({"label": self.label} if self.label is not None else {}),
                **({"column": self.column} if self.column else {}), **self.options}


def parse_functions(raw: Sequence[Mapping], key: str, classes: Sequence[Any] | None = None) -> list[LabelingFunction]:
    """Validate the recipe's list of functions (cheap: plan time); RecipeError naming the key."""
    if not raw:
        raise RecipeError(f"{key}: give at least one labeling function, e.g. "
                          "{name: brands, type: keywords, column: Name, words: [toyota], label: Japan}")
    out, names = [], set()
    for i, spec in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(spec, Mapping):
            raise RecipeError(f"{where}: expected a mapping with name and type, got {spec!r}")
        spec = dict(spec)
        name, kind = spec.pop("name", None), spec.pop("type", None)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RecipeError(f"{where}.name: give each function a name of 1-64 letters, digits, '_', '.', '-'; got {name!r}")
        if name in names:
            raise RecipeError(f"{where}.name: '{name}' names two functions")
        names.add(name)
        if kind not in KINDS:
            raise RecipeError(f"{where}.type: one of {', '.join(KINDS)}; got {kind!r}")
        out.append(_parse_one(name, kind, spec, where, classes))
    return out


def _take(spec: dict, allowed: Sequence[str], required: Sequence[str], where: str, kind: str) -> dict:
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise RecipeError(f"{where}.{unknown[0]}: unknown key for a '{kind}' function; it takes {', '.join(allowed)}")
    missing = [k for k in required if spec.get(k) in (None, "", [])]
    if missing:
        raise RecipeError(f"{where}.{missing[0]}: required for a '{kind}' function")
    return spec


def _check_label(label: Any, where: str, classes: Sequence[Any] | None) -> None:
    if classes is not None and not any(label == c or str(label) == str(c) for c in classes):
        raise RecipeError(f"{where}.label: {label!r} is not a class; classes: {', '.join(map(str, classes))}")


def _parse_one(name: str, kind: str, spec: dict, where: str, classes: Sequence[Any] | None) -> LabelingFunction:
    if kind == "keywords":
        spec = _take(spec, ("column", "words", "label"), ("column", "words", "label"), where, kind)
        words = spec["words"]
        if not isinstance(words, (list, tuple)) or not all(isinstance(w, str) and w.strip() for w in words):
            raise RecipeError(f"{where}.words: a list of non-empty words, got {words!r}")
        _check_label(spec["label"], where, classes)
        return LabelingFunction(name, kind, spec["label"], str(spec["column"]), {"words": [w.strip() for w in words]})
    if kind == "regex":
        spec = _take(spec, ("column", "pattern", "label", "ignore_case"), ("column", "pattern", "label"), where, kind)
        compile_pattern(spec["pattern"], f"{where}.pattern", bool(spec.get("ignore_case", True)))
        _check_label(spec["label"], where, classes)
        return LabelingFunction(name, kind, spec["label"], str(spec["column"]),
                                {"pattern": spec["pattern"], "ignore_case": bool(spec.get("ignore_case", True))})
    if kind == "threshold":
        spec = _take(spec, ("column", "op", "value", "label"), ("column", "op", "label"), where, kind)
        if spec["op"] not in OPS:
            raise RecipeError(f"{where}.op: one of {' '.join(OPS)}; got {spec['op']!r}")
        value = spec.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RecipeError(f"{where}.value: a number, got {value!r}")
        _check_label(spec["label"], where, classes)
        return LabelingFunction(name, kind, spec["label"], str(spec["column"]), {"op": spec["op"], "value": float(value)})
    if kind == "model":
        from ..components import is_registry_ref

        spec = _take(spec, ("ref", "min_confidence"), ("ref",), where, kind)
        if not is_registry_ref(spec["ref"]):
            raise RecipeError(f"{where}.ref: a registered model, NAME@ALIAS or NAME:ID; got {spec['ref']!r}")
        floor = spec.get("min_confidence", 0.0)
        if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0.0 <= floor <= 1.0:
            raise RecipeError(f"{where}.min_confidence: a probability in [0, 1], got {floor!r}")
        return LabelingFunction(name, kind, None, None, {"ref": spec["ref"], "min_confidence": float(floor)})
    spec = _take(spec, ("callable",), ("callable",), where, kind)
    allowed = registered_callables()
    if spec["callable"] not in allowed:
        raise RecipeError(f"{where}.callable: '{spec['callable']}' is not on the allow-list of labeling functions "
                          f"that installed plugins registered ({', '.join(sorted(allowed)) or 'none'}); a recipe names "
                          "a registered function, never an import path")
    return LabelingFunction(name, kind, None, None, {"callable": spec["callable"]})


def compile_pattern(pattern: Any, where: str, ignore_case: bool = True) -> re.Pattern:
    """A recipe's regex, bounded: a string of at most MAX_PATTERN characters, no nested quantifier."""
    if not isinstance(pattern, str) or not pattern:
        raise RecipeError(f"{where}: a non-empty regular expression, got {pattern!r}")
    if len(pattern) > MAX_PATTERN:
        raise RecipeError(f"{where}: {len(pattern)} characters; a pattern may have at most {MAX_PATTERN}")
    if _NESTED_QUANTIFIER.search(pattern):
        raise RecipeError(f"{where}: a quantified group is quantified again ({pattern!r}), which can backtrack "
                          "for ever; rewrite it without the nested repetition")
    try:
        return re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise RecipeError(f"{where}: not a valid regular expression: {exc}") from None


def columns_named(functions: Sequence[LabelingFunction]) -> list[str]:
    return [f.column for f in functions if f.column]


# ---------------------------------------------------------------------------------------------
# Applying functions: the label matrix
# ---------------------------------------------------------------------------------------------
def apply_functions(functions: Sequence[LabelingFunction], frame: Any, classes: Sequence[Any],
                    model_loader: Callable[[str], Any] | None = None) -> Any:
    """``L``: an int array rows x functions, the index of the class each voted for or ABSTAIN."""
    import numpy as np

    index = {c: i for i, c in enumerate(classes)}
    index.update({str(c): i for i, c in enumerate(classes)})
    matrix = np.full((len(frame), len(functions)), ABSTAIN, dtype=np.int64)
    for j, fn in enumerate(functions):
        if fn.column is not None and fn.column not in frame.columns:
            raise StageError(f"labeling function '{fn.name}': no column '{fn.column}' in the data")
        votes = _votes(fn, frame, classes, model_loader)
        matrix[:, j] = _encode(votes, index, fn.name)
    return matrix


def _encode(votes: Any, index: Mapping, name: str) -> Any:
    import numpy as np
    import pandas as pd

    out = np.full(len(votes), ABSTAIN, dtype=np.int64)
    for i, v in enumerate(votes):
        if v is None or (not isinstance(v, str) and pd.isna(v)):
            continue
        if v not in index and str(v) not in index:
            raise StageError(f"labeling function '{name}' voted {v!r}, which is not a class ({', '.join(map(str, index))})")
        out[i] = index[v] if v in index else index[str(v)]
    return out


def _votes(fn: LabelingFunction, frame: Any, classes: Sequence[Any], model_loader: Callable | None) -> list:
    import numpy as np
    import pandas as pd

    n = len(frame)
    if fn.kind in ("keywords", "regex"):
        if fn.kind == "keywords":
            pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in fn.options["words"]) + r")\b", re.IGNORECASE)
        else:
            pattern = compile_pattern(fn.options["pattern"], f"labeling function '{fn.name}'", fn.options["ignore_case"])
        texts = frame[fn.column]
        return [fn.label if isinstance(t, str) and pattern.search(t[:MAX_TEXT]) else None for t in texts]
    if fn.kind == "threshold":
        values = pd.to_numeric(frame[fn.column], errors="coerce").to_numpy(dtype=float)
        op = getattr(np, {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal", "eq": "equal",
                          "ne": "not_equal"}[OPS[fn.options["op"]]])
        with np.errstate(invalid="ignore"):
            hit = op(values, fn.options["value"]) & ~np.isnan(values)
        return [fn.label if h else None for h in hit]
    if fn.kind == "model":
        if model_loader is None:
            raise StageError(f"labeling function '{fn.name}' reads model {fn.options['ref']}, but no registry is available")
        return model_votes(model_loader(fn.options["ref"]), frame, fn.options["min_confidence"], fn.name)
    fn_callable = registered_callables().get(fn.options["callable"])
    if fn_callable is None:
        raise StageError(f"labeling function '{fn.name}': callable '{fn.options['callable']}' is no longer registered")
    result = fn_callable(frame)
    values = list(result.reindex(frame.index)) if isinstance(result, pd.Series) else list(result)
    if len(values) != n:
        raise StageError(f"labeling function '{fn.name}' ({fn.options['callable']}) returned {len(values)} labels for {n} rows")
    return values


def model_votes(model: Any, frame: Any, min_confidence: float, name: str) -> list:
    """A registered model's predicted class per row, None where its top probability is below
    ``min_confidence`` or a feature it needs is missing (ONNX Runtime, nothing unpickled)."""
    import numpy as np
    import onnxruntime as ort

    features = model.schema.names
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise StageError(f"labeling function '{name}': model {model.ref} needs columns {missing[:5]} the data lacks")
    x = frame[features].to_numpy(dtype=np.float32)
    complete = ~np.isnan(x).any(axis=1)
    votes: list = [None] * len(frame)
    if complete.any():
        session = ort.InferenceSession(model.onnx_bytes, providers=["CPUExecutionProvider"])
        probs = session.run([model.output_name], {model.input_name: x[complete]})[0]
        if (probs < 0).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):  # logits: softmax them
            z = np.exp(probs - probs.max(axis=1, keepdims=True))
            probs = z / z.sum(axis=1, keepdims=True)
        rows = np.flatnonzero(complete)
        for r, p in zip(rows, probs):
            if p.max() >= min_confidence:
                votes[r] = model.classes[int(p.argmax())]
    return votes


# ---------------------------------------------------------------------------------------------
# Analysis: what Snorkel's LFAnalysis reports
# ---------------------------------------------------------------------------------------------
def analyse(matrix: Any, names: Sequence[str], gold: Any = None) -> dict:
    """Per function: coverage (share of rows it labels), overlap (share it labels that another
    also labels), conflict (share it labels that another labels differently), the classes it
    voted for, and, on rows with a gold label (``gold``: class index or ABSTAIN per row), its
    empirical accuracy. Totals: coverage of any function, overlap and conflict rates."""
    import numpy as np

    n, m = matrix.shape
    voted = matrix != ABSTAIN
    votes_per_row = voted.sum(axis=1)
    per: dict[str, dict] = {}
    has_gold = gold is not None and (np.asarray(gold) != ABSTAIN).any()
    for j, name in enumerate(names):
        col = matrix[:, j]
        mine = voted[:, j]
        others = votes_per_row - mine
        conflict = np.zeros(n, dtype=bool)
        for k in range(m):
            if k != j:
                conflict |= mine & voted[:, k] & (matrix[:, k] != col)
        entry = {
            "coverage": float(mine.mean()) if n else 0.0,
            "overlap": float((mine & (others > 0)).mean()) if n else 0.0,
            "conflict": float(conflict.mean()) if n else 0.0,
            "votes": int(mine.sum()),
            "classes_voted": sorted({int(c) for c in col[mine]}),
        }
        if has_gold:
            g = np.asarray(gold)
            judged = mine & (g != ABSTAIN)
            entry["gold_rows"] = int(judged.sum())
            entry["empirical_accuracy"] = float((col[judged] == g[judged]).mean()) if judged.any() else None
        per[name] = entry
    conflicted = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(votes_per_row > 1):
        conflicted[i] = len(set(matrix[i][voted[i]].tolist())) > 1
    totals = {"rows": int(n), "coverage": float((votes_per_row > 0).mean()) if n else 0.0,
              "overlap": float((votes_per_row > 1).mean()) if n else 0.0,
              "conflict": float(conflicted.mean()) if n else 0.0}
    return {"functions": per, "totals": totals}
