"""Precomputed answers served by key: ``POST /lookup`` answers from a prediction table.

The batch stage stores a prediction table (``key``, ``prediction``, ``computed_at``) and pushes
it into the running app (``POST -/admin/lookup``: where the Parquet file is, its version, the
model version that made it, ``max_age_s`` and the fallback); the ingress replica loads it into
memory (a pandas index: one hash probe per request) and swaps it in between two requests, so the
service keeps answering while a new table is computed.

``POST /lookup`` ``{"key": "u1", "instance": {...}}``: a precomputed key answers with its
``prediction``, ``computed_at``, ``age_s`` and ``stale`` (older than ``max_age_s``); a key that
was not precomputed is predicted online from ``instance`` when the table's fallback is
``online`` (``source: "online"``, the traffic strategy choosing the arm as for ``/predict``),
otherwise (or without an instance) it gets a 404 naming the key.
"""
from __future__ import annotations

import os
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..components import Outcome
from ..errors import RequestError
from .jsonio import dumps
from .requests import describe_value, load_json

JSON_TYPE = "application/json"
MAX_KEY_CHARS = 256
_LOAD_FIELDS = ("path", "table", "model_version", "max_age_s", "fallback")


class PrecomputedTable:
    """One prediction table in memory: key -> (prediction, computed_at as epoch seconds)."""

    def __init__(self, frame: Any, table: str, model_version: str | None, max_age_s: float, fallback: str):
        import pandas as pd

        frame = frame.drop_duplicates("key", keep="last")
        self.index = pd.Index(frame["key"].astype(str).to_numpy())
        self.predictions = frame["prediction"].tolist()
        computed = pd.to_datetime(frame["computed_at"], utc=True)
        # epoch seconds whatever the stored resolution (Parquet may give ns, us or ms)
        self.computed_at = ((computed - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).tolist()
        self.computed_iso = [t.isoformat() for t in computed]
        self.table = table
        self.model_version = model_version
        self.max_age_s = float(max_age_s)
        self.fallback = fallback
        self.loaded_at = time.time()
        self.oldest = min(self.computed_at) if self.computed_at else None

    @classmethod
    def read(cls, path: str, table: str, model_version: str | None, max_age_s: float, fallback: str) -> "PrecomputedTable":
        import pandas as pd

        return cls(pd.read_parquet(path, columns=["key", "prediction", "computed_at"]), table, model_version,
                   max_age_s, fallback)

    def find(self, key: str) -> dict | None:
        try:
            i = self.index.get_loc(key)
        except KeyError:
            return None
        if not isinstance(i, int):  # duplicates were dropped on load; defensive
            return None
        age = max(0.0, time.time() - self.computed_at[i])
        return {"prediction": self.predictions[i], "computed_at": self.computed_iso[i], "age_s": round(age, 3),
                "stale": bool(self.max_age_s and age > self.max_age_s)}

    def summary(self) -> dict:
        age = None if self.oldest is None else round(time.time() - self.oldest, 3)
        return {"table": self.table, "model_version": self.model_version, "keys": len(self.index),
                "max_age_s": self.max_age_s, "fallback": self.fallback, "oldest_age_s": age,
                "stale": bool(self.max_age_s and age is not None and age > self.max_age_s)}


class LookupApi:
    """``POST /lookup`` and ``POST -/admin/lookup`` on one ingress replica (``http.Ingress``)."""

    def __init__(self, ingress: Any):
        self.ingress = ingress
        self.table: PrecomputedTable | None = None
        self.counts = {"precomputed": 0, "online": 0, "missing": 0, "stale": 0}

    async def lookup(self, request: Request, request_id: str, start: float) -> Response:
        ingress = self.ingress
        data = load_json(await ingress.read_body(request))  # the JSON endpoints' size and content-type rules
        if not isinstance(data, dict):
            raise RequestError("body", f"expected a JSON object, got {describe_value(data)}")
        for k in data:
            if k not in ("key", "instance"):
                raise RequestError(str(k)[:60], 'unknown field; send {"key": "...", "instance": {...}}')
        key = data.get("key")
        if isinstance(key, bool) or not isinstance(key, (str, int)) or len(str(key)) > MAX_KEY_CHARS:
            raise RequestError("key", f"expected a string of at most {MAX_KEY_CHARS} characters, got {describe_value(key)}")
        key = str(key)
        table = self.table
        found = table.find(key) if table is not None else None
        if found is not None:
            self.counts["precomputed"] += 1
            self.counts["stale"] += found["stale"]
            return _json({"request_id": request_id, "key": key, "source": "precomputed", **found,
                          "table": table.table, "model_version": table.model_version})
        if table is None:
            raise RequestError("key", "no prediction table is loaded yet (the batch stage loads one)", 404)
        instance = data.get("instance")
        if table.fallback != "online" or instance is None:
            self.counts["missing"] += 1
            why = ("and this app does not predict missing keys online (batch.lookup.fallback: none)"
                   if table.fallback != "online" else "; send its instance to have it predicted online")
            raise RequestError("key", f"'{key[:60]}' was not precomputed in {table.table} {why}", 404)
        parsed = ingress.parser.parse({"instance": instance})
        _, route = ingress.host.route(request_id, key)
        arm = route.primary
        version = ingress.versions[arm]
        out = await ingress.arms.run_primary(arm, parsed.x, request_id, start)
        labels = ingress.labeler[arm](out)
        latency_ms = (time.perf_counter() - start) * 1000.0
        ingress.host.observe(Outcome(request_id, arm, latency_ms, prediction=labels))
        self.counts["online"] += 1
        # recorded exactly as a /predict answer (record buffer, feedback ledger, record log)
        ingress.record_answer(parsed.rows, labels, version, arm, latency_ms, request_id,
                        request.scope.get("framework.correlation_id"), labels[0], "predict",
                        None if arm in ingress.arms.regression else out.tolist())
        return _json({"request_id": request_id, "key": key, "source": "online", "prediction": labels[0],
                      "age_s": 0.0, "stale": False, "model_version": version, "arm": arm})

    async def admin_load(self, request: Request, request_id: str, start: float) -> Response:
        """Load a prediction table (admin): ``{"path", "table", "model_version", "max_age_s", "fallback"}``."""
        data = await self.ingress.read_admin_body(request, _LOAD_FIELDS)
        if not data:  # an empty body reads the current table's figures
            return _json({"lookup": self.summary()})
        path, table = data.get("path"), data.get("table")
        if not isinstance(path, str) or not isinstance(table, str):
            raise RequestError("path", "expected the prediction table's Parquet path and its version ('table')")
        if "://" not in path and not os.path.isfile(path):  # a folder would be read as a whole dataset
            raise RequestError("path", f"not a file: {path[:200]}", 422)
        fallback = data.get("fallback", "online")
        if fallback not in ("online", "none"):
            raise RequestError("fallback", f"expected 'online' or 'none', got {describe_value(fallback)}")
        max_age = data.get("max_age_s", 0)
        if isinstance(max_age, bool) or not isinstance(max_age, (int, float)) or not max_age >= 0:
            raise RequestError("max_age_s", f"expected seconds >= 0, got {describe_value(max_age)}")
        try:
            loaded = PrecomputedTable.read(path, table, data.get("model_version"), float(max_age), fallback)
        except (OSError, ValueError, KeyError) as exc:
            raise RequestError("path", f"cannot read the prediction table: {type(exc).__name__}: {str(exc)[:200]}", 422)
        self.table = loaded  # swapped between two requests: the event loop runs one at a time
        return _json({"lookup": self.summary()})

    def summary(self) -> dict:
        return {**(self.table.summary() if self.table is not None else {"table": None}), "answers": dict(self.counts)}


def _json(data: Any, status: int = 200) -> Response:
    return Response(dumps(data), status_code=status, media_type=JSON_TYPE)
