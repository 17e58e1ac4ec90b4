"""Row filters written in recipes (model card slices): a small declared grammar, parsed here.

A recipe is configuration, not code: no recipe value ever reaches ``eval``, ``DataFrame.query``
or ``pandas.eval``. A filter is column comparisons joined by boolean operators::

    filter     := or
    or         := and (("or" | "|") and)*
    and        := not (("and" | "&") not)*
    not        := ("not" | "~") not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=") operand)*   (chained: a < b < c)
                | operand ["not"] "in" list
                | "(" or ")"
    operand    := column | literal
    column     := `any name but a backtick` | identifier
    literal    := number | 'string' | "string" | True | False
    list       := "[" literal ("," literal)* "]" | "(" literal ("," literal)* ")"

A comparison names at least one column; a bare column must hold booleans. Anything else
(``@name``, calls, attributes, arithmetic, subscripts) is refused with the character position.
Evaluation is vectorised pandas: one boolean Series over the frame, never a per-row Python loop.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Union

#: bounds: a hostile or runaway filter fails fast instead of exhausting the parser
MAX_LENGTH = 2000
MAX_DEPTH = 32
MAX_LIST = 1000
MAX_NUMBER_CHARS = 40

COMPARISONS = ("==", "!=", "<=", ">=", "<", ">")
KEYWORDS = {"and", "or", "not", "in", "True", "False"}
GRAMMAR_HINT = ("a filter is column comparisons (==, !=, <, <=, >, >=, in, not in) joined by and / or / not, "
                "e.g. \"`mean radius` > 15 and region in ['north', 'east']\"")


class ExpressionError(ValueError):
    """A filter that is not in the grammar (or cannot be evaluated); ``position`` is 0-based."""

    def __init__(self, reason: str, position: int, text: str):
        self.reason = reason
        self.position = position
        self.text = text
        shown = text if len(text) <= 80 else text[:77] + "..."
        super().__init__(f"at character {position + 1} of {shown!r}: {reason}")

    def __reduce__(self):
        return (self.__class__, (self.reason, self.position, self.text))


# ---------------------------------------------------------------------------------------------
# Syntax tree
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    position: int


@dataclass(frozen=True)
class Literal:
    value: Any
    position: int


@dataclass(frozen=True)
class Compare:
    ops: tuple[str, ...]
    operands: tuple[Union[Column, Literal], ...]
    position: int


@dataclass(frozen=True)
class Membership:
    column: Column
    values: tuple[Any, ...]
    negated: bool
    position: int


@dataclass(frozen=True)
class BoolColumn:
    column: Column


@dataclass(frozen=True)
class Not:
    operand: "Node"
    position: int


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" | "or"
    operands: tuple["Node", ...]
    position: int


Node = Union[Compare, Membership, BoolColumn, Not, BoolOp]


@dataclass(frozen=True)
class RowFilter:
    """A parsed filter: the columns it names and a boolean mask over a DataFrame."""

    text: str
    tree: Node

    def columns(self) -> list[str]:
        found: list[str] = []
        _columns(self.tree, found)
        return list(dict.fromkeys(found))

    def mask(self, frame: Any) -> Any:
        """A boolean Series aligned with ``frame``. ExpressionError when a column is missing or a
        comparison cannot be made on its values (the position names the comparison)."""
        mask = _evaluate(self.tree, frame, self.text)
        return mask.fillna(False).astype(bool)


def _columns(node: Any, found: list[str]) -> None:
    if isinstance(node, Column):
        found.append(node.name)
    elif isinstance(node, Compare):
        for operand in node.operands:
            _columns(operand, found)
    elif isinstance(node, Membership):
        found.append(node.column.name)
    elif isinstance(node, BoolColumn):
        found.append(node.column.name)
    elif isinstance(node, Not):
        _columns(node.operand, found)
    elif isinstance(node, BoolOp):
        for operand in node.operands:
            _columns(operand, found)


# ---------------------------------------------------------------------------------------------
# Tokens
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # name | column | number | string | op | punct | end
    value: Any
    position: int


_NUMBER = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_DIGITS = "0123456789"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in " \t\r\n":
            i += 1
            continue
        if c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                raise ExpressionError("unclosed backtick: a column name is written `like this`", i, text)
            name = text[i + 1:end]
            if not name.strip():
                raise ExpressionError("empty column name between backticks", i, text)
            tokens.append(Token("column", name, i))
            i = end + 1
            continue
        if c in "'\"":
            value, i_end = _string(text, i)
            tokens.append(Token("string", value, i))
            i = i_end
            continue
        two = text[i:i + 2]
        if two in ("==", "!=", "<=", ">="):
            tokens.append(Token("op", two, i))
            i += 2
            continue
        if c in "<>":
            tokens.append(Token("op", c, i))
            i += 1
            continue
        if c in "()[],&|~-":
            tokens.append(Token("punct", c, i))
            i += 1
            continue
        if c in _DIGITS or (c == "." and i + 1 < n and text[i + 1] in _DIGITS):
            match = _NUMBER.match(text, i)
            if match is None:  # defensive: the first character is an ASCII digit or ".digit"
                raise ExpressionError("malformed number", i, text)
            raw = match.group(0)
            if len(raw) > MAX_NUMBER_CHARS:
                raise ExpressionError(f"number longer than {MAX_NUMBER_CHARS} characters", i, text)
            number: float | int = float(raw) if any(ch in raw for ch in ".eE") else int(raw)
            if isinstance(number, float) and not math.isfinite(number):
                raise ExpressionError(f"number {raw} is not finite", i, text)
            end = match.end()
            if end < n and (text[end].isalnum() or text[end] in "_."):
                raise ExpressionError(f"unexpected {text[end]!r} after the number {raw}", end, text)
            tokens.append(Token("number", number, i))
            i = end
            continue
        match = _NAME.match(text, i)
        if match:
            tokens.append(Token("name", match.group(0), i))
            i = match.end()
            continue
        if c == "@":
            raise ExpressionError("'@' (a local variable) is not allowed: " + GRAMMAR_HINT, i, text)
        raise ExpressionError(f"{c!r} is not allowed: " + GRAMMAR_HINT, i, text)
    tokens.append(Token("end", None, n))
    return tokens


def _string(text: str, start: int) -> tuple[str, int]:
    quote = text[start]
    out: list[str] = []
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in (quote, "\\"):
            out.append(text[i + 1])
            i += 2
            continue
        if c == quote:
            return "".join(out), i + 1
        out.append(c)
        i += 1
    raise ExpressionError("unclosed string", start, text)


# ---------------------------------------------------------------------------------------------
# Parser (recursive descent, depth-bounded)
# ---------------------------------------------------------------------------------------------
class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def token(self) -> Token:
        return self.tokens[self.i]

    def fail(self, reason: str, token: Token | None = None) -> ExpressionError:
        token = token or self.token
        return ExpressionError(reason, token.position, self.text)

    def is_(self, kind: str, value: Any = None) -> bool:
        t = self.token
        return t.kind == kind and (value is None or t.value == value)

    def take(self) -> Token:
        t = self.token
        self.i += 1
        return t

    def expect(self, kind: str, value: str) -> Token:
        if not self.is_(kind, value):
            raise self.fail(f"expected {value!r}, got {_shown(self.token)}")
        return self.take()

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested deeper than {MAX_DEPTH} levels")

    def parse(self) -> Node:
        if self.is_("end"):
            raise self.fail("empty filter: " + GRAMMAR_HINT)
        node = self.or_()
        if not self.is_("end"):
            raise self.fail(f"unexpected {_shown(self.token)}: " + GRAMMAR_HINT)
        return node

    def or_(self) -> Node:
        start = self.token.position
        operands = [self.and_()]
        while self.is_("name", "or") or self.is_("punct", "|"):
            self.take()
            operands.append(self.and_())
        return operands[0] if len(operands) == 1 else BoolOp("or", tuple(operands), start)

    def and_(self) -> Node:
        start = self.token.position
        operands = [self.not_()]
        while self.is_("name", "and") or self.is_("punct", "&"):
            self.take()
            operands.append(self.not_())
        return operands[0] if len(operands) == 1 else BoolOp("and", tuple(operands), start)

    def not_(self) -> Node:
        if self.is_("name", "not") or self.is_("punct", "~"):
            token = self.take()
            self.enter()
            try:
                return Not(self.not_(), token.position)
            finally:
                self.depth -= 1
        return self.comparison()

    def comparison(self) -> Node:
        if self.is_("punct", "("):
            open_ = self.take()
            self.enter()
            try:
                inner = self.or_()
            finally:
                self.depth -= 1
            if not self.is_("punct", ")"):
                raise self.fail(f"expected ')' to close the '(' at character {open_.position + 1}, got {_shown(self.token)}")
            self.take()
            return inner
        start = self.token
        left = self.operand()
        if self.is_("name", "in") or (self.is_("name", "not") and self._next_is("name", "in")):
            negated = self.take().value == "not"
            if negated:
                self.take()
            if not isinstance(left, Column):
                raise self.fail("the left side of 'in' must be a column", start)
            return Membership(left, self.literal_list(), negated, start.position)
        ops: list[str] = []
        operands = [left]
        while self.is_("op"):
            ops.append(self.take().value)
            operands.append(self.operand())
        if not ops:
            if isinstance(left, Column):
                return BoolColumn(left)
            raise self.fail(f"a value alone is not a condition; compare a column with it: {GRAMMAR_HINT}", start)
        if not any(isinstance(o, Column) for o in operands):
            raise self.fail("a comparison must name at least one column", start)
        return Compare(tuple(ops), tuple(operands), start.position)

    def _next_is(self, kind: str, value: str) -> bool:
        t = self.tokens[self.i + 1] if self.i + 1 < len(self.tokens) else None
        return t is not None and t.kind == kind and t.value == value

    def operand(self) -> Union[Column, Literal]:
        t = self.token
        if t.kind == "column":
            self.take()
            return Column(t.value, t.position)
        if t.kind == "name" and t.value not in KEYWORDS:
            self.take()
            if self.is_("punct", "(") or self.is_("punct", "["):
                raise self.fail(f"'{t.value}{self.token.value}' (a call or a subscript) is not allowed: {GRAMMAR_HINT}")
            return Column(t.value, t.position)
        return Literal(self.literal(), t.position)

    def literal(self) -> Any:
        t = self.token
        if t.kind in ("number", "string"):
            self.take()
            return t.value
        if t.kind == "name" and t.value in ("True", "False"):
            self.take()
            return t.value == "True"
        if t.kind == "punct" and t.value == "-":
            self.take()
            if not self.is_("number"):
                raise self.fail(f"'-' must be followed by a number, got {_shown(self.token)}")
            return -self.take().value
        raise self.fail(f"expected a column or a value, got {_shown(t)}")

    def literal_list(self) -> tuple[Any, ...]:
        if not (self.is_("punct", "[") or self.is_("punct", "(")):
            raise self.fail(f"'in' takes a list of values, e.g. ['a', 'b']; got {_shown(self.token)}")
        close = "]" if self.take().value == "[" else ")"
        values: list[Any] = []
        while True:
            if self.is_("punct", close) and not values:
                raise self.fail("empty list after 'in'")
            values.append(self.literal())
            if len(values) > MAX_LIST:
                raise self.fail(f"more than {MAX_LIST} values after 'in'")
            if self.is_("punct", ","):
                self.take()
                if self.is_("punct", close):  # a trailing comma
                    break
                continue
            break
        self.expect("punct", close)
        return tuple(values)


def _shown(token: Token) -> str:
    if token.kind == "end":
        return "the end of the filter"
    return repr(token.value) if token.kind in ("string", "column") else f"'{token.value}'"


def parse_filter(text: Any) -> RowFilter:
    """The filter ``text`` parsed, or ExpressionError (position, reason). Never evaluates it."""
    if not isinstance(text, str):
        raise ExpressionError(f"expected a string, got {type(text).__name__}", 0, str(text)[:80])
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters", MAX_LENGTH, text)
    return RowFilter(text, _Parser(text).parse())


# ---------------------------------------------------------------------------------------------
# Evaluation: vectorised pandas operations only
# ---------------------------------------------------------------------------------------------
_OPERATORS = {
    "==": lambda a, b: a == b, "!=": lambda a, b: a != b, "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
}


def _series(operand: Union[Column, Literal], frame: Any, text: str) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    if operand.name not in frame.columns:
        raise ExpressionError(f"no column {operand.name!r} in the table", operand.position, text)
    return frame[operand.name]


def _evaluate(node: Node, frame: Any, text: str) -> Any:
    import pandas as pd

    if isinstance(node, BoolOp):
        masks = [_evaluate(o, frame, text) for o in node.operands]
        out = masks[0]
        for m in masks[1:]:
            out = (out & m) if node.op == "and" else (out | m)
        return out
    if isinstance(node, Not):
        return ~_evaluate(node.operand, frame, text)
    if isinstance(node, BoolColumn):
        values = _series(node.column, frame, text)
        if not pd.api.types.is_bool_dtype(values):
            raise ExpressionError(f"column {node.column.name!r} is not boolean: compare it with a value",
                                  node.column.position, text)
        return values.fillna(False).astype(bool)
    if isinstance(node, Membership):
        return _isin(_series(node.column, frame, text), node.values, node.negated)
    out = None
    for op, a, b in zip(node.ops, node.operands, node.operands[1:]):
        left, right = _series(a, frame, text), _series(b, frame, text)
        try:
            result = _OPERATORS[op](left, right)
        except (TypeError, ValueError) as exc:
            raise ExpressionError(f"cannot compare with {op}: {exc}", node.position, text) from None
        if not isinstance(result, pd.Series):  # literal vs literal cannot happen (a column is required)
            result = pd.Series(bool(result), index=frame.index)
        out = result if out is None else (out & result)
    return out


def _isin(values: Any, wanted: tuple[Any, ...], negated: bool) -> Any:
    mask = values.isin(list(wanted))
    return ~mask if negated else mask
