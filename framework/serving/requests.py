"""Parsing and validating predict, rank and feedback requests (no Ray, no HTTP).

The fast path assumes a well-formed request and checks it in bulk; only when that fails does the
slow path walk the instances to name the first offending field. Every failure is a RequestError
(``field``, ``reason``, 4xx status): a client mistake never becomes a 5xx.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..components import InputSchema
from ..errors import RequestError
from .jsonio import loads

MAX_INSTANCES = 1024
#: bytes; far above 1024 instances of a few hundred features, small enough to refuse abuse
MAX_BODY_BYTES = 16 * 1024 * 1024
_NUMBER_TYPES = (int, float)  # exact types: bool is an int subclass but not a number here


@dataclass
class ParsedRequest:
    #: float32 [n, features] in model order; a model of typed inputs: its ONNX feeds by input name
    x: np.ndarray | dict
    rows: list[list[Any]]  # the same values as the client sent them, for the record buffer
    key: str | None
    explain: bool = False  # "explain": true asks for per-instance attributions (predict only)

    @property
    def shape(self) -> tuple[int, int]:
        """(instances, features)."""
        if isinstance(self.x, np.ndarray):
            return self.x.shape
        return len(self.rows), len(self.rows[0]) if self.rows else 0


def envelope(data: Any, max_instances: int) -> tuple[list, str, str | None, bool]:
    """``{"instances": [...]}`` or ``{"instance": {...}}``, with ``key`` and ``explain``, checked:
    (instances, where, key, explain)."""
    if not isinstance(data, dict):
        raise RequestError("body", f"expected a JSON object, got {describe_value(data)}")
    if "instances" in data:
        instances = data["instances"]
        where = "instances"
        if not isinstance(instances, list):
            raise RequestError("instances", f"expected a list of objects, got {describe_value(instances)}")
        if not instances:
            raise RequestError("instances", "empty list: send at least one instance")
        if len(instances) > max_instances:
            raise RequestError("instances", f"{len(instances)} instances exceed the limit of {max_instances} per request", 413)
    elif "instance" in data:
        instances = [data["instance"]]
        where = "instance"
    else:
        raise RequestError("instances", 'missing: send {"instances": [{"feature": number, ...}]}')
    key = data.get("key")
    if key is not None:
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise RequestError("key", f"expected a string, got {describe_value(key)}")
        key = str(key)
    return instances, where, key, parse_explain(data)


class BodyParser:
    """What every request parser does with a body; a subclass gives ``parse(data)``."""

    def parse(self, data: Any) -> ParsedRequest:
        raise NotImplementedError

    def parse_body(self, body: bytes) -> ParsedRequest:
        return self.parse(load_json(body))

    def parse_rank_body(self, body: bytes) -> tuple[ParsedRequest, list]:
        """A rank request: the instances (validated as for predict) and one item id per instance."""
        data = load_json(body)
        parsed = self.parse(data)
        if parsed.explain:
            raise RequestError("explain", "explanations are given by predict only, not by rank")
        return parsed, parse_item_ids(data, len(parsed.rows))


class RequestParser(BodyParser):
    """Validates ``{"instances": [{feature: number}, ...]}`` (or ``{"instance": {...}}``)."""

    def __init__(self, schema: InputSchema, max_instances: int = MAX_INSTANCES):
        self.names = schema.names
        self.name_set = frozenset(self.names)
        self.n = len(self.names)
        self.integer = {f.name for f in schema.features if f.dtype == "int"}
        self.max_instances = max_instances

    def parse(self, data: Any) -> ParsedRequest:
        instances, where, key, explain = envelope(data, self.max_instances)

        names, n = self.names, self.n
        try:  # fast path: every instance a dict with exactly the schema's keys, numbers only
            rows = [[inst[name] for name in names] for inst in instances]
            ok = all(type(inst) is dict and len(inst) == n for inst in instances) and all(
                type(v) in _NUMBER_TYPES for row in rows for v in row
            )
        except (KeyError, TypeError, IndexError):
            ok = False
        if ok:
            try:
                with np.errstate(over="ignore"):  # 1e39 -> inf is caught just below, no warning
                    x = np.asarray(rows, dtype=np.float32)
            except OverflowError:  # an int too large for a float
                ok = False
            else:
                ok = bool(np.isfinite(x).all())
                if ok and self.integer:
                    ok = all(float(v).is_integer() for row in rows for v, name in zip(row, names) if name in self.integer)
        if ok:
            return ParsedRequest(x=x, rows=rows, key=key, explain=explain)
        self._explain(instances, where)
        raise RequestError(where, "invalid instance")  # _explain always raises; defensive

    def _explain(self, instances: list, where: str) -> None:
        """Raise the RequestError of the first bad field (slow path, only for bad requests)."""
        for i, inst in enumerate(instances):
            at = f"{where}[{i}]" if where == "instances" else where
            if not isinstance(inst, dict):
                raise RequestError(at, f"expected an object of feature: number, got {describe_value(inst)}")
            for name in self.names:
                if name not in inst:
                    raise RequestError(f"{at}.{name}", "missing feature")
                value = inst[name]
                if type(value) not in _NUMBER_TYPES or not finite32(value):
                    raise RequestError(f"{at}.{name}", f"expected a finite number, got {short_value(value)}")
                if name in self.integer and not float(value).is_integer():
                    raise RequestError(f"{at}.{name}", f"expected an integer, got {short_value(value)}")
            extra = [k for k in inst if k not in self.name_set]
            if extra:
                raise RequestError(
                    f"{at}.{extra[0]}", f"unknown feature; expected only: {list_names(self.names)}"
                )


def parse_explain(data: dict) -> bool:
    """``"explain"``: absent or null -> False; otherwise it must be a JSON boolean."""
    value = data.get("explain")
    if value is None:
        return False
    if type(value) is not bool:
        raise RequestError("explain", f"expected true or false, got {describe_value(value)}")
    return value


def load_json(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise RequestError("body", f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}", 413)
    try:
        return loads(body)  # orjson, or the standard library for what orjson refuses
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
        raise RequestError("body", f"invalid JSON: {_cut(str(exc))}", 400) from None
    except RecursionError:  # ~1,000 nested arrays: no endpoint takes more than 3 levels
        raise RequestError("body", "JSON nested too deeply", 400) from None


def finite_number(value: Any) -> bool:
    """A JSON number (not a boolean) that is a finite double: 10**400 is not (float() overflows)."""
    if type(value) not in _NUMBER_TYPES:
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _cut(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def finite32(value: int | float) -> bool:
    """Finite once cast to the model's float32 (1e39 is a finite double but inf in float32)."""
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= float(np.finfo(np.float32).max)
    except OverflowError:
        return False


def describe_value(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
    return f"{kind} ({short_value(value)})"


def short_value(value: Any, limit: int = 60) -> str:
    """The offending value as the client would recognise it: 'abc', true, null, nan, [1]..."""
    if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
        text = repr(value[: limit + 1] if isinstance(value, str) else value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError, RecursionError):
            text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def list_names(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} features)" if len(names) > limit else "")


# ---------------------------------------------------------------------------------------------
# Ranking requests
# ---------------------------------------------------------------------------------------------
def parse_item_ids(data: dict, n: int) -> list:
    """``item_ids`` of a rank request: one unique string or integer per instance ("0".."n-1" if absent)."""
    ids = data.get("item_ids")
    if ids is None:
        return [str(i) for i in range(n)]
    if not isinstance(ids, list):
        raise RequestError("item_ids", f"expected a list of ids (one per instance), got {describe_value(ids)}")
    if len(ids) != n:
        raise RequestError("item_ids", f"expected {n} ids (one per instance), got {len(ids)}")
    seen: dict = {}
    for i, item in enumerate(ids):
        if isinstance(item, bool) or not isinstance(item, (str, int)):
            raise RequestError(f"item_ids[{i}]", f"expected a string or an integer, got {describe_value(item)}")
        if item in seen:
            raise RequestError(f"item_ids[{i}]", f"duplicate id {short_value(item)} (also at item_ids[{seen[item]}])")
        seen[item] = i
    return ids


# ---------------------------------------------------------------------------------------------
# Feedback
# ---------------------------------------------------------------------------------------------
#: feedback items in one batch: far above what a client buffers, small enough to refuse abuse
MAX_FEEDBACK_ITEMS = 10_000
#: a request id the server issued is 32 hex characters; anything much longer is not one
MAX_REQUEST_ID_CHARS = 64
#: one label (a class name) or one clicked item id, as a string
MAX_LABEL_CHARS = 128
#: a label list has one entry per served instance
MAX_LABEL_ITEMS = MAX_INSTANCES
FEEDBACK_KINDS = ("label", "reward", "clicks")
_FEEDBACK_FIELDS = ("request_id",) + FEEDBACK_KINDS


@dataclass
class FeedbackItem:
    """One piece of feedback as the client sent it; ``kinds`` names what it carries."""

    request_id: str
    label: Any = None
    reward: float | None = None
    clicks: tuple | None = None
    kinds: tuple[str, ...] = ()
    #: where this item sits in the body, for error fields: "" (single) or "feedback[3]."
    at: str = ""


def parse_feedback_body(body: bytes) -> tuple[list[FeedbackItem], bool]:
    """``{"request_id", "label"?, "reward"?, "clicks"?}`` or ``{"feedback": [...]}`` -> (items, is_batch).

    The whole body is validated before anything is recorded: a batch is refused as one.
    """
    data = load_json(body)
    if not isinstance(data, dict):
        raise RequestError("body", f"expected a JSON object, got {describe_value(data)}")
    if "feedback" in data:
        extra = [k for k in data if k != "feedback"]
        if extra:
            raise RequestError(extra[0], 'unexpected next to "feedback": put every field inside the items')
        items = data["feedback"]
        if not isinstance(items, list):
            raise RequestError("feedback", f"expected a list of feedback objects, got {describe_value(items)}")
        if not items:
            raise RequestError("feedback", "empty list: send at least one feedback object")
        if len(items) > MAX_FEEDBACK_ITEMS:
            raise RequestError("feedback", f"{len(items)} items exceed the limit of {MAX_FEEDBACK_ITEMS} per request", 413)
        return [_feedback_item(item, f"feedback[{i}].") for i, item in enumerate(items)], True
    return [_feedback_item(data, "")], False


def _feedback_item(data: Any, at: str) -> FeedbackItem:
    if not isinstance(data, dict):
        raise RequestError(at.rstrip(".") or "body", f"expected a feedback object, got {describe_value(data)}")
    for k in data:
        if k not in _FEEDBACK_FIELDS:
            raise RequestError(f"{at}{k}", f"unknown field; expected only: {', '.join(_FEEDBACK_FIELDS)}")
    rid = data.get("request_id")
    if rid is None:
        raise RequestError(f"{at}request_id", "missing: the request_id of the answer this feedback is about")
    if not isinstance(rid, str) or not rid:
        raise RequestError(f"{at}request_id", f"expected a non-empty string, got {describe_value(rid)}")
    if len(rid) > MAX_REQUEST_ID_CHARS:
        raise RequestError(f"{at}request_id", f"{len(rid)} characters: not a request id this service issued")
    item = FeedbackItem(rid, at=at)
    kinds = []
    if data.get("label") is not None:  # null means "no label", like an absent field
        item.label = _label(data["label"], f"{at}label")
        kinds.append("label")
    if data.get("reward") is not None:
        reward = data["reward"]
        if not finite_number(reward):
            raise RequestError(f"{at}reward", f"expected a finite number, got {short_value(reward)}")
        item.reward = float(reward)
        kinds.append("reward")
    if data.get("clicks") is not None:
        clicks = data["clicks"]
        if not isinstance(clicks, list):
            raise RequestError(f"{at}clicks", f"expected a list of item ids, got {describe_value(clicks)}")
        if len(clicks) > MAX_LABEL_ITEMS:
            raise RequestError(f"{at}clicks", f"{len(clicks)} clicks exceed the limit of {MAX_LABEL_ITEMS}", 413)
        for j, c in enumerate(clicks):
            if isinstance(c, bool) or not isinstance(c, (str, int)) or not _bounded_id(c):
                raise RequestError(f"{at}clicks[{j}]", f"expected an item id (string or integer), got {describe_value(c)}")
        item.clicks = tuple(clicks)
        kinds.append("clicks")
    if not kinds:
        raise RequestError(at.rstrip(".") or "body", "nothing to record: send a label, a reward or clicks")
    item.kinds = tuple(kinds)
    return item


def _bounded_id(value: str | int) -> bool:
    if isinstance(value, str):
        return len(value) <= MAX_LABEL_CHARS
    return abs(value) < 2**63


def _label_value(value: Any, at: str) -> Any:
    """One class label: a string of at most MAX_LABEL_CHARS, a finite number or a boolean."""
    if isinstance(value, str):
        if len(value) > MAX_LABEL_CHARS:
            raise RequestError(at, f"a label of {len(value)} characters exceeds {MAX_LABEL_CHARS}", 413)
        return value
    if isinstance(value, bool):
        return value
    if finite_number(value):
        if isinstance(value, int) and abs(value) >= 2**63:
            raise RequestError(at, "an integer label beyond 64 bits")
        return value
    raise RequestError(at, f"expected a class label (a string, a finite number or a boolean), got {short_value(value)}")


def _label(value: Any, at: str) -> Any:
    """A label for one instance, or a list of them (one per served instance)."""
    if isinstance(value, list):
        if not value:
            raise RequestError(at, "empty list: one label per served instance")
        if len(value) > MAX_LABEL_ITEMS:
            raise RequestError(at, f"{len(value)} labels exceed the limit of {MAX_LABEL_ITEMS}", 413)
        return [_label_value(v, f"{at}[{i}]") for i, v in enumerate(value)]
    return _label_value(value, at)
