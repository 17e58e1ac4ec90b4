"""The Open Inference Protocol (KServe / Triton / MLServer "v2" REST) on the ingress.

Routes (all under the app's route prefix): ``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/{name}``, ``/v2/models/{name}/ready``, ``/v2/models/{name}/versions/{version}`` and
``POST /v2/models/{name}/infer`` (the traffic strategy picks the arm, as for ``/predict``) or
``/v2/models/{name}/versions/{version}/infer`` (that version's arm answers, the strategy does
not route it). ``name`` is the Serve application's name; ``version`` a served model version (or
its arm's name).

An infer request carries one named input per feature column (shape ``[n]`` or ``[n, 1]``; a
number feature FP32/FP64/INT*/UINT*, a bool feature BOOL, a category BYTES), or, for a model of
numbers only, one ``[n, features]`` FP32/FP64 tensor named like the model's ONNX input. The
protocol has no missing value: a JSON ``null`` in a nullable feature's data is one. The tensors
become the very instances ``/predict`` takes and go through the same parser, so both endpoints
accept and refuse the same rows and give the same answers.

The answer: ``model_name``, ``model_version`` (which version served it), ``id`` (the request's
``id`` echoed as the protocol requires, else the server's request id), ``parameters``
(``request_id``, the server's id that feedback names, and ``arm``) and the outputs
``predictions`` (BYTES classes, INT64 classes, or FP64 values of a regression) and
``probabilities`` (FP32 ``[n, classes]``). Errors are the protocol's ``{"error": "..."}``, the
message naming the input; a client mistake is a 400 (401 / 413 / 415 as on the JSON API).
"""
from __future__ import annotations

import hmac
import logging
import math
import re
import time
from typing import Any, Mapping, Sequence

import numpy as np
from starlette.requests import Request
from starlette.responses import Response

from ..components import Outcome
from ..errors import RequestError
from .arms import ArmFailure
from .jsonio import dumps
from .requests import MAX_BODY_BYTES, ParsedRequest, describe_value, list_names, load_json, short_value

log = logging.getLogger("ray.serve")

JSON_TYPE = "application/json"
SERVER_NAME = "framework"
#: an infer request's ``id`` longer than this is refused (it is echoed and recorded)
MAX_ID_CHARS = 128
MAX_KEY_CHARS = 256

_INT_RANGES = {
    "INT8": (-2**7, 2**7 - 1), "INT16": (-2**15, 2**15 - 1), "INT32": (-2**31, 2**31 - 1),
    "INT64": (-2**63, 2**63 - 1), "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1),
    "UINT32": (0, 2**32 - 1), "UINT64": (0, 2**64 - 1),
}
_FLOATS = ("FP16", "FP32", "FP64")
DATATYPES = ("BOOL", *_INT_RANGES, *_FLOATS, "BYTES")
#: what a feature of each type takes, and the datatype its metadata announces
_FEATURE_DATATYPES = {
    "float": (frozenset(_FLOATS) | frozenset(_INT_RANGES), "FP32"),
    "int": (frozenset(_FLOATS) | frozenset(_INT_RANGES), "INT64"),
    "bool": (frozenset({"BOOL"}), "BOOL"),
    "category": (frozenset({"BYTES"}), "BYTES"),
}
_INFER_FIELDS = ("id", "parameters", "inputs", "outputs")
_INPUT_FIELDS = ("name", "shape", "datatype", "parameters", "data")
OUTPUTS = ("predictions", "probabilities")
_INSTANCE_FIELD = re.compile(r"^instances\[(\d+)\]\.(.+)$")


class OipError(Exception):
    """A protocol-level failure: answered as ``{"error": message}`` with ``status``."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = message
        self.status = status

    def __reduce__(self):
        return type(self), (self.message, self.status)


# ---------------------------------------------------------------------------------------------
# Tensors in: pure functions, no HTTP
# ---------------------------------------------------------------------------------------------
def parse_infer(data: Any, schema: Any, matrix_input: str | None, parser: Any) -> tuple[ParsedRequest, str | None, list[str], str | None]:
    """An infer body -> (the parsed rows as ``/predict`` parses them, the client's id, the outputs
    asked for, the routing key). ``matrix_input``: the ONNX input name a model of numbers only
    also takes as one ``[n, features]`` tensor (None: per-feature inputs only)."""
    if not isinstance(data, dict):
        raise OipError(f"body: expected a JSON object, got {describe_value(data)}")
    for k in data:
        if k not in _INFER_FIELDS:
            raise OipError(f"{_cut(k)}: unknown field of an infer request; expected only: {', '.join(_INFER_FIELDS)}")
    client_id = data.get("id")
    if client_id is not None:
        if not isinstance(client_id, str) or len(client_id) > MAX_ID_CHARS or not client_id.isprintable():
            raise OipError(f"id: expected a string of at most {MAX_ID_CHARS} printable characters")
    parameters = data.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise OipError(f"parameters: expected an object, got {describe_value(parameters)}")
    key = parameters.get("key")
    if key is not None:
        if isinstance(key, bool) or not isinstance(key, (str, int)) or len(str(key)) > MAX_KEY_CHARS:
            raise OipError(f"parameters.key: expected a string of at most {MAX_KEY_CHARS} characters")
        key = str(key)
    outputs = _requested_outputs(data.get("outputs"))
    inputs = data.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise OipError('inputs: expected a non-empty list of tensors {"name", "shape", "datatype", "data"}')
    tensors = _plain_tensors(inputs)
    if tensors is None:
        tensors = _checked_tensors(inputs)
    limit = parser.max_instances
    if matrix_input is not None and matrix_input in tensors:
        if len(tensors) > 1:
            other = next(n for n in tensors if n != matrix_input)
            raise OipError(f"input '{_cut(other)}': unknown input beside the matrix input '{matrix_input}'; "
                           "send either the matrix or one input per feature")
        return _matrix(tensors[matrix_input], schema, parser, limit), client_id, outputs, key
    columns = _fast_columns(tensors, schema.features, limit)
    if columns is None:  # something is off: the careful path names what
        columns = _checked_columns(tensors, schema, matrix_input, limit)
    names = schema.names
    instances = [dict(zip(names, row)) for row in zip(*(columns[nm] for nm in names))]
    try:
        parsed = parser.parse({"instances": instances})
    except RequestError as exc:
        raise _named(exc) from None
    parsed.key = key
    return parsed, client_id, outputs, key


_PLAIN_FIELDS = frozenset(("name", "shape", "datatype", "data"))


def _plain_tensors(inputs: list) -> dict | None:
    """name -> tensor when every tensor is a plain object of those four fields with a unique
    string name (checked at C speed), else None: the careful path then names what is off."""
    if not all(type(t) is dict and t.keys() <= _PLAIN_FIELDS for t in inputs):
        return None
    tensors = {t.get("name"): t for t in inputs}
    if len(tensors) != len(inputs) or not all(type(n) is str for n in tensors):
        return None
    return tensors


def _checked_tensors(inputs: list) -> dict:
    tensors: dict[str, dict] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise OipError(f"inputs[{i}]: expected a tensor object, got {describe_value(tensor)}")
        name = tensor.get("name")
        if not isinstance(name, str):
            raise OipError(f"inputs[{i}].name: expected the input's name (a string), got {describe_value(name)}")
        if name in tensors:
            raise OipError(f"input '{_cut(name)}': given twice")
        for k in tensor:
            if k not in _INPUT_FIELDS:
                raise OipError(f"input '{_cut(name)}': unknown field '{_cut(k)}'; expected only: {', '.join(_INPUT_FIELDS)}")
        if (tensor.get("parameters") or {}).get("binary_data_size") is not None:
            raise OipError(f"input '{_cut(name)}': the binary tensor data extension is not supported; send JSON data")
        tensors[name] = tensor
    return tensors


#: datatype -> what its values must be: s(tring), b(ool), i(nteger, with a range), f(loat)
_VALUE_KIND = {"BYTES": "s", "BOOL": "b", **{d: "i" for d in _INT_RANGES}, **{d: "f" for d in _FLOATS}}


def _fast_columns(tensors: dict, features: list, limit: int) -> dict | None:
    """The well-formed request's columns in one pass (≈ 5 µs for 7 one-row inputs), or None to
    take the careful path, which finds and names what is wrong."""
    if len(tensors) != len(features):
        return None
    n = None
    columns = {}
    for f in features:
        t = tensors.get(f.name)
        if t is None:
            return None
        datatype = t.get("datatype")
        if datatype not in _FEATURE_DATATYPES.get(f.dtype, _FEATURE_DATATYPES["float"])[0]:
            return None
        data, shape = t.get("data"), t.get("shape")
        if type(data) is not list or not data:
            return None
        if n is None:
            n = len(data)
            if n > limit:
                return None
        if len(data) != n or (shape != [n] and shape != [n, 1]) or type(data[0]) is list:
            return None
        kind = _VALUE_KIND[datatype]
        if kind == "f":
            if any(type(v) is not float and type(v) is not int and v is not None for v in data):
                return None
        elif kind == "s":
            if any(type(v) is not str and v is not None for v in data):
                return None
        elif kind == "b":
            if any(type(v) is not bool and v is not None for v in data):
                return None
        else:
            low, high = _INT_RANGES[datatype]
            if any(v is not None and (type(v) is not int or not low <= v <= high) for v in data):
                return None
        columns[f.name] = data
    return columns


def _checked_columns(tensors: dict, schema: Any, matrix_input: str | None, limit: int) -> dict:
    """Every input checked in turn; the first problem raised as an OipError naming the input."""
    features = {f.name: f for f in schema.features}
    for name in tensors:
        if name not in features:
            also = f" (or one matrix input '{matrix_input}')" if matrix_input else ""
            raise OipError(f"input '{_cut(name)}': unknown input; expected one per feature: "
                           f"{list_names(schema.names)}{also}")
    n = None
    columns: dict[str, list] = {}
    for f in schema.features:
        tensor = tensors.get(f.name)
        if tensor is None:
            raise OipError(f"input '{f.name}': missing (one input per feature; send null data for a missing value)")
        values = _column(tensor, f, limit)
        if n is None:
            n = len(values)
        elif len(values) != n:
            raise OipError(f"input '{f.name}': shape [{len(values)}] but input '{schema.features[0].name}' has "
                           f"[{n}]: every input holds one value per row")
        columns[f.name] = values
    return columns


def _requested_outputs(value: Any) -> list[str]:
    if value is None:
        return list(OUTPUTS)
    if not isinstance(value, list):
        raise OipError(f"outputs: expected a list of {{\"name\": ...}}, got {describe_value(value)}")
    wanted = []
    for i, out in enumerate(value):
        name = out.get("name") if isinstance(out, dict) else None
        if name not in OUTPUTS:
            raise OipError(f"outputs[{i}]: unknown output {short_value(name)}; outputs: {', '.join(OUTPUTS)}")
        wanted.append(name)
    return wanted


def _shape(tensor: dict, name: str) -> list[int]:
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise OipError(f"input '{name}': shape must be a list of non-negative integers, got {short_value(shape)}")
    return shape


def _flat(tensor: dict, name: str, shape: list[int]) -> list:
    """The tensor's data, row-major; nested lists (as the protocol also allows) flattened."""
    data = tensor.get("data")
    if not isinstance(data, list):
        raise OipError(f"input '{name}': data must be a list, got {describe_value(data)}")
    depth = 0
    while data and type(data[0]) is list and depth < len(shape):
        data = [v for part in data for v in (part if type(part) is list else [part])]
        depth += 1
    size = math.prod(shape)
    if len(data) != size:
        raise OipError(f"input '{name}': shape {shape} holds {size} values, data has {len(data)}")
    return data


def _check_datatype(tensor: dict, name: str, allowed: frozenset, what: str) -> str:
    datatype = tensor.get("datatype")
    if datatype not in DATATYPES:
        raise OipError(f"input '{name}': unknown datatype {short_value(datatype)}; datatypes: {', '.join(DATATYPES)}")
    if datatype not in allowed:
        raise OipError(f"input '{name}': datatype {datatype} does not fit {what}; use {', '.join(sorted(allowed))}")
    return datatype


def _column(tensor: dict, feature: Any, limit: int) -> list:
    name = feature.name
    allowed, _ = _FEATURE_DATATYPES.get(feature.dtype, _FEATURE_DATATYPES["float"])
    datatype = _check_datatype(tensor, name, allowed, f"a {feature.dtype} feature")
    shape = _shape(tensor, name)
    if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
        raise OipError(f"input '{name}': shape {shape}; a feature's input is [rows] or [rows, 1]")
    if shape[0] == 0:
        raise OipError(f"input '{name}': shape {shape} has no rows; send at least one")
    if shape[0] > limit:
        raise OipError(f"input '{name}': {shape[0]} rows exceed the limit of {limit} per request", 413)
    values = _flat(tensor, name, shape)
    for i, v in enumerate(values):
        if v is None:
            continue  # the parser refuses it unless the feature is nullable
        if not _fits(v, datatype):
            raise OipError(f"input '{name}': data[{i}] is {describe_value(v)}, not a {datatype} value")
    return values


def _fits(v: Any, datatype: str) -> bool:
    if datatype == "BYTES":
        return type(v) is str
    if datatype == "BOOL":
        return type(v) is bool
    if datatype in _INT_RANGES:
        low, high = _INT_RANGES[datatype]
        return type(v) is int and low <= v <= high
    return type(v) in (int, float)


def _matrix(tensor: dict, schema: Any, parser: Any, limit: int) -> ParsedRequest:
    name = tensor["name"]
    _check_datatype(tensor, name, frozenset(_FLOATS) | frozenset(_INT_RANGES), "the model's number matrix")
    shape = _shape(tensor, name)
    n_features = len(schema.features)
    if len(shape) != 2 or shape[1] != n_features:
        raise OipError(f"input '{name}': shape {shape}; expected [rows, {n_features}] (one column per feature: "
                       f"{list_names(schema.names)})")
    if shape[0] == 0:
        raise OipError(f"input '{name}': shape {shape} has no rows; send at least one")
    if shape[0] > limit:
        raise OipError(f"input '{name}': {shape[0]} rows exceed the limit of {limit} per request", 413)
    values = _flat(tensor, name, shape)
    if not all(type(v) in (int, float) for v in values):
        bad = next(i for i, v in enumerate(values) if type(v) not in (int, float))
        raise OipError(f"input '{name}': data[{bad}] is {describe_value(values[bad])}, not a number")
    with np.errstate(over="ignore"):
        x = np.asarray(values, dtype=np.float32).reshape(shape[0], n_features)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x.ravel()))[0])
        raise OipError(f"input '{name}': data[{bad}] is not a finite float32 number")
    integer = [i for i, f in enumerate(schema.features) if f.dtype == "int"]
    if integer and not np.all(x[:, integer] == np.round(x[:, integer])):
        raise OipError(f"input '{name}': an integer feature ({list_names([schema.names[i] for i in integer])}) "
                       "holds a fraction")
    return ParsedRequest(x=x, rows=x.tolist(), key=None)


def _named(exc: RequestError) -> OipError:
    """The JSON parser's error, renamed after the input: ``instances[3].Make`` -> input 'Make', row 3."""
    m = _INSTANCE_FIELD.match(exc.field or "")
    status = 400 if exc.status == 422 else exc.status
    if m:
        return OipError(f"input '{m.group(2)}': row {m.group(1)}: {exc.reason}", status)
    return OipError(f"{exc.field}: {exc.reason}", status)


# ---------------------------------------------------------------------------------------------
# Tensors out, and metadata
# ---------------------------------------------------------------------------------------------
def predictions_tensor(labels: list, regression: bool) -> dict:
    if regression:
        datatype = "FP64"
    elif all(type(v) is int for v in labels):
        datatype = "INT64"
    elif all(type(v) is bool for v in labels):
        datatype = "BOOL"
    else:
        datatype, labels = "BYTES", [str(v) for v in labels]
    return {"name": "predictions", "datatype": datatype, "shape": [len(labels)], "data": labels}


def probabilities_tensor(probabilities: np.ndarray) -> dict:
    return {"name": "probabilities", "datatype": "FP32", "shape": list(probabilities.shape),
            "data": probabilities.ravel().tolist()}


def model_metadata(name: str, versions: Sequence[str], schema: Any, classes: list, regression: bool,
                   matrix_input: str | None) -> dict:
    inputs = [{"name": f.name, "datatype": _FEATURE_DATATYPES.get(f.dtype, _FEATURE_DATATYPES["float"])[1],
               "shape": [-1]} for f in schema.features]
    outputs = [predictions_tensor(list(classes), regression) | {"shape": [-1]}]
    outputs[0].pop("data")
    if not regression:
        outputs.append({"name": "probabilities", "datatype": "FP32", "shape": [-1, len(classes)]})
    body = {"name": name, "versions": list(versions), "platform": "onnxruntime_onnx", "inputs": inputs,
            "outputs": outputs, "parameters": {"features": schema.to_dict()["features"]}}
    if not regression:
        body["parameters"]["classes"] = list(classes)
    if matrix_input is not None:
        body["parameters"]["matrix_input"] = {"name": matrix_input, "datatype": "FP32",
                                              "shape": [-1, len(schema.features)]}
    return body


def _cut(text: Any, limit: int = 60) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# The routes, on an ingress replica
# ---------------------------------------------------------------------------------------------
#: the route patterns, for the OpenAPI document and its test (name and version are path parameters)
ROUTES = (
    ("GET", "/v2"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
    ("GET", "/v2/models/{name}"), ("GET", "/v2/models/{name}/ready"),
    ("GET", "/v2/models/{name}/versions/{version}"),
    ("POST", "/v2/models/{name}/infer"), ("POST", "/v2/models/{name}/versions/{version}/infer"),
)


class OipApi:
    """The protocol's routes on one ingress replica (``framework.serving.http.Ingress``): it uses
    the ingress's strategy host, arms and record path, and the same client-token, content-type and
    body-size rules as the JSON endpoints."""

    def __init__(self, ingress: Any, model: Any):
        self.ingress = ingress
        self.schema = model.schema
        # one float matrix is also accepted from a model of numbers only (the JSON fast path)
        self.matrix_input = None if getattr(model, "inputs", None) is not None else model.input_name
        self.name: str | None = None

    def model_name(self) -> str:
        """The Serve application's name (read once in the replica; ``model`` outside Serve)."""
        if self.name is None:
            try:
                from ray import serve

                self.name = serve.get_replica_context().app_name
            except Exception:  # constructed outside a Serve replica (benchmarks, unit tests)
                self.name = "model"
        return self.name

    async def handle(self, request: Request, path: str, request_id: str, correlation_id: str | None,
                     start: float) -> Response:
        try:
            return await self._route(request, path, request_id, correlation_id, start)
        except OipError as exc:
            return _error(exc.status, exc.message)
        except RequestError as exc:
            return _error(400 if exc.status == 422 else exc.status, f"{exc.field}: {exc.reason}")
        except ArmFailure as exc:  # the server's failure, not the client's: 503, the client may retry
            return _error(503, f"arm '{exc.arm}': {exc.reason}")
        except Exception as exc:  # our fault: logged, answered as a 500
            log.exception("v2 request %s to %s failed", request_id, path)
            return _error(500, f"internal error: {type(exc).__name__}")

    async def _route(self, request: Request, path: str, request_id: str, correlation_id: str | None,
                     start: float) -> Response:
        method = request.method
        parts = path.strip("/").split("/")  # "v2", ...
        rest = parts[1:]
        if rest and rest[0] == "models" and len(rest) >= 2:
            name, tail = rest[1], rest[2:]
            arm = None
            if len(tail) >= 2 and tail[0] == "versions":
                arm = self._arm(name, tail[1])
                tail = tail[2:]
            else:
                self._check_name(name)
            if tail == ["infer"]:
                self._method(method, "POST", path)
                return await self._infer(request, request_id, correlation_id, start, arm)
            self._method(method, "GET", path)
            if not tail:
                return self._metadata([self.ingress.versions[arm]] if arm else list(self.ingress.versions.values()))
            if tail == ["ready"]:
                return _json({"name": self.model_name(), "ready": True})
        else:
            self._method(method, "GET", path)
            if not rest:
                return _json({"name": SERVER_NAME, "version": _framework_version(), "extensions": []})
            if rest == ["health", "live"]:
                return _json({"live": True})
            if rest == ["health", "ready"]:
                return _json({"ready": True})
        raise OipError(f"no endpoint {path}; see GET openapi.json", 404)

    @staticmethod
    def _method(given: str, wanted: str, path: str) -> None:
        if given != wanted:
            raise OipError(f"use {wanted} for {path.lstrip('/')}, not {given}", 405)

    def _check_name(self, name: str) -> None:
        if name != self.model_name():
            raise OipError(f"model '{_cut(name)}' is not served here; models: {self.model_name()}", 404)

    def _arm(self, name: str, version: str) -> str:
        self._check_name(name)
        for arm, v in self.ingress.versions.items():
            if version in (v, arm):
                return arm
        raise OipError(f"model '{name}' has no version '{_cut(version)}'; versions: "
                       f"{', '.join(self.ingress.versions.values())}", 404)

    def _metadata(self, versions: list[str]) -> Response:
        first = next(iter(self.ingress.versions))
        arms = self.ingress.arms
        return _json(model_metadata(self.model_name(), versions, self.schema, arms.classes[first],
                                    first in arms.regression, self.matrix_input))

    async def _body(self, request: Request) -> Any:
        # the JSON endpoints' rules (http.py): JSON content type only, bounded size and depth
        given = request.headers.get("content-type")
        if given is not None and given.split(";", 1)[0].strip().lower() != JSON_TYPE:
            raise OipError(f"Content-Type: expected {JSON_TYPE}, got {_cut(given)}", 415)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
            raise OipError(f"body: request body of {length} bytes exceeds {MAX_BODY_BYTES}", 413)
        body = await request.body()
        if body and given is None:
            raise OipError(f"Content-Type: send the body as {JSON_TYPE}", 415)
        return load_json(body)

    def _check_client(self, request: Request) -> None:
        expected = self.ingress.client_token
        if expected is not None:
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                raise OipError("Authorization: missing or wrong client token (Authorization: Bearer TOKEN)", 401)

    async def _infer(self, request: Request, request_id: str, correlation_id: str | None, start: float,
                     pinned: str | None) -> Response:
        ingress = self.ingress
        self._check_client(request)
        data = await self._body(request)
        parsed, client_id, wanted, key = parse_infer(data, self.schema, self.matrix_input, ingress.parser)
        header_key = request.headers.get("x-user-id")
        if header_key is not None and len(header_key) > MAX_KEY_CHARS:
            raise OipError(f"X-User-Id: longer than {MAX_KEY_CHARS} characters")
        shadows: tuple = ()
        if pinned is None:
            _, route = ingress.host.route(request_id, header_key or key)
            arm = route.primary  # a merging strategy (interleaving) merges rankings: v2 gets the primary's
            shadows = () if route.merge else route.shadows
        else:
            arm = pinned
        version = ingress.versions[arm]
        out = await ingress.arms.run_primary(arm, parsed.x, request_id, start)
        labels = ingress.labeler[arm](out)
        latency_ms = (time.perf_counter() - start) * 1000.0
        ingress.host.observe(Outcome(request_id, arm, latency_ms, prediction=labels))
        regression = arm in ingress.arms.regression
        outputs = []
        for name in wanted:
            if name == "predictions":
                outputs.append(predictions_tensor(labels, regression))
            elif not regression:
                outputs.append(probabilities_tensor(out))
            else:
                raise OipError("outputs: a regression has no probabilities; ask for predictions")
        parameters = {"request_id": request_id, "arm": arm}
        if correlation_id is not None:
            parameters["correlation_id"] = correlation_id
        body = {"model_name": self.model_name(), "model_version": version, "id": client_id or request_id,
                "parameters": parameters, "outputs": outputs}
        payload = dumps(body)
        # recorded exactly as a /predict answer (record buffer, feedback ledger, record log)
        ingress.record_answer(parsed.rows, labels, version, arm, latency_ms, request_id, client_id or correlation_id,
                        labels[0] if len(labels) == 1 else labels, "predict", None if regression else out.tolist())
        if shadows:
            ingress.arms.spawn_shadows(shadows, arm, parsed.x, request_id, None)
        return Response(payload, media_type=JSON_TYPE, headers={"X-Model-Version": version})


def _framework_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("framework")
    except PackageNotFoundError:
        return "unknown"


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON_TYPE)


def _error(status: int, message: str) -> Response:
    return Response(dumps({"error": message}), status_code=status, media_type=JSON_TYPE)


def routes() -> Mapping[str, tuple[str, ...]]:
    """path pattern -> methods (the OpenAPI document's v2 part)."""
    out: dict[str, tuple[str, ...]] = {}
    for method, path in ROUTES:
        out[path] = out.get(path, ()) + (method,)
    return out
