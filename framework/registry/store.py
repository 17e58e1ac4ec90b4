"""The version registry: content-addressed blobs, JSON manifests, aliases, one catalogue.

Layout under the store root::

    objects/<sha[:2]>/<sha>                  blobs, named by the sha256 of their bytes, written once
    versions/<kind>/<name>/<id>.json         one manifest per version (JSON, never pickle)
    aliases/<kind>/<name>/<alias>.json       {"version": id, "set_at": ...}
    catalogue.sqlite                         local folders only: tables versions, aliases

Write order is blobs -> manifest -> catalogue, each step atomic, so a crash at any point leaves
either the previous state or a complete version; leftover temp files start with "." and are
never read. A data version's blobs are Parquet chunks (and a row map) shared with the versions
it shares rows with: see ``tables.py``. On a local folder the SQLite catalogue is what readers see; on an fsspec URL the
manifests and alias files are the catalogue.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sqlite3
import threading
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping

from dataclasses import dataclass

from ..errors import StoreError
from . import diffs, labels, tables
from .versions import (
    RECIPE_FILE,
    DATA_FILE,
    KINDS,
    PREDICTIONS_FILE,
    Version,
    canonical_json,
    data_version_id,
    jsonable_dict,
    label_version_id,
    model_diff,
    model_version_id,
    parse_ref,
    recomputed_id,
    sha256,
    validate_kind,
    validate_name,
)

CATALOGUE = "catalogue.sqlite"
#: the columns of a prediction table
PREDICTION_COLUMNS = ("key", "prediction", "computed_at")

_clock_lock = threading.Lock()
_last_stamp: datetime | None = None


def _now() -> str:
    """ISO UTC timestamp, strictly increasing within the process so "newest first" is total."""
    global _last_stamp
    with _clock_lock:
        stamp = datetime.now(timezone.utc)
        if _last_stamp is not None and stamp <= _last_stamp:
            stamp = _last_stamp + timedelta(microseconds=1)
        _last_stamp = stamp
    return stamp.isoformat(timespec="microseconds")


def blob_path(digest: str) -> str:
    return f"objects/{digest[:2]}/{digest}"


def manifest_path(kind: str, name: str, vid: str) -> str:
    return f"versions/{kind}/{name}/{vid}.json"


def derived_path(version: "Version", filename: str) -> str:
    """Where a file derived from ``version`` lives: beside its manifest, never among its blobs."""
    if not filename or "/" in filename or "\\" in filename or filename.startswith("."):
        raise StoreError(f"derived file name {filename!r}: a plain file name, no folders")
    return f"derived/{version.kind}/{version.name}/{version.id}/{filename}"


def alias_path(kind: str, name: str, alias: str) -> str:
    return f"aliases/{kind}/{name}/{alias}.json"


# ---------------------------------------------------------------------------------------------
# Backends: where bytes live. Paths are relative, "/"-separated.
# ---------------------------------------------------------------------------------------------
class _LocalBackend:
    def __init__(self, root: Path):
        self.root = root
        self.uri = str(root)

    def where(self, rel: str) -> str:
        return str(self.root / rel)

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_file()

    def read(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def write_atomic(self, rel: str, data: bytes, overwrite: bool = True) -> bool:
        """Temp file in the same dir + fsync + rename. Returns False if ``overwrite`` is off and
        the file already exists (another writer won; its content is equivalent)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if overwrite:
                os.replace(tmp, path)
            else:
                # link() refuses to replace, unlike rename(): the first manifest written stays
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
                except OSError:  # filesystem without hard links
                    if path.exists():
                        return False
                    os.replace(tmp, path)
            _fsync_dir(path.parent)
            return True
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def glob(self, pattern: str) -> list[str]:
        out = []
        for p in self.root.glob(pattern):
            if p.is_file() and not p.name.startswith("."):
                out.append(p.relative_to(self.root).as_posix())
        return sorted(out)


def _fsync_dir(path: Path) -> None:
    # makes the rename itself durable; not supported everywhere (e.g. Windows), hence best effort
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _FsspecBackend:
    def __init__(self, uri: str):
        import fsspec

        try:
            fs, root = fsspec.core.url_to_fs(uri)
            self.fs = fs
            self.root = root.rstrip("/")
            fs.makedirs(self.root, exist_ok=True)
        except (ImportError, ValueError, OSError, TypeError) as exc:
            raise StoreError(f"cannot open store {uri!r}: {exc}") from exc
        self.uri = uri

    def _full(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def where(self, rel: str) -> str:
        return f"{self.uri.rstrip('/')}/{rel}"

    def exists(self, rel: str) -> bool:
        return self.fs.isfile(self._full(rel))

    def read(self, rel: str) -> bytes:
        return self.fs.cat_file(self._full(rel))

    def write_atomic(self, rel: str, data: bytes, overwrite: bool = True) -> bool:
        # an object-store PUT becomes visible whole or not at all, so no temp + rename here
        # (rename on S3 is copy + delete, which is not atomic anyway)
        full = self._full(rel)
        if not overwrite and self.fs.isfile(full):
            return False
        try:
            self.fs.pipe_file(full, data)
        except FileNotFoundError:  # filesystems that need parents (sftp, ...)
            self.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
            self.fs.pipe_file(full, data)
        return True

    def glob(self, pattern: str) -> list[str]:
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self.root)  # remote listings are cached; others write too
        prefix = self.root + "/"
        out = []
        for p in self.fs.glob(self._full(pattern)):
            p = p.lstrip("/") if not self.root.startswith("/") else p
            rel = p[len(prefix):] if p.startswith(prefix) else p
            if not rel.rsplit("/", 1)[-1].startswith("."):
                out.append(rel)
        return sorted(out)


# ---------------------------------------------------------------------------------------------
# Catalogues: what versions and aliases exist
# ---------------------------------------------------------------------------------------------
def _read_json(backend, rel: str) -> dict:
    try:
        return json.loads(backend.read(rel))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreError(f"corrupt JSON file {backend.where(rel)}: {exc}") from exc


class _FileCatalogue:
    """Manifests and alias files are the catalogue (fsspec URLs: no SQLite on object stores)."""

    def __init__(self, backend):
        self.backend = backend

    def add(self, manifest: dict) -> None:
        pass  # the manifest file written before this call is the entry

    def set_alias(self, kind: str, name: str, alias: str, vid: str, set_at: str) -> None:
        pass  # likewise the alias file

    def get_exact(self, kind: str, name: str, vid: str) -> dict | None:
        try:
            return _read_json(self.backend, manifest_path(kind, name, vid))
        except FileNotFoundError:
            return None

    def find(self, kind: str, name: str | None = None, id_prefix: str | None = None) -> list[dict]:
        pattern = f"versions/{kind}/{name or '*'}/{id_prefix or ''}*.json"
        return [_read_json(self.backend, rel) for rel in self.backend.glob(pattern)]

    def aliases(self, kind: str, name: str | None = None) -> list[tuple[str, str, str]]:
        out = []
        for rel in self.backend.glob(f"aliases/{kind}/{name or '*'}/*.json"):
            data = _read_json(self.backend, rel)
            _, _, vname, file = rel.split("/")  # aliases/<kind>/<name>/<alias>.json
            out.append((vname, file[: -len(".json")], data["version"]))
        return out


_REBUILD_HINT = (" (the catalogue only indexes the manifests under versions/ and aliases/: move it aside and "
                 "it is rebuilt from them on the next open)")


class _SqliteCatalogue:
    """Local folders: one SQLite file indexes manifests and aliases; each change is one transaction."""

    def __init__(self, path: Path, backend: _LocalBackend):
        self.path = path
        # a zero-byte file is what a crash or a `touch` leaves: SQLite would read it as an empty
        # store, hiding every version; it is rebuilt from the manifests like a missing one
        fresh = not path.exists() or path.stat().st_size == 0
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS versions (kind TEXT NOT NULL, name TEXT NOT NULL, "
                "id TEXT NOT NULL, parent TEXT, created_at TEXT NOT NULL, manifest TEXT NOT NULL, "
                "PRIMARY KEY (kind, name, id))"
            )
            db.execute("CREATE INDEX IF NOT EXISTS versions_by_id ON versions (kind, id)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS aliases (kind TEXT NOT NULL, name TEXT NOT NULL, "
                "alias TEXT NOT NULL, version_id TEXT NOT NULL, set_at TEXT NOT NULL, "
                "PRIMARY KEY (kind, name, alias))"
            )
        if fresh:
            # a store copied from an object store (or with a deleted catalogue) has manifests only
            self._rebuild(backend)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open catalogue {self.path}: {exc}") from exc
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"catalogue {self.path}: {exc}{_REBUILD_HINT}") from exc
        finally:
            db.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        try:
            db = sqlite3.connect(self.path, timeout=30)
            try:
                return db.execute(sql, args).fetchall()
            finally:
                db.close()
        except sqlite3.Error as exc:
            raise StoreError(f"catalogue {self.path}: {exc}{_REBUILD_HINT}") from exc

    def _rebuild(self, backend: _LocalBackend) -> None:
        files = _FileCatalogue(backend)
        with self._tx() as db:
            for kind in KINDS:
                for m in files.find(kind):
                    self._insert(db, m)
                for name, alias, vid in files.aliases(kind):
                    set_at = _read_json(backend, alias_path(kind, name, alias)).get("set_at", "")
                    db.execute(
                        "INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?, ?)", (kind, name, alias, vid, set_at)
                    )

    @staticmethod
    def _insert(db: sqlite3.Connection, m: dict) -> None:
        db.execute(
            "INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?, ?, ?)",
            (m["kind"], m["name"], m["id"], m.get("parent"), m["created_at"], json.dumps(m, sort_keys=True)),
        )

    def add(self, manifest: dict) -> None:
        with self._tx() as db:
            self._insert(db, manifest)

    def set_alias(self, kind: str, name: str, alias: str, vid: str, set_at: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?, ?)", (kind, name, alias, vid, set_at))

    def get_exact(self, kind: str, name: str, vid: str) -> dict | None:
        rows = self._query("SELECT manifest FROM versions WHERE kind=? AND name=? AND id=?", (kind, name, vid))
        return json.loads(rows[0][0]) if rows else None

    def find(self, kind: str, name: str | None = None, id_prefix: str | None = None) -> list[dict]:
        sql, args = "SELECT manifest FROM versions WHERE kind=?", [kind]
        if name is not None:
            sql += " AND name=?"
            args.append(name)
        if id_prefix:
            # prefixes are validated hex, so LIKE wildcards cannot sneak in
            sql += " AND id LIKE ?"
            args.append(id_prefix + "%")
        return [json.loads(r[0]) for r in self._query(sql, tuple(args))]

    def aliases(self, kind: str, name: str | None = None) -> list[tuple[str, str, str]]:
        if name is None:
            rows = self._query("SELECT name, alias, version_id FROM aliases WHERE kind=?", (kind,))
        else:
            rows = self._query(
                "SELECT name, alias, version_id FROM aliases WHERE kind=? AND name=?", (kind, name)
            )
        return [tuple(r) for r in rows]


# ---------------------------------------------------------------------------------------------
# The registry
# ---------------------------------------------------------------------------------------------
def _is_url(uri: str) -> bool:
    return "://" in uri


class Registry:
    """Data and model versions in one store: a local folder or an fsspec URL."""

    def __init__(self, uri: str | os.PathLike):
        uri = os.fspath(uri)
        if not isinstance(uri, str) or not uri.strip():
            raise StoreError(f"invalid store uri {uri!r}: give a folder path or an fsspec URL")
        self.uri = uri
        if uri.startswith("file://") or not _is_url(uri):
            root = Path(uri[len("file://"):] if uri.startswith("file://") else uri).expanduser()
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open store {uri!r}: {exc}") from exc
            self._backend = _LocalBackend(root)
            self._catalogue = _SqliteCatalogue(root / CATALOGUE, self._backend)
        else:
            self._backend = _FsspecBackend(uri)
            self._catalogue = _FileCatalogue(self._backend)

    def __repr__(self) -> str:
        return f"Registry({self.uri!r})"

    # -- writing ---------------------------------------------------------------------------
    def put_data(
        self,
        name: str,
        frame: Any,
        schema: dict,
        meta: dict | None = None,
        parent: str | None = None,
    ) -> Version:
        """Store a frame as a data version: Parquet chunks, a delta against ``parent`` when it
        shares most rows with it (only new and changed rows cost disk). The same content, schema
        and parent give the same id."""
        validate_name(name, "data name")
        return self._put_data(name, frame, schema, meta, self._parent_id(parent, "data"))

    def append_data(self, name: str, rows: Any, schema: dict | Any, meta: dict | None = None) -> "Appended":
        """Data that keeps arriving: a new version of NAME holding its newest version's rows
        followed by ``rows``, whose parent is that newest version; the version records which
        rows each batch added (``batches(version)``). The first batch starts the dataset.

        ``schema`` is a dict or a function of the combined frame returning one (what the
        schema says, e.g. the classes, may depend on every batch). The same batch appended
        twice in a row is stored once: the second call returns the existing version.
        """
        validate_name(name, "data name")
        where = f"data {name!r} append"
        description = tables.describe_frame(rows, f"{where} rows")
        batch_content = tables.content_hash(description, tables.row_hashes(rows, f"{where} rows"))
        latest = self._versions("data", name)
        if not latest:
            frame = rows
            parent_frame = parent_id = None
            history: list[dict] = []
            start = 0
        else:
            parent = latest[0]
            history = self.batches(parent)
            parent_frame = self.load_frame(parent)
            if history and history[-1].get("content") == batch_content:
                return Appended(parent, parent_frame, history[-1], repeated=True)
            parent_frame, rows = _conform_batch(parent_frame, rows, f"{where} onto {parent.ref}")
            frame = _concat_rows(parent_frame, rows)
            parent_id, start = parent.id, len(parent_frame)
        resolved_schema = schema(frame) if callable(schema) else schema
        batch = {"start": int(start), "stop": int(len(frame)), "rows": int(len(rows)), "content": batch_content}
        version = self._put_data(name, frame, resolved_schema, meta, parent_id,
                                 batches=(history, batch), parent_frame=parent_frame)
        return Appended(version, frame, self.batches(version)[-1], repeated=False)

    @staticmethod
    def batches(version: Version) -> list[dict]:
        """Which rows each batch added, oldest first: ``{version, start, stop, rows, content}``
        (rows ``start:stop`` of this version's frame). A version not made by ``append_data`` is
        one batch: all its rows."""
        if version.kind != "data":
            raise StoreError(f"{version.kind} {version.ref} is not a data version: it has no batches")
        stored = version.table.get("batches")
        if stored:
            return [dict(b) for b in stored]
        rows = int(version.table.get("rows", version.metrics.get("rows", 0)))
        return [{"version": version.id, "start": 0, "stop": rows, "rows": rows, "content": version.table.get("content")}]

    def _put_data(self, name: str, frame: Any, schema: dict, meta: dict | None, parent_id: str | None,
                  batches: tuple[list[dict], dict] | None = None, parent_frame: Any = None) -> Version:
        where = f"data {name!r}"
        schema = jsonable_dict(schema, f"{where} schema")
        meta = jsonable_dict(meta, f"{where} meta")
        description = tables.describe_frame(frame, f"{where} frame")
        hashes = tables.row_hashes(frame, f"{where} frame")
        content = tables.content_hash(description, hashes)
        vid = data_version_id(content, schema, parent_id)
        existing = self._existing("data", name, vid)
        if existing is not None:
            return existing
        parent_rows = self._parent_rows(parent_id, parent_frame, schema.get("key"), where) if parent_id else None
        write = tables.plan_write(frame, description, hashes, where, parent_rows)
        files, new_bytes = {}, 0
        for fname, (digest, produce) in write.files.items():
            if digest is None:
                data = produce()
                digest = sha256(data)
                if not self._backend.exists(blob_path(digest)):
                    self._write(blob_path(digest), data)
                    new_bytes += len(data)
                del data  # one chunk in memory at a time
            files[fname] = digest
        table = {**write.table, "content": content, "new_bytes": new_bytes}
        if batches is not None:  # the parent's batches (a parent not appended to is one), then this one
            history, batch = batches
            table["batches"] = [*history, {"version": vid, **batch}]
        metrics = {"rows": int(len(frame)), "columns": int(len(frame.columns))}
        return self._commit("data", name, vid, parent_id, files, metrics, {}, meta, schema, table)

    def _parent_rows(self, parent_id: str, parent_frame: Any, key: Any, where: str) -> tables.ParentRows | None:
        """The parent's rows and where they are stored, for a delta; None when the parent was
        stored before chunked tables (the child is then a snapshot)."""
        import pandas as pd

        parent = self.get(parent_id, "data")
        info = parent.table
        if info.get("layout") != tables.LAYOUT:
            return None
        # the rows as Arrow are all a delta compares; pandas only when rows must be hashed
        table = tables.to_arrow(parent_frame, f"{where} parent") if parent_frame is not None else self._load_table(parent)
        row_map = self.read_file(parent, tables.ROW_MAP_FILE) if tables.ROW_MAP_FILE in parent.files else None
        names = _chunk_files(parent)
        rows = tables.ParentRows(
            version_id=parent.id,
            description={k: info[k] for k in ("columns", "dtypes", "index")},
            chunks=[(parent.files[n], int(r)) for n, r in zip(names, info["chunk_rows"])],
            table=table,
            stored_at=tables.stored_positions(info, row_map, f"data {parent.ref} {tables.ROW_MAP_FILE}"),
        )
        # a declared, unique key finds each row's candidate without hashing the parent
        keys = None
        if isinstance(key, str) and key in info["columns"] and key in table.column_names:
            keys = pd.Index(table.column(key).to_pandas())
        if keys is not None and keys.is_unique:
            rows.key, rows.keys = key, keys
        else:
            if parent_frame is None:
                categories = self.read_file(parent, tables.CATEGORIES_FILE) if tables.CATEGORIES_FILE in parent.files else None
                parent_frame = tables.to_frame(table, info, categories, f"data {parent.ref}")
            rows.hashes = tables.row_hashes(parent_frame, f"{where} parent")
        return rows

    def put_model(
        self,
        name: str,
        files: dict[str, bytes],
        metrics: dict,
        lineage: dict,
        meta: dict | None = None,
        parent: str | None = None,
    ) -> Version:
        """Store model files; the id covers file contents and parent, not metrics or lineage."""
        validate_name(name, "model name")
        where = f"model {name!r}"
        if not isinstance(files, Mapping) or not files:
            raise StoreError(f"{where}: files must be a non-empty dict of filename -> bytes")
        blobs: dict[str, bytes] = {}
        for fname, data in files.items():
            validate_name(fname, f"{where} file name")
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise StoreError(f"{where} file {fname!r}: expected bytes, got {type(data).__name__}")
            blobs[fname] = bytes(data)
        metrics = jsonable_dict(metrics, f"{where} metrics")
        lineage = jsonable_dict(lineage, f"{where} lineage")
        meta = jsonable_dict(meta, f"{where} meta")
        parent_id = self._parent_id(parent, "model")
        vid = model_version_id({f: sha256(b) for f, b in blobs.items()}, parent_id)
        existing = self._existing("model", name, vid)
        if existing is not None:
            return existing
        files = {}
        for fname, data in blobs.items():
            files[fname] = digest = sha256(data)
            if not self._backend.exists(blob_path(digest)):
                self._write(blob_path(digest), data)
        return self._commit("model", name, vid, parent_id, files, metrics, lineage, meta, {})

    def put_labels(self, name: str, frame: Any, schema: dict, lineage: dict, meta: dict | None = None,
                   parent: str | None = None) -> Version:
        """Store a label version (``labels.labels_frame``: ``label``, ``source``, ``p:CLASS`` on
        the data version's index). ``lineage["data_version"]`` names the data version whose rows
        it labels; the id covers the labels, schema, parent and that data version."""
        validate_name(name, "label name")
        where = f"label {name!r}"
        schema = jsonable_dict(schema, f"{where} schema")
        lineage = jsonable_dict(lineage, f"{where} lineage")
        meta = jsonable_dict(meta, f"{where} meta")
        parent_id = self._parent_id(parent, "label")
        frame = labels.normalised(frame)  # read back from Parquet, text is another dtype: same content
        content = tables.content_hash(tables.describe_frame(frame, f"{where} frame"), tables.row_hashes(frame, f"{where} frame"))
        vid = label_version_id(content, schema, parent_id, lineage.get("data_version"))
        existing = self._existing("label", name, vid)
        if existing is not None:
            return existing
        data = labels.to_parquet(frame)
        digest = sha256(data)
        if not self._backend.exists(blob_path(digest)):
            self._write(blob_path(digest), data)
        labeled = int(frame[labels.LABEL_COLUMN].notna().sum())
        metrics = {"rows": int(len(frame)), "labeled": labeled, "unlabeled": int(len(frame)) - labeled}
        return self._commit("label", name, vid, parent_id, {labels.LABELS_FILE: digest}, metrics, lineage, meta, schema)

    def put_predictions(self, name: str, frame: Any, lineage: dict, meta: dict | None = None) -> Version:
        """Store a prediction table (batch prediction): one row per scored row, columns ``key``,
        ``prediction`` and ``computed_at`` (UTC). ``lineage`` names the ``model_version`` and the
        ``data_version`` that made it; the id covers the table and both of them."""
        validate_name(name, "prediction table name")
        where = f"prediction table {name!r}"
        lineage = jsonable_dict(lineage, f"{where} lineage")
        meta = jsonable_dict(meta, f"{where} meta")
        missing = [c for c in PREDICTION_COLUMNS if c not in getattr(frame, "columns", ())]
        if missing:
            raise StoreError(f"{where}: the frame lacks column(s) {missing}; expected {list(PREDICTION_COLUMNS)}")
        buffer = io.BytesIO()
        frame.reset_index(drop=True).to_parquet(buffer, index=False)
        data = buffer.getvalue()
        digest = sha256(data)
        identity = canonical_json({"table": digest, "model_version": lineage.get("model_version"),
                                   "data_version": lineage.get("data_version")})
        vid = sha256(identity)
        existing = self._existing("prediction", name, vid)
        if existing is not None:
            return existing
        if not self._backend.exists(blob_path(digest)):
            self._write(blob_path(digest), data)
        computed = frame["computed_at"]
        metrics = {"rows": int(len(frame)), "keys": int(frame["key"].nunique()),
                   "computed_from": str(computed.min()) if len(frame) else None,
                   "computed_to": str(computed.max()) if len(frame) else None}
        return self._commit("prediction", name, vid, None, {PREDICTIONS_FILE: digest}, metrics, lineage, meta, {})

    def file_location(self, version: Version, filename: str) -> str:
        """Where one file of a version is stored (a local path or an fsspec URL), for a reader
        that loads it itself (the serving app loading a prediction table)."""
        if filename not in version.files:
            raise StoreError(f"{version.kind} {version.ref} has no file {filename!r}")
        return self._backend.where(blob_path(version.files[filename]))

    def load_predictions(self, version: Version | str) -> Any:
        """A prediction table's frame (``key``, ``prediction``, ``computed_at``), hash-checked on read."""
        import pandas as pd

        v = self._resolve(version, None if isinstance(version, Version) else "prediction")
        if v.kind != "prediction":
            raise StoreError(f"{v.kind} {v.ref} is not a prediction table")
        return pd.read_parquet(io.BytesIO(self.read_file(v, PREDICTIONS_FILE)))

    def load_labels(self, version: Version | str) -> Any:
        """A label version's frame (``label``, ``source``, ``p:CLASS``), hash-checked on read."""
        v = self._resolve(version, None if isinstance(version, Version) else "label")
        if v.kind != "label":
            raise StoreError(f"{v.kind} {v.ref} is not a label version")
        frame = labels.from_parquet(self.read_file(v, labels.LABELS_FILE), f"label {v.ref}")
        content = tables.content_hash(tables.describe_frame(frame, f"label {v.ref}"), tables.row_hashes(frame))
        if label_version_id(content, v.schema, v.parent, v.lineage.get("data_version")) != v.id:
            raise StoreError(f"label {v.ref}: its labels do not give its id: the manifest or the labels file "
                             f"was changed after it was stored; it is not used")
        return frame

    def schema_flags(self, version: Version) -> list[str]:
        """Why a model version is flagged: it was trained on a label schema that a stored
        migration has since replaced (empty: not flagged)."""
        if version.kind != "model":
            return []
        trained_on = (version.lineage.get("label_schema") or {}).get("id")
        if not trained_on:
            return []
        flags = []
        for v in self._versions("label"):
            migration = v.lineage.get("migration") or {}
            if migration.get("from_schema") == trained_on:
                flags.append(f"trained on label schema {trained_on}, replaced by {migration.get('to_schema')} "
                             f"(label version {v.ref}: {migration.get('summary', 'migration')})")
        return flags

    def set_alias(self, kind: str, name: str, alias: str, version_id: str) -> None:
        """Point NAME@ALIAS at a version of NAME (full id or a unique prefix)."""
        validate_kind(kind)
        validate_name(name, f"{kind} name")
        validate_name(alias, "alias")
        target = self.get(f"{name}:{version_id}", kind)
        set_at = _now()
        body = canonical_json({"kind": kind, "name": name, "alias": alias, "version": target.id, "set_at": set_at})
        self._write(alias_path(kind, name, alias), body)
        self._catalogue.set_alias(kind, name, alias, target.id, set_at)

    def _parent_id(self, parent: str | None, kind: str) -> str | None:
        # a parent is stored as a full id, so "iris@prod" today stays meaningful tomorrow
        if parent is None:
            return None
        return self.get(parent, kind).id

    def _existing(self, kind: str, name: str, vid: str) -> Version | None:
        m = self._catalogue.get_exact(kind, name, vid)
        return None if m is None else self._version(m, self._alias_index(kind, name))

    def _commit(self, kind, name, vid, parent, files, metrics, lineage, meta, schema, table=None) -> Version:
        """Make a version visible; every blob in ``files`` (name -> digest) is already written."""
        version = Version(
            kind=kind, name=name, id=vid, parent=parent, created_at=_now(), files=files,
            metrics=metrics, lineage=lineage, meta=meta, schema=schema, table=table or {},
        )
        rel = manifest_path(kind, name, vid)
        # only now, with every blob in place, does the version become visible
        if self._write(rel, canonical_json(version.manifest()), overwrite=False):
            manifest = version.manifest()
        else:  # a concurrent writer, or a crash before the catalogue step: keep the first
            manifest = _read_json(self._backend, rel)
        self._catalogue.add(manifest)
        return self._existing(kind, name, vid) or self._version(manifest, {})

    def _write(self, rel: str, data: bytes, overwrite: bool = True) -> bool:
        try:
            return self._backend.write_atomic(rel, data, overwrite=overwrite)
        except StoreError:
            raise
        except OSError as exc:
            raise StoreError(f"cannot write {self._backend.where(rel)}: {exc}") from exc

    # -- derived files stored with a version (a reference profile built from a data version) --
    def put_derived(self, version: Version, filename: str, data: bytes) -> str:
        """Store ``data`` as ``filename`` *with* ``version`` (atomically; a rewrite replaces it).
        For files computed from an immutable version and reused by later runs, e.g. the
        reference profile a monitor builds from the training rows; the version's own content and
        id do not change. Returns where it was written."""
        rel = derived_path(version, filename)
        self._write(rel, bytes(data))
        return self._backend.where(rel)

    def read_derived(self, version: Version, filename: str) -> bytes | None:
        """A file stored with ``version`` by :meth:`put_derived`, or None."""
        rel = derived_path(version, filename)
        if not self._backend.exists(rel):
            return None
        try:
            return self._backend.read(rel)
        except OSError as exc:
            raise StoreError(f"cannot read {self._backend.where(rel)}: {exc}") from exc

    # -- reading ---------------------------------------------------------------------------
    def _alias_index(self, kind: str, name: str | None = None) -> dict[tuple[str, str], list[str]]:
        index: dict[tuple[str, str], list[str]] = {}
        for n, alias, vid in self._catalogue.aliases(kind, name):
            index.setdefault((n, vid), []).append(alias)
        return index

    @staticmethod
    def _version(manifest: dict, alias_index: Mapping) -> Version:
        key = (manifest.get("name"), manifest.get("id"))
        where = f"{manifest.get('kind')}/{manifest.get('name')}/{manifest.get('id')}"
        return Version.from_manifest(manifest, alias_index.get(key, []), where)

    def _versions(self, kind: str, name: str | None = None, id_prefix: str | None = None) -> list[Version]:
        index = self._alias_index(kind, name)
        found = [self._version(m, index) for m in self._catalogue.find(kind, name, id_prefix)]
        return sorted(found, key=lambda v: (v.created_at, v.id), reverse=True)

    def list(self, kind: str | None = None, name: str | None = None) -> list[Version]:
        """Versions, newest first; filter by kind and/or name."""
        kinds = [validate_kind(kind)] if kind is not None else list(KINDS)
        if name is not None:
            validate_name(name)
        out = [v for k in kinds for v in self._versions(k, name)]
        return sorted(out, key=lambda v: (v.created_at, v.id), reverse=True)

    def get(self, ref: str, kind: str = "model") -> Version:
        """Resolve NAME@ALIAS, NAME:ID(prefix), ID(prefix) or a bare NAME (its newest version),
        checked against its manifest file and its id (``verify_version``).

        ``NAME@latest`` means the newest version unless an alias "latest" was set explicitly.
        """
        return self.verify_version(self._lookup(ref, kind))

    def verify_version(self, v: Version) -> Version:
        """``v`` if what describes it is consistent, else a StoreError naming it: its manifest file
        exists and says what the catalogue says, and the id recomputed from the manifest (files
        and parent of a model; content, schema and parent of a data version) is its id. Rows and
        file bytes are checked when read (``read_file``, ``load_frame``, ``load_labels``)."""
        rel = manifest_path(v.kind, v.name, v.id)
        where = f"{v.kind} {v.ref}"
        try:
            on_disk = Version.from_manifest(_read_json(self._backend, rel), v.aliases, rel).manifest()
        except FileNotFoundError:
            raise StoreError(f"{where}: the catalogue lists this version but its manifest "
                             f"{self._backend.where(rel)} is missing; it is not used") from None
        except StoreError as exc:
            raise StoreError(f"{where}: {exc.message}; its manifest cannot be read, so it is not used") from None
        listed = v.manifest()
        if on_disk != listed:
            keys = sorted(k for k in set(on_disk) | set(listed) if on_disk.get(k) != listed.get(k))
            raise StoreError(f"{where}: its manifest {self._backend.where(rel)} differs from the catalogue in "
                             f"{', '.join(keys)}: it was edited outside the framework; restore it, or move "
                             f"{CATALOGUE} aside to index the manifests as they are now")
        expected = recomputed_id(listed)
        if expected is not None and expected != v.id:
            raise StoreError(f"{where}: its manifest does not give its id (recomputed {expected[:12]}): the "
                             f"files, content or parent it lists were changed after it was stored; it is "
                             f"not used. Restore {self._backend.where(rel)} or remove the version")
        return v

    def _lookup(self, ref: str, kind: str) -> Version:
        validate_kind(kind)
        r = parse_ref(ref)
        if r.alias is not None:
            versions = self._require_name(kind, r.name, ref)
            aliases = {a: vid for _, a, vid in self._catalogue.aliases(kind, r.name)}
            if r.alias in aliases:
                m = self._catalogue.get_exact(kind, r.name, aliases[r.alias])
                if m is None:
                    raise StoreError(
                        f"{kind} alias {r.name}@{r.alias} points at {aliases[r.alias][:12]}, which is not "
                        f"in store {self.uri}: set the alias again"
                    )
                return self._version(m, self._alias_index(kind, r.name))
            if r.alias == "latest":
                return versions[0]
            known = ", ".join(f"{r.name}@{a}" for a in sorted(aliases)) or "none"
            raise StoreError(
                f"unknown alias {r.alias!r} for {kind} {r.name!r} in store {self.uri}; aliases: {known} "
                f"(and {r.name}@latest, the newest version)"
            )
        if r.name is not None and r.id_prefix is not None and ":" in r.text:
            self._require_name(kind, r.name, ref)
            matches = self._versions(kind, r.name, r.id_prefix)
            if not matches:
                recent = ", ".join(v.ref for v in self._versions(kind, r.name)[:5])
                raise StoreError(
                    f"{kind} {r.name!r} has no version with id starting {r.id_prefix!r} in store "
                    f"{self.uri}; newest: {recent}"
                )
            return self._one(matches, ref, kind)
        if r.id_prefix is not None:
            matches = self._versions(kind, None, r.id_prefix)
            if matches:
                return self._one(matches, ref, kind)
        if r.name is not None and (versions := self._versions(kind, r.name)):
            return versions[0]
        raise StoreError(f"unknown {kind} ref {ref!r} in store {self.uri}; {self._inventory(kind)}")

    def _one(self, matches: list[Version], ref: str, kind: str) -> Version:
        if len(matches) == 1:
            return matches[0]
        refs = ", ".join(f"{v.name}:{v.id[:16]}" for v in matches[:10])
        raise StoreError(f"ambiguous {kind} ref {ref!r}: it matches {len(matches)} versions ({refs}); give NAME:ID or a longer id")

    def _require_name(self, kind: str, name: str, ref: str) -> list[Version]:
        versions = self._versions(kind, name)
        if not versions:
            raise StoreError(f"unknown {kind} {name!r} (ref {ref!r}) in store {self.uri}; {self._inventory(kind)}")
        return versions

    def _inventory(self, kind: str) -> str:
        names = sorted({m["name"] for m in self._catalogue.find(kind)})
        if not names:
            return f"the store has no {kind} versions yet"
        aliases = sorted(f"{n}@{a}" for n, a, _ in self._catalogue.aliases(kind))
        return f"{kind} names: {', '.join(names)}; aliases: {', '.join(aliases) or 'none'}"

    def _resolve(self, version: Version | str, kind: str | None = None) -> Version:
        if isinstance(version, Version):
            return version
        if kind is not None:
            return self.get(version, kind)
        try:
            found = self._lookup(version, "model")
        except StoreError:
            try:
                found = self._lookup(version, "data")
            except StoreError:
                try:
                    found = self._lookup(version, "label")
                except StoreError:
                    found = self._lookup(version, "prediction")
        return self.verify_version(found)  # found but inconsistent: that error, not "unknown"

    def read_file(self, version: Version | str, filename: str) -> bytes:
        """The bytes of one file of a version, checked against the sha256 in its manifest."""
        v = self._resolve(version)
        if filename not in v.files:
            raise StoreError(
                f"{v.kind} {v.ref} has no file {filename!r}; files: {', '.join(sorted(v.files)) or 'none'}"
            )
        expected = v.files[filename]
        rel = blob_path(expected)
        try:
            data = self._backend.read(rel)
        except FileNotFoundError as exc:
            raise StoreError(
                f"{v.kind} {v.ref} file {filename!r}: blob {expected} is missing at {self._backend.where(rel)}"
            ) from exc
        except OSError as exc:
            raise StoreError(f"{v.kind} {v.ref} file {filename!r}: cannot read {self._backend.where(rel)}: {exc}") from exc
        actual = sha256(data)
        if actual != expected:
            raise StoreError(
                f"corrupt artifact: {v.kind} {v.ref} file {filename!r} at {self._backend.where(rel)} "
                f"has sha256 {actual}, expected {expected}"
            )
        return data

    def load_frame(self, version: Version | str) -> Any:
        """The stored frame of a data version, exactly as it was put (rows, order, dtypes,
        index); every chunk is hash-checked on read."""
        import pandas as pd

        v = self._resolve(version, None if isinstance(version, Version) else "data")
        if v.kind == "data" and v.table.get("layout") == tables.LAYOUT:
            categories = self.read_file(v, tables.CATEGORIES_FILE) if tables.CATEGORIES_FILE in v.files else None
            frame = tables.to_frame(self._load_table(v), v.table, categories, f"data {v.ref}")
            # every chunk matched its hash; this checks they are the chunks of this version
            if v.table.get("content") and tables.content_hash(tables.describe_frame(frame, f"data {v.ref}"),
                                                              tables.row_hashes(frame)) != v.table["content"]:
                raise StoreError(f"data {v.ref}: its rows do not give its content hash: the manifest's chunk "
                                 f"list was changed after it was stored; it is not used")
            return frame
        if v.kind != "data" or DATA_FILE not in v.files:
            raise StoreError(f"{v.kind} {v.ref} is not a data version: it has no {DATA_FILE} and no chunks")
        data = self.read_file(v, DATA_FILE)  # a version written before chunked tables
        try:
            return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
        except Exception as exc:  # pyarrow raises its own types on a bad file
            raise StoreError(f"data {v.ref}: cannot read {DATA_FILE}: {exc}") from exc

    def _load_table(self, v: Version) -> Any:
        """A chunked data version's rows as one Arrow table (chunks hash-checked)."""
        names = _chunk_files(v)
        if len(names) != len(v.table.get("chunk_rows", [])):
            raise StoreError(f"corrupt manifest data/{v.name}/{v.id}: {len(names)} chunk files, "
                             f"{len(v.table.get('chunk_rows', []))} chunk sizes")
        row_map = self.read_file(v, tables.ROW_MAP_FILE) if tables.ROW_MAP_FILE in v.files else None
        return tables.assemble_table(v.table, (self.read_file(v, n) for n in names), row_map, f"data {v.ref}")

    def diff(self, a: str, b: str, kind: str = "model") -> dict:
        """What changed from A to B.

        Data: rows added / removed / changed (by the declared key, else by content), schema
        changes, per-column shift and ancestry; one frame is in memory at a time. Models: files,
        metric deltas (b - a), lineage, params and meta, plus the diff of the data versions they
        were trained on and of their recipes (``recipe.yaml``)."""
        validate_kind(kind)
        va, vb = self.get(a, kind), self.get(b, kind)
        if kind == "data":
            return self._data_diff(va, vb)
        if kind == "label":
            return labels.label_diff(va, vb, self.load_labels(va), self.load_labels(vb))
        out = model_diff(va, vb)
        out["data"] = self._training_data_diff(va, vb)
        out["recipe"] = self._recipe_diff(va, vb)
        return out

    def _data_diff(self, va: Version, vb: Version) -> dict:
        frame_a = self.load_frame(va)
        dtypes_a = {c: str(t) for c, t in frame_a.dtypes.items()}
        dtypes_b = dict(vb.table.get("dtypes") or {})
        frame_b = None
        if not dtypes_b:  # a version stored before chunked tables records no dtypes: read it
            frame_b = self.load_frame(vb)
            dtypes_b = {c: str(t) for c, t in frame_b.dtypes.items()}
        key, key_note = diffs.diff_key(va, vb, dtypes_a, dtypes_b)
        common = [c for c in dtypes_a if c in dtypes_b]
        casts = diffs.comparable_casts(dtypes_a, dtypes_b)
        profile_a = diffs.profile(frame_a, common, casts, key)
        del frame_a  # one frame in memory at a time
        if frame_b is None:
            frame_b = self.load_frame(vb)
        profile_b = diffs.profile(frame_b, common, casts, key)
        del frame_b
        return diffs.data_diff(va, vb, profile_a, profile_b, key, key_note,
                               diffs.ancestry(va, vb, lambda vid: self._parent_of("data", vid)))

    def _parent_of(self, kind: str, vid: str) -> str | None:
        found = self._catalogue.find(kind, None, vid)
        return next((m.get("parent") for m in found if m.get("id") == vid), None)

    def _training_data_diff(self, va: Version, vb: Version) -> dict:
        ida, idb = va.lineage.get("data_version"), vb.lineage.get("data_version")
        if not ida or not idb:
            return {"note": "a version records no training data version"}
        if ida == idb:
            return {"same": True, "version": ida}
        try:
            return self._data_diff(self.get(ida, "data"), self.get(idb, "data"))
        except StoreError as exc:
            return {"note": f"cannot diff the training data: {exc.message}"}

    def _recipe_diff(self, va: Version, vb: Version) -> dict:
        import yaml

        recipes = []
        for v in (va, vb):
            if RECIPE_FILE not in v.files:
                return {"note": f"{v.ref} has no {RECIPE_FILE} (registered before recipes were stored)"}
            try:
                recipes.append(yaml.safe_load(self.read_file(v, RECIPE_FILE)) or {})
            except yaml.YAMLError as exc:
                raise StoreError(f"model {v.ref}: {RECIPE_FILE} is not valid YAML: {exc}") from None
        return {"changed": diffs.recipe_diff(*recipes)}


def _chunk_files(v: Version) -> list[str]:
    return sorted(f for f in v.files if f.startswith(tables.CHUNK_PREFIX))


@dataclass
class Appended:
    """What ``append_data`` did: the version, its whole frame, the batch it added, and whether
    that batch was already the newest one (then nothing was stored)."""

    version: Version
    frame: Any
    batch: dict
    repeated: bool = False


def _conform_batch(parent: Any, rows: Any, where: str) -> tuple[Any, Any]:
    """The new rows in the parent's column order and dtypes; categoricals get the union of
    both sides' categories (parent's first). Refuses what cannot be appended, naming columns."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    missing = [c for c in parent.columns if c not in rows.columns]
    extra = [c for c in rows.columns if c not in parent.columns]
    if missing or extra:
        raise StoreError(f"{where}: the new rows have other columns (missing: {missing or 'none'}; "
                         f"extra: {extra or 'none'}); a changed table is a new version, not an append")
    rows = rows[list(parent.columns)].copy()
    parent = parent.copy()
    for col in parent.columns:
        pt, rt = parent[col].dtype, rows[col].dtype
        if isinstance(pt, pd.CategoricalDtype) or isinstance(rt, pd.CategoricalDtype):
            old = list(pt.categories) if isinstance(pt, pd.CategoricalDtype) else []
            seen = rows[col].cat.categories if isinstance(rt, pd.CategoricalDtype) else pd.unique(rows[col].dropna())
            union = pd.CategoricalDtype(old + [c for c in seen if c not in set(old)],
                                        ordered=bool(getattr(pt, "ordered", False)))
            if isinstance(pt, pd.CategoricalDtype) and list(union.categories) != old:
                parent[col] = parent[col].astype(union)
            rows[col] = rows[col].astype(union)
            continue
        if pt == rt:
            continue
        numeric = all(is_numeric_dtype(t) and not is_bool_dtype(t) for t in (pt, rt))
        texts = all(str(t) in ("object", "str", "string") for t in (pt, rt))
        if not (numeric or texts):
            raise StoreError(f"{where}: column {col!r} is {pt} in the stored rows but {rt} in the new ones")
        cast = rows[col].astype(pt)
        if numeric and not (cast.astype("float64").fillna(0).to_numpy() == rows[col].astype("float64").fillna(0).to_numpy()).all():
            raise StoreError(f"{where}: column {col!r} is {pt} in the stored rows; the new {rt} values do not fit it")
        rows[col] = cast
    return parent, rows


def _concat_rows(parent: Any, rows: Any) -> Any:
    import pandas as pd

    if tables.is_range_index(parent.index):
        combined = pd.concat([parent, rows], ignore_index=True)
        start, step = parent.index.start, parent.index.step
        combined.index = pd.RangeIndex(start, start + step * len(combined), step, name=parent.index.name)
        return combined
    return pd.concat([parent, rows])


__all__ = ["Appended", "Registry", "Version"]
