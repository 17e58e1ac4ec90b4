"""framework.serving.jsonio: orjson's speed, the standard library's answers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from framework.serving import jsonio

BODIES = [
    b'{"instances": [{"a": 1.5, "b": -2}]}',
    b'{"a": NaN, "b": Infinity}',  # the standard library reads these (the parser then refuses them)
    b'{"a": 1' + b"0" * 400 + b"}",  # an integer beyond 64 bits
    '{"a": "\u00e9"}'.encode("utf-16"),  # json.loads detects UTF-16
    b'{"a": 1, "a": 2}',
]


@pytest.mark.parametrize("body", BODIES)
def test_loads_answers_as_the_json_module(body):
    got, want = jsonio.loads(body), json.loads(body)
    assert json.dumps(got) == json.dumps(want)


@pytest.mark.parametrize("body", [b'{"instances": [', b"", b"\xff\xfe\xfa", b"[1, 2,]"])
def test_loads_refuses_as_the_json_module(body):
    with pytest.raises((ValueError, UnicodeDecodeError)) as ours:
        jsonio.loads(body)
    with pytest.raises((ValueError, UnicodeDecodeError)) as theirs:
        json.loads(body)
    assert str(ours.value) == str(theirs.value)  # the 400's reason names the same position


def test_dumps_matches_json_module_values():
    probabilities = np.asarray([[0.1, 0.9]], dtype=np.float32)
    body = {"request_id": "r", "predictions": ["b"], "probabilities": probabilities.tolist(), "n": None,
            "obj": object.__name__, 3: "int key", "big": 10**30, "np": np.float32(0.5)}
    assert json.loads(jsonio.dumps(body)) == json.loads(json.dumps(body, default=str))


def test_works_without_orjson(monkeypatch):
    monkeypatch.setattr(jsonio, "orjson", None)
    assert jsonio.loads(b'{"a": [1, 2.5]}') == {"a": [1, 2.5]}
    assert json.loads(jsonio.dumps({"a": [1, 2.5]})) == {"a": [1, 2.5]}
