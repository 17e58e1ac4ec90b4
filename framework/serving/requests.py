"""Parsing and validating one prediction request against an InputSchema (no Ray, no HTTP).

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

MAX_INSTANCES = 1024
#: bytes; far above 1024 instances of a few hundred features, small enough to refuse abuse
MAX_BODY_BYTES = 16 * 1024 * 1024
_NUMBER_TYPES = (int, float)  # exact types: bool is an int subclass but not a number here


@dataclass
class ParsedRequest:
    x: np.ndarray  # float32 [n, features], model order
    rows: list[list[float]]  # the same values as Python numbers, for the record buffer
    key: str | None


class RequestParser:
    """Validates ``{"instances": [{feature: number}, ...]}`` (or ``{"instance": {...}}``)."""

    def __init__(self, schema: InputSchema, max_instances: int = MAX_INSTANCES):
        self.names = schema.names
        self.name_set = frozenset(self.names)
        self.n = len(self.names)
        self.integer = {f.name for f in schema.features if f.dtype == "int"}
        self.max_instances = max_instances

    def parse_body(self, body: bytes) -> ParsedRequest:
        if len(body) > MAX_BODY_BYTES:
            raise RequestError("body", f"request body of {len(body)} bytes exceeds {MAX_BODY_BYTES}", 413)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise RequestError("body", f"invalid JSON: {exc}", 400) from None
        return self.parse(data)

    def parse(self, data: Any) -> ParsedRequest:
        if not isinstance(data, dict):
            raise RequestError("body", f"expected a JSON object, got {_describe(data)}")
        if "instances" in data:
            instances = data["instances"]
            where = "instances"
            if not isinstance(instances, list):
                raise RequestError("instances", f"expected a list of objects, got {_describe(instances)}")
            if not instances:
                raise RequestError("instances", "empty list: send at least one instance")
            if len(instances) > self.max_instances:
                raise RequestError(
                    "instances", f"{len(instances)} instances exceed the limit of {self.max_instances} per request", 413
                )
        elif "instance" in data:
            instances = [data["instance"]]
            where = "instance"
        else:
            raise RequestError("instances", 'missing: send {"instances": [{"feature": number, ...}]}')
        key = data.get("key")
        if key is not None:
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise RequestError("key", f"expected a string, got {_describe(key)}")
            key = str(key)

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
            return ParsedRequest(x=x, rows=rows, key=key)
        self._explain(instances, where)
        raise RequestError(where, "invalid instance")  # _explain always raises; defensive

    def _explain(self, instances: list, where: str) -> None:
        """Raise the RequestError of the first bad field (slow path, only for bad requests)."""
        for i, inst in enumerate(instances):
            at = f"{where}[{i}]" if where == "instances" else where
            if not isinstance(inst, dict):
                raise RequestError(at, f"expected an object of feature: number, got {_describe(inst)}")
            for name in self.names:
                if name not in inst:
                    raise RequestError(f"{at}.{name}", "missing feature")
                value = inst[name]
                if type(value) not in _NUMBER_TYPES or not _finite32(value):
                    raise RequestError(f"{at}.{name}", f"expected a finite number, got {_short(value)}")
                if name in self.integer and not float(value).is_integer():
                    raise RequestError(f"{at}.{name}", f"expected an integer, got {_short(value)}")
            extra = [k for k in inst if k not in self.name_set]
            if extra:
                raise RequestError(
                    f"{at}.{extra[0]}", f"unknown feature; expected only: {_list(self.names)}"
                )


def _finite32(value: int | float) -> bool:
    """Finite once cast to the model's float32 (1e39 is a finite double but inf in float32)."""
    try:
        return math.isfinite(float(value)) and abs(float(value)) <= float(np.finfo(np.float32).max)
    except OverflowError:
        return False


def _describe(value: Any) -> str:
    kind = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
    return f"{kind} ({_short(value)})"


def _short(value: Any, limit: int = 60) -> str:
    """The offending value as the client would recognise it: 'abc', true, null, nan, [1]..."""
    if isinstance(value, str) or (isinstance(value, float) and not math.isfinite(value)):
        text = repr(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} features)" if len(names) > limit else "")
