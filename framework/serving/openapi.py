"""The OpenAPI 3.1 document of the ingress's whole HTTP API, served at ``GET /openapi.json``.

Written by hand from one table (``ENDPOINTS``); ``tests/integration/test_serving_oip.py`` checks
that its paths and methods are exactly the routes the ingress answers, so the two cannot drift.
"""
from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .jsonio import dumps

CLIENT, ADMIN, OPEN = "client", "admin", "open"

_ERROR = {"type": "object", "properties": {
    "error": {"type": "object", "properties": {"field": {"type": ["string", "null"]}, "reason": {"type": "string"}}},
    "request_id": {"type": "string"}, "correlation_id": {"type": "string"}}}
_OIP_ERROR = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
_INSTANCES = {"type": "object", "properties": {
    "instances": {"type": "array", "items": {"type": "object", "description": "feature: value (null: missing)"},
                  "maxItems": 1024},
    "instance": {"type": "object"}, "key": {"type": "string", "maxLength": 256}, "explain": {"type": "boolean"}}}
_TENSOR = {"type": "object", "required": ["name", "shape", "datatype", "data"], "properties": {
    "name": {"type": "string"}, "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "datatype": {"enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                          "FP16", "FP32", "FP64", "BYTES"]},
    "parameters": {"type": "object"}, "data": {"type": "array"}}}
_INFER_REQUEST = {"type": "object", "required": ["inputs"], "properties": {
    "id": {"type": "string", "maxLength": 128}, "parameters": {"type": "object", "properties": {"key": {"type": "string"}}},
    "inputs": {"type": "array", "items": _TENSOR, "minItems": 1},
    "outputs": {"type": "array", "items": {"type": "object", "properties": {"name": {"enum": ["predictions", "probabilities"]}}}}}}
_INFER_RESPONSE = {"type": "object", "properties": {
    "model_name": {"type": "string"}, "model_version": {"type": "string"}, "id": {"type": "string"},
    "parameters": {"type": "object", "properties": {"request_id": {"type": "string"}, "arm": {"type": "string"}}},
    "outputs": {"type": "array", "items": _TENSOR}}}

#: (method, path, who may call it, summary, request body schema or None, answer schema)
ENDPOINTS: tuple[tuple[str, str, str, str, Any, Any], ...] = (
    ("POST", "/predict", CLIENT, "Predict: the traffic strategy picks the arm; answers predictions, "
     "probabilities, model_version, arm, request_id", _INSTANCES, {"type": "object"}),
    ("POST", "/rank", CLIENT, "Rank item_ids by the rank class's probability", _INSTANCES, {"type": "object"}),
    ("POST", "/feedback", CLIENT, "Feedback (label, reward, clicks) on answers named by request_id",
     {"type": "object"}, {"type": "object"}),
    ("POST", "/lookup", CLIENT, "A precomputed answer by key (prediction, computed_at, age_s, stale); a key not "
     "precomputed is predicted online from 'instance' when the table's fallback is online, else 404",
     {"type": "object", "required": ["key"], "properties": {"key": {"type": "string"}, "instance": {"type": "object"}}},
     {"type": "object"}),
    ("GET", "/healthz", OPEN, "Liveness and the served model versions", None, {"type": "object"}),
    ("GET", "/schema", OPEN, "The input schema: features, types, nullability, categories, classes", None,
     {"type": "object"}),
    ("GET", "/openapi.json", OPEN, "This document", None, {"type": "object"}),
    ("GET", "/metrics", OPEN, "Prometheus metrics (text exposition): counts and timings, no rows", None,
     {"type": "string"}),
    ("GET", "/-/records", ADMIN, "Recently served rows (columns)", None, {"type": "object"}),
    ("GET", "/-/strategy", ADMIN, "The strategy's state, feedback and shadow counters", None, {"type": "object"}),
    ("GET", "/-/events", ADMIN, "Promote / rollback events since an index (?since=N)", None, {"type": "object"}),
    ("POST", "/-/admin/promote", ADMIN, "Promote the challenger now", {"type": "object"}, {"type": "object"}),
    ("POST", "/-/admin/rollback", ADMIN, "Roll back to the champion now", {"type": "object"}, {"type": "object"}),
    ("POST", "/-/admin/weights", ADMIN, "Set the arms' traffic weights", {"type": "object"}, {"type": "object"}),
    ("POST", "/-/admin/lookup", ADMIN, "Load a prediction table for /lookup (path, table, model_version, "
     "max_age_s, fallback); an empty body reads the current one's figures", {"type": "object"}, {"type": "object"}),
    ("POST", "/-/admin/record-log/restart", ADMIN, "Restart the record log's writer", None, {"type": "object"}),
    ("GET", "/v2", OPEN, "Open Inference Protocol: server metadata", None, {"type": "object"}),
    ("GET", "/v2/health/live", OPEN, "Open Inference Protocol: server live", None, {"type": "object"}),
    ("GET", "/v2/health/ready", OPEN, "Open Inference Protocol: server ready", None, {"type": "object"}),
    ("GET", "/v2/models/{name}", OPEN, "Open Inference Protocol: model metadata (inputs, outputs, versions)",
     None, {"type": "object"}),
    ("GET", "/v2/models/{name}/ready", OPEN, "Open Inference Protocol: model ready", None, {"type": "object"}),
    ("GET", "/v2/models/{name}/versions/{version}", OPEN, "Open Inference Protocol: one version's metadata",
     None, {"type": "object"}),
    ("POST", "/v2/models/{name}/infer", CLIENT, "Open Inference Protocol: infer; the traffic strategy picks "
     "the version", _INFER_REQUEST, _INFER_RESPONSE),
    ("POST", "/v2/models/{name}/versions/{version}/infer", CLIENT, "Open Inference Protocol: infer on that "
     "version (not routed by the strategy)", _INFER_REQUEST, _INFER_RESPONSE),
)


def openapi_document() -> dict:
    paths: dict[str, dict] = {}
    for method, path, who, summary, request, answer in ENDPOINTS:
        v2 = path.startswith("/v2")
        error = {"content": {"application/json": {"schema": _OIP_ERROR if v2 else _ERROR}}}
        op: dict[str, Any] = {
            "summary": summary,
            "responses": {"200": {"description": "OK", "content": {
                "text/plain" if answer.get("type") == "string" else "application/json": {"schema": answer}}},
                          "4XX": {"description": "the client's mistake, named", **error},
                          "5XX": {"description": "the server's failure", **error}},
        }
        if who == CLIENT:
            op["security"] = [{"clientToken": []}, {}]  # only when the app was deployed with a client token
        elif who == ADMIN:
            op["security"] = [{"adminToken": []}]
        if request is not None:
            op["requestBody"] = {"required": True, "content": {"application/json": {"schema": request}}}
        params = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                                for p in params]
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {"title": "framework serving API", "version": "1",
                 "description": "One ingress: the JSON API, the Open Inference Protocol (v2 REST) and the "
                                "admin endpoints (-/). Paths are relative to the app's route prefix."},
        "paths": paths,
        "components": {"securitySchemes": {
            "clientToken": {"type": "http", "scheme": "bearer"},
            "adminToken": {"type": "apiKey", "in": "header", "name": "X-Admin-Token"}}},
    }


def documented_routes() -> set[tuple[str, str]]:
    return {(m, p) for m, p, *_ in ENDPOINTS}


_DOCUMENT = dumps(openapi_document())


async def serve_openapi(request: Request, request_id: str, start: float) -> Response:
    return Response(_DOCUMENT, media_type="application/json")
