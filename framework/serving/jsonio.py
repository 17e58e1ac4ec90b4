"""JSON in and out of the ingress: orjson when it can, the standard library when it cannot.

Measured on a one-instance request of 30 features (benchmarks/ingress_handler.py): orjson reads
the body in ≈ 1.6 µs instead of ≈ 14 µs and writes the answer in ≈ 0.2 µs instead of ≈ 4 µs,
the largest avoidable costs of our handler. What orjson refuses (``NaN`` / ``Infinity``
literals, integers beyond 64 bits, non-UTF-8 text, non-string keys ...) goes to the standard
library, which accepts or rejects it exactly as before: the request contract (which field, which
reason, which status) does not depend on the parser.
"""
from __future__ import annotations

import json
from typing import Any

try:
    import orjson
except ImportError:  # an optional speed-up: everything works without it
    orjson = None


def loads(body: bytes) -> Any:
    """Parse a request body; ValueError (``json.JSONDecodeError``) or UnicodeDecodeError as ``json.loads``."""
    if orjson is not None:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # the standard library decides: it may accept it (NaN, big ints) or say why not
    return json.loads(body)


def dumps(data: Any) -> bytes:
    """Encode an answer as UTF-8 JSON bytes; what JSON cannot hold is written as ``str(value)``."""
    if orjson is not None:
        try:
            return orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
        except (TypeError, orjson.JSONEncodeError):
            pass  # e.g. an integer beyond 64 bits in a strategy's merged answer
    return json.dumps(data, default=str).encode()
