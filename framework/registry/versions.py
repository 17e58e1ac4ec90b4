"""What a version is, how its id is computed, how refs parse and how two versions differ.

Pure functions and a dataclass: no I/O here, so ids and diffs are testable without a store.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, Mapping

from ..errors import StoreError

KINDS = ("data", "model", "label", "prediction")
#: the blob of a prediction table (batch prediction): key, prediction, computed_at
PREDICTIONS_FILE = "predictions.parquet"
#: the blob name of a data snapshot inside a version written before chunked tables
DATA_FILE = "data.parquet"
#: a model version's resolved recipe (YAML), stored by the register stage; lineage, so the
#: version id does not cover it (the same model from an equivalent recipe is one version)
RECIPE_FILE = "recipe.yaml"
#: bump when the manifest layout changes incompatibly; readers refuse newer formats.
#: 2: data versions stored as chunks (``table``); models and format-1 data are still written as 1
MANIFEST_FORMAT = 2
#: shorter prefixes collide too easily to be a safe way of naming a version
MIN_PREFIX = 6

_NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
_HEX_RE = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True, eq=True)
class Version:
    """One immutable stored version. ``files`` maps filename -> sha256 of its bytes.

    Frozen so a handle cannot drift from what is stored; the dict fields are not deep-frozen
    (hence "frozen-ish"): mutate a copy, never the handle.
    """

    kind: str
    name: str
    id: str
    parent: str | None
    created_at: str
    files: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)
    #: data versions: the schema given to ``put_data`` (part of the id); empty for models
    schema: dict[str, Any] = field(default_factory=dict)
    #: data versions: how the rows are stored (chunks, row map, index, dtypes), the content
    #: hash, and the batches that added them (``framework.registry.tables``); empty otherwise
    table: dict[str, Any] = field(default_factory=dict)

    # dict fields make the generated hash fail; identity is (kind, name, id)
    def __hash__(self) -> int:
        return hash((self.kind, self.name, self.id))

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.id[:12]}"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def manifest(self) -> dict:
        """The stored JSON: everything but aliases, which change after the version is written."""
        data = self.to_dict()
        data.pop("aliases")
        # only what older readers cannot read gets the newer format number
        data["format"] = 2 if self.table else 1
        if not self.table:
            data.pop("table")
        return data

    @classmethod
    def from_manifest(cls, data: Mapping, aliases: list[str] | None = None, where: str = "") -> "Version":
        try:
            fmt = int(data.get("format", 1))
            if fmt > MANIFEST_FORMAT:
                raise StoreError(
                    f"manifest {where or data.get('id')} has format {fmt}; this framework reads up to "
                    f"{MANIFEST_FORMAT}: upgrade the framework"
                )
            return cls(
                kind=data["kind"],
                name=data["name"],
                id=data["id"],
                parent=data.get("parent"),
                created_at=data["created_at"],
                files=dict(data.get("files") or {}),
                metrics=dict(data.get("metrics") or {}),
                lineage=dict(data.get("lineage") or {}),
                meta=dict(data.get("meta") or {}),
                aliases=sorted(aliases or []),
                schema=dict(data.get("schema") or {}),
                table=dict(data.get("table") or {}),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"corrupt manifest {where or '?'}: {exc!r}") from exc


# ---------------------------------------------------------------------------------------------
# Validation and canonical JSON
# ---------------------------------------------------------------------------------------------
def validate_kind(kind: str) -> str:
    if kind not in KINDS:
        raise StoreError(f"unknown version kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def validate_name(value: Any, what: str = "name") -> str:
    # names become path segments: no separators, no leading dot (hidden / temp files, "..")
    if not isinstance(value, str) or not _NAME_RE.match(value) or value.startswith("."):
        raise StoreError(
            f"invalid {what} {value!r}: use 1-128 characters from A-Z a-z 0-9 _ . - "
            f"(not starting with '.')"
        )
    return value


def _jsonable(value: Any, where: str) -> Any:
    """Plain JSON types only; numpy scalars and paths are converted, anything else refused."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None if math.isnan(value) else str(value)
        return float(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise StoreError(f"{where}: key {k!r} is not a string (manifests are JSON)")
            out[k] = _jsonable(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, PurePath):
        return str(value)
    item = getattr(value, "item", None)  # numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return _jsonable(item(), where)
    raise StoreError(f"{where}: {type(value).__name__} is not JSON-serialisable (manifests are JSON)")


def jsonable_dict(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise StoreError(f"{where}: expected a dict, got {type(value).__name__}")
    return _jsonable(value, where)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------------------------------------
# Content addresses
# ---------------------------------------------------------------------------------------------
def frame_content_hash(frame: Any, where: str = "frame") -> str:
    """Hash of a frame's content independent of how Parquet encodes it: its columns, dtypes
    (categories included), index and one hash per row, so the same table gets the same id
    whatever wrote it or how it is chunked."""
    from .tables import content_hash, describe_frame, row_hashes

    return content_hash(describe_frame(frame, where), row_hashes(frame, where))


def data_version_id(content_hash: str, schema: dict, parent: str | None) -> str:
    return sha256(canonical_json({"kind": "data", "content": content_hash, "schema": schema, "parent": parent}))


def label_version_id(content_hash: str, schema: dict, parent: str | None, data_version: str | None) -> str:
    """A label version's id: its labels (and probabilities), schema, parent and the data version
    whose rows it labels."""
    return sha256(canonical_json({"kind": "label", "content": content_hash, "schema": schema, "parent": parent,
                                  "data_version": data_version}))


def model_version_id(file_hashes: Mapping[str, str], parent: str | None) -> str:
    # metrics and lineage (the recipe file too) stay out: re-registering the same artefact must
    # not fork a new version
    files = {f: h for f, h in file_hashes.items() if f != RECIPE_FILE}
    return sha256(canonical_json({"kind": "model", "files": files, "parent": parent}))


def recomputed_id(manifest: Mapping) -> str | None:
    """The id a manifest's own content gives (what the version was stored under), or None when the
    manifest alone cannot give it (a label version, a data version written before chunked
    tables: those are checked against their rows when read)."""
    kind, parent = manifest.get("kind"), manifest.get("parent")
    if kind == "model":
        return model_version_id(dict(manifest.get("files") or {}), parent)
    content = (manifest.get("table") or {}).get("content")
    if kind == "data" and content:
        return data_version_id(content, dict(manifest.get("schema") or {}), parent)
    return None


# ---------------------------------------------------------------------------------------------
# Refs
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ref:
    """A parsed ref: exactly one of (name+alias), (name+id_prefix), (id_prefix), (bare name)."""

    text: str
    name: str | None = None
    alias: str | None = None
    id_prefix: str | None = None


def validate_prefix(prefix: str, ref: str) -> str:
    prefix = prefix.lower()
    if not _HEX_RE.match(prefix):
        raise StoreError(f"ref {ref!r}: {prefix!r} is not a hex version id")
    if len(prefix) < MIN_PREFIX:
        raise StoreError(f"ref {ref!r}: id prefix {prefix!r} is too short; give at least {MIN_PREFIX} hex characters")
    if len(prefix) > 64:
        raise StoreError(f"ref {ref!r}: a version id has 64 hex characters, got {len(prefix)}")
    return prefix


def parse_ref(ref: Any) -> Ref:
    if not isinstance(ref, str) or not ref.strip():
        raise StoreError(f"invalid ref {ref!r}: use NAME@ALIAS, NAME:ID or ID")
    text = ref.strip()
    if "@" in text:
        name, _, alias = text.partition("@")
        return Ref(text, name=validate_name(name), alias=validate_name(alias, "alias"))
    if ":" in text:
        name, _, prefix = text.partition(":")
        return Ref(text, name=validate_name(name), id_prefix=validate_prefix(prefix, text))
    lowered = text.lower()
    if _HEX_RE.match(lowered) and MIN_PREFIX <= len(lowered) <= 64:
        # may also be a name made of hex digits: the resolver falls back to the name
        return Ref(text, id_prefix=lowered, name=text)
    return Ref(text, name=validate_name(text, "ref"))


# ---------------------------------------------------------------------------------------------
# Diffs
# ---------------------------------------------------------------------------------------------
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def dict_diff(a: Mapping | None, b: Mapping | None, prefix: str = "") -> dict[str, dict]:
    """Leaves that differ, as {"dotted.path": {"a": old, "b": new}}; a missing side is None."""
    a, b = a or {}, b or {}
    out: dict[str, dict] = {}
    for key in sorted(set(a) | set(b)):
        path = f"{prefix}{key}"
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out.update(dict_diff(va, vb, f"{path}."))
        elif va != vb or (key in a) != (key in b):
            out[path] = {"a": va, "b": vb}
    return out


def metrics_diff(a: Mapping, b: Mapping) -> dict[str, dict]:
    """Every metric of either side, with ``delta`` = b - a where both are numbers."""
    out = {}
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        delta = vb - va if _is_number(va) and _is_number(vb) else None
        out[key] = {"a": va, "b": vb, "delta": delta}
    return out


def files_diff(a: Mapping[str, str], b: Mapping[str, str]) -> dict[str, list[str]]:
    return {
        "added": sorted(set(b) - set(a)),
        "removed": sorted(set(a) - set(b)),
        "changed": sorted(k for k in set(a) & set(b) if a[k] != b[k]),
        "unchanged": sorted(k for k in set(a) & set(b) if a[k] == b[k]),
    }


def _params(v: Version) -> dict:
    for source in (v.meta, v.lineage):
        for key in ("params", "hyperparameters"):
            if isinstance(source.get(key), Mapping):
                return dict(source[key])
    return {}


def model_diff(a: Version, b: Version) -> dict:
    meta_a = {k: v for k, v in a.meta.items() if k not in ("params", "hyperparameters")}
    meta_b = {k: v for k, v in b.meta.items() if k not in ("params", "hyperparameters")}
    return {
        "kind": "model",
        "a": a.ref,
        "b": b.ref,
        "same": a.id == b.id,
        "files": files_diff(a.files, b.files),
        "metrics": metrics_diff(a.metrics, b.metrics),
        "lineage": dict_diff(a.lineage, b.lineage),
        "params": dict_diff(_params(a), _params(b)),
        "meta": dict_diff(meta_a, meta_b),
        "parent": {"a": a.parent, "b": b.parent},
    }
