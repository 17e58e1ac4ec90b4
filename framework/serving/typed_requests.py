"""Requests of raw typed rows: numbers, booleans and categories (strings), missing values as null.

A model whose features are all numbers that are never missing is served by ``RequestParser`` (one
float matrix, the fast path); a model with a typed input layout (``framework.InputLayout``) by
this parser, which checks every field against its ``FeatureSpec`` (type, nullability, known
categories) and builds the model's ONNX feeds: a float32 matrix of the numbers (NaN where null,
booleans as 0/1) and a string matrix of the categories (the layout's missing token where null).
Every failure is a RequestError naming the field: ``instances[0].island``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..components import InputLayout, InputSchema
from ..errors import RequestError
from .requests import (MAX_INSTANCES, BodyParser, ParsedRequest, RequestParser, describe_value, envelope, finite32, list_names,
                       short_value)

_NUMBER_TYPES = (int, float)
#: how a field is checked and where it goes: (name, kind, column in its input, nullable, known)
_NUMBER, _INTEGER, _BOOL, _CATEGORY = "float", "int", "bool", "category"


class TypedRequestParser(BodyParser):
    """Validates ``{"instances": [{feature: value}, ...]}`` against a typed schema."""

    def __init__(self, schema: InputSchema, layout: InputLayout, max_instances: int = MAX_INSTANCES):
        self.schema = schema
        self.layout = layout
        self.names = schema.names
        self.name_set = frozenset(self.names)
        self.max_instances = max_instances
        numeric = {n: i for i, n in enumerate(layout.numeric_columns)}
        categorical = {n: i for i, n in enumerate(layout.categorical_columns)}
        refuse = layout.unknown_categories == "refuse"
        self.fields = []
        for f in schema.features:
            if f.dtype == "category":
                if f.name not in categorical:
                    raise ValueError(f"feature '{f.name}' is a category, but the model's categorical input lacks it")
                known = frozenset(f.categories or ()) if refuse else None
                self.fields.append((f.name, _CATEGORY, categorical[f.name], bool(f.nullable), known))
            else:
                if f.name not in numeric:
                    raise ValueError(f"feature '{f.name}' is a {f.dtype}, but the model's numeric input lacks it")
                self.fields.append((f.name, f.dtype if f.dtype in (_INTEGER, _BOOL) else _NUMBER, numeric[f.name],
                                    bool(f.nullable), None))
        self.n_numeric = len(layout.numeric_columns)
        self.n_categorical = len(layout.categorical_columns)

    def parse(self, data: Any) -> ParsedRequest:
        instances, where, key, explain = envelope(data, self.max_instances)
        n = len(instances)
        numbers = np.empty((n, self.n_numeric), dtype=np.float32)
        strings = np.empty((n, self.n_categorical), dtype=object)
        token = self.layout.missing_token
        rows = []
        for i, inst in enumerate(instances):
            at = f"{where}[{i}]" if where == "instances" else where
            if type(inst) is not dict:
                raise RequestError(at, f"expected an object of feature: value, got {describe_value(inst)}")
            row = []
            for name, kind, column, nullable, known in self.fields:
                try:
                    value = inst[name]
                except KeyError:
                    raise RequestError(f"{at}.{name}", "missing feature (send null for a missing value)") from None
                row.append(value)
                if value is None:
                    if not nullable:
                        raise RequestError(f"{at}.{name}", f"null is not allowed: '{name}' is never missing in this "
                                                           f"model's data; send a {_kind_word(kind)}")
                    if kind == _CATEGORY:
                        strings[i, column] = token
                    else:
                        numbers[i, column] = math.nan
                elif kind == _CATEGORY:
                    if type(value) is not str:
                        raise RequestError(f"{at}.{name}", f"expected a string (a category), got {describe_value(value)}")
                    if known is not None and value not in known:
                        shown = list_names(sorted(known))
                        raise RequestError(f"{at}.{name}", f"unknown category {short_value(value)}; known: {shown}")
                    strings[i, column] = value
                elif kind == _BOOL:
                    if type(value) is not bool:
                        raise RequestError(f"{at}.{name}", f"expected true or false, got {describe_value(value)}")
                    numbers[i, column] = 1.0 if value else 0.0
                else:
                    if type(value) not in _NUMBER_TYPES or not finite32(value):
                        raise RequestError(f"{at}.{name}", f"expected a finite number, got {describe_value(value)}")
                    if kind == _INTEGER and not float(value).is_integer():
                        raise RequestError(f"{at}.{name}", f"expected an integer, got {short_value(value)}")
                    numbers[i, column] = value
            if len(inst) != len(self.fields):
                extra = next(k for k in inst if k not in self.name_set)
                raise RequestError(f"{at}.{extra}", f"unknown feature; expected only: {list_names(self.names)}")
            rows.append(row)
        feeds = {}
        if self.layout.numeric:
            feeds[self.layout.numeric] = numbers
        if self.layout.categorical:
            feeds[self.layout.categorical] = strings
        return ParsedRequest(x=feeds, rows=rows, key=key, explain=explain)


def make_parser(model: Any, max_instances: int = MAX_INSTANCES) -> RequestParser | TypedRequestParser:
    """The parser of a served model's requests: raw typed rows (``TypedRequestParser``) for a model
    with a typed input layout, else one float matrix (``RequestParser``, the fast path)."""
    if getattr(model, "inputs", None) is not None:
        return TypedRequestParser(model.schema, model.inputs, max_instances)
    return RequestParser(model.schema, max_instances)


def _kind_word(kind: str) -> str:
    return {"category": "string", "bool": "true or false", "int": "integer"}.get(kind, "number")
