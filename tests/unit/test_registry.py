"""The version registry on a real local folder (files + SQLite) and on fsspec's memory://."""
from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from framework.errors import StoreError
from framework.registry import Registry, Version
from framework.registry import store as store_mod
from framework.registry.cli import versions_command


@pytest.fixture(params=["local", "memory"])
def uri(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "store")
    else:
        import fsspec

        url = f"memory://reg-{uuid.uuid4().hex}"
        yield url
        fsspec.filesystem("memory").rm(url[len("memory://"):], recursive=True)


@pytest.fixture
def reg(uri):
    return Registry(uri)


@pytest.fixture
def local(tmp_path):
    return Registry(tmp_path / "store")


def frame(n: int = 5) -> pd.DataFrame:
    return pd.DataFrame(
        {"x": np.arange(n, dtype="float64"), "y": np.arange(n) % 2, "label": [f"c{i % 3}" for i in range(n)]}
    )


SCHEMA = {"x": "float", "y": "int", "label": "str"}


def put_model(reg, name="clf", payload=b"onnx-1", metrics=None, lineage=None, **kw) -> Version:
    return reg.put_model(
        name,
        {"model.onnx": payload, "schema.json": b'{"features": ["x", "y"]}'},
        metrics if metrics is not None else {"accuracy": 0.9},
        lineage if lineage is not None else {"recipe_hash": "r1", "data_version": "d1", "code_revision": "c1"},
        **kw,
    )


def blobs(reg) -> list[str]:
    return reg._backend.glob("objects/*/*")


# ---------------------------------------------------------------------------------------------
# Content addressing
# ---------------------------------------------------------------------------------------------
def test_same_frame_twice_is_one_version_and_one_blob(reg):
    a = reg.put_data("iris", frame(), SCHEMA)
    b = reg.put_data("iris", frame(), SCHEMA)  # a fresh, equal frame
    assert a.id == b.id and len(a.id) == 64
    assert a.created_at == b.created_at  # the existing version came back, not a new one
    assert len(blobs(reg)) == 1
    assert [v.id for v in reg.list("data")] == [a.id]
    assert a.files["chunk-000000.parquet"] == blobs(reg)[0].rsplit("/", 1)[-1]  # small: one chunk
    assert a.metrics == {"rows": 5, "columns": 3}


def test_any_content_change_gives_a_new_id(reg):
    base = reg.put_data("iris", frame(), SCHEMA)
    changed = frame()
    changed.loc[2, "x"] = 99.0
    ids = {
        base.id,
        reg.put_data("iris", changed, SCHEMA).id,
        reg.put_data("iris", frame().iloc[::-1], SCHEMA).id,  # row order
        reg.put_data("iris", frame().astype({"y": "float64"}), SCHEMA).id,  # dtype
        reg.put_data("iris", frame().rename(columns={"x": "z"}), SCHEMA).id,  # column name
        reg.put_data("iris", frame(), {**SCHEMA, "x": "int"}).id,  # schema
        reg.put_data("iris", frame(), SCHEMA, parent=base.id).id,  # parent
    }
    assert len(ids) == 7
    assert len(reg.list("data", "iris")) == 7


def test_reloaded_frame_round_trips_to_the_same_id(reg):
    original = frame().iloc[[0, 2, 4]]  # a non-trivial index
    v = reg.put_data("iris", original, SCHEMA, meta={"source": "sklearn"})
    back = reg.load_frame(v)
    pd.testing.assert_frame_equal(back, original, check_index_type=False)
    assert reg.put_data("iris", back, SCHEMA).id == v.id  # the hash ignores parquet's encoding
    assert reg.get(v.id, kind="data").meta == {"source": "sklearn"}
    assert reg.get(v.id, kind="data").schema == SCHEMA


def test_model_id_covers_files_and_parent_not_metrics(reg):
    a = put_model(reg, metrics={"accuracy": 0.9})
    again = put_model(reg, metrics={"accuracy": 0.1})
    assert again.id == a.id and again.metrics == {"accuracy": 0.9}  # first registration wins
    assert put_model(reg, payload=b"onnx-2").id != a.id
    child = put_model(reg, parent=a.ref)
    assert child.id != a.id and child.parent == a.id  # parent is stored as the full id
    assert len(blobs(reg)) == 3  # schema.json is shared by all three


def test_model_lineage_metrics_and_files_round_trip(uri):
    lineage = {"recipe_hash": "abc", "data_version": "f" * 64, "code_revision": "deadbeef", "labels": None}
    metrics = {"accuracy": np.float32(0.875), "f1": 0.8, "epochs": np.int64(3)}  # numpy scalars accepted
    v = Registry(uri).put_model(
        "clf", {"model.onnx": b"\x00\x01onnx", "schema.json": b"{}"}, metrics, lineage,
        meta={"params": {"lr": 0.01}}, parent=None,
    )
    got = Registry(uri).get("clf:" + v.id)  # a fresh handle reads what was persisted
    assert got.lineage == lineage
    assert got.metrics == {"accuracy": 0.875, "f1": 0.8, "epochs": 3}
    assert got.meta == {"params": {"lr": 0.01}}
    assert got.parent is None and got.kind == "model" and got.name == "clf"
    assert got.ref == f"clf:{v.id[:12]}"
    assert got.to_dict()["files"] == got.files and set(got.files) == {"model.onnx", "schema.json"}
    assert Registry(uri).read_file(got, "model.onnx") == b"\x00\x01onnx"
    assert got == v and hash(got) == hash(v)


def test_manifests_are_plain_json(local, tmp_path):
    v = put_model(local)
    path = tmp_path / "store" / "versions" / "model" / "clf" / f"{v.id}.json"
    manifest = json.loads(path.read_text())
    assert manifest["id"] == v.id and manifest["lineage"]["recipe_hash"] == "r1"
    assert "aliases" not in manifest  # aliases move; the manifest never changes
    blob = tmp_path / "store" / "objects" / v.files["model.onnx"][:2] / v.files["model.onnx"]
    assert blob.read_bytes() == b"onnx-1"


# ---------------------------------------------------------------------------------------------
# Aliases and refs
# ---------------------------------------------------------------------------------------------
def test_aliases(reg):
    a = put_model(reg, payload=b"one")
    b = put_model(reg, payload=b"two")
    reg.set_alias("model", "clf", "prod", a.id[:8])
    assert reg.get("clf@prod").id == a.id
    assert reg.get("clf@latest").id == b.id  # implicit: the newest version
    assert reg.get("clf:" + a.id).aliases == ["prod"]
    reg.set_alias("model", "clf", "prod", b.id)  # move it
    assert reg.get("clf@prod").id == b.id
    assert reg.get("clf:" + a.id).aliases == []
    reg.set_alias("model", "clf", "latest", a.id)  # an explicit "latest" wins over the implicit one
    assert reg.get("clf@latest").id == a.id
    assert sorted(reg.get("clf:" + a.id).aliases) == ["latest"]

    with pytest.raises(StoreError, match=r"unknown alias 'staging' for model 'clf'.*clf@latest, clf@prod"):
        reg.get("clf@staging")
    with pytest.raises(StoreError, match=r"unknown model 'nope'.*model names: clf"):
        reg.get("nope@prod")
    with pytest.raises(StoreError, match=r"no version with id starting '000000'"):
        reg.set_alias("model", "clf", "prod", "000000")
    with pytest.raises(StoreError, match=r"invalid alias 'bad/alias'"):
        reg.set_alias("model", "clf", "bad/alias", a.id)
    with pytest.raises(StoreError, match=r"unknown version kind 'dataset'"):
        reg.set_alias("dataset", "clf", "prod", a.id)


def test_ref_forms(reg):
    d = reg.put_data("iris", frame(), SCHEMA)
    a = put_model(reg, payload=b"one")
    b = put_model(reg, payload=b"two")
    reg.set_alias("model", "clf", "prod", a.id)
    for ref in (f"clf:{a.id}", f"clf:{a.id[:6]}", a.id, a.id[:6], a.id[:10].upper(), "clf@prod"):
        assert reg.get(ref).id == a.id, ref
    assert reg.get("clf").id == b.id  # a bare name: its newest version
    assert reg.get(f"iris:{d.id[:6]}", kind="data").id == d.id
    assert reg.get("iris@latest", kind="data").id == d.id
    with pytest.raises(StoreError, match=r"unknown model ref"):
        reg.get(d.id)  # kinds are separate namespaces


def test_ref_errors(reg):
    with pytest.raises(StoreError, match=r"no model versions yet"):
        reg.get("clf")
    a = put_model(reg)
    with pytest.raises(StoreError, match=r"too short; give at least 6"):
        reg.get(f"clf:{a.id[:5]}")
    with pytest.raises(StoreError, match=r"'xyz123' is not a hex version id"):
        reg.get("clf:xyz123")
    absent = "f" * 10 if not a.id.startswith("f") else "e" * 10
    with pytest.raises(StoreError, match=rf"unknown model ref '{absent}'.*model names: clf; aliases: none"):
        reg.get(absent)
    with pytest.raises(StoreError, match=r"unknown model 'other'.*model names: clf"):
        reg.get(f"other:{a.id[:8]}")
    with pytest.raises(StoreError, match=r"invalid ref"):
        reg.get("")
    # the same files under a second name share the content address: a bare id is ambiguous
    twin = put_model(reg, name="clf2")
    assert twin.id == a.id
    with pytest.raises(StoreError, match=r"ambiguous model ref .* matches 2 versions \((clf2?:[0-9a-f]{16}(, )?){2}\); give NAME:ID"):
        reg.get(a.id[:8])
    assert reg.get(f"clf2:{a.id[:8]}").name == "clf2"


def test_list_is_newest_first_and_filters(reg):
    d1 = reg.put_data("iris", frame(3), SCHEMA)
    m1 = put_model(reg, payload=b"1")
    d2 = reg.put_data("iris", frame(4), SCHEMA, parent=d1.id)
    m2 = put_model(reg, name="other", payload=b"2")
    m3 = put_model(reg, payload=b"3")
    assert [v.id for v in reg.list()] == [m3.id, m2.id, d2.id, m1.id, d1.id]
    assert [v.id for v in reg.list("model")] == [m3.id, m2.id, m1.id]
    assert [v.id for v in reg.list("model", "clf")] == [m3.id, m1.id]
    assert [v.id for v in reg.list(name="iris")] == [d2.id, d1.id]
    assert reg.list("model", "nothing") == []
    assert all(x.created_at > y.created_at for x, y in zip(reg.list(), reg.list()[1:]))


def test_invalid_input_is_refused_with_a_clear_message(reg):
    for bad in ("a/b", "..", ".hidden", "", "with space", "x" * 129):
        with pytest.raises(StoreError, match=r"invalid model name"):
            put_model(reg, name=bad)
    with pytest.raises(StoreError, match=r"invalid data name '\.\./up'"):
        reg.put_data("../up", frame(), SCHEMA)
    with pytest.raises(StoreError, match=r"model 'clf' file name.*'sub/model.onnx'"):
        reg.put_model("clf", {"sub/model.onnx": b"x"}, {}, {})
    with pytest.raises(StoreError, match=r"model 'clf' file 'model.onnx': expected bytes, got str"):
        reg.put_model("clf", {"model.onnx": "text"}, {}, {})
    with pytest.raises(StoreError, match=r"non-empty dict"):
        reg.put_model("clf", {}, {}, {})
    with pytest.raises(StoreError, match=r"model 'clf' metrics.model: object is not JSON-serialisable"):
        reg.put_model("clf", {"m": b"x"}, {"model": object()}, {})
    with pytest.raises(StoreError, match=r"expected a pandas.DataFrame, got list"):
        reg.put_data("iris", [[1, 2]], SCHEMA)
    with pytest.raises(StoreError, match=r"unknown data ref 'nope'"):
        reg.put_data("iris", frame(), SCHEMA, parent="nope")
    assert reg.list() == []  # nothing half-made by the refusals


def test_a_uri_fsspec_cannot_open_is_a_store_error():
    with pytest.raises(StoreError, match=r"cannot open store 'nosuchproto://bucket/x': .*nosuchproto"):
        Registry("nosuchproto://bucket/x")


def test_local_uri_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match=r"cannot open store"):
        Registry(f)


# ---------------------------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------------------------
def test_read_file_detects_a_corrupt_blob_on_disk(local, tmp_path):
    v = put_model(local)
    digest = v.files["model.onnx"]
    blob = tmp_path / "store" / "objects" / digest[:2] / digest
    blob.write_bytes(b"onnx-1 but tampered")
    actual = __import__("hashlib").sha256(b"onnx-1 but tampered").hexdigest()
    with pytest.raises(StoreError) as err:
        local.read_file(v, "model.onnx")
    msg = str(err.value)
    assert "corrupt artifact" in msg and v.ref in msg and "'model.onnx'" in msg
    assert f"expected {digest}" in msg and f"sha256 {actual}" in msg
    assert local.read_file(v, "schema.json") == b'{"features": ["x", "y"]}'  # others still fine

    blob.unlink()
    with pytest.raises(StoreError, match=rf"blob {digest} is missing"):
        local.read_file(v, "model.onnx")
    with pytest.raises(StoreError, match=r"has no file 'weights.pt'; files: model.onnx, schema.json"):
        local.read_file(v, "weights.pt")


def test_load_frame_detects_corruption_on_memory_store(reg):
    v = reg.put_data("iris", frame(), SCHEMA)
    digest = v.files["chunk-000000.parquet"]
    reg._backend.write_atomic(f"objects/{digest[:2]}/{digest}", b"PAR1 junk")
    with pytest.raises(StoreError, match=rf"corrupt artifact: data {v.ref} file 'chunk-000000.parquet'.*expected {digest}"):
        reg.load_frame(v)
    with pytest.raises(StoreError, match=r"not a data version"):
        reg.load_frame(put_model(reg))


# ---------------------------------------------------------------------------------------------
# Diffs
# ---------------------------------------------------------------------------------------------
def test_diff_of_two_models(reg):
    a = put_model(reg, payload=b"one", metrics={"accuracy": 0.90, "loss": 0.40, "note": "x"},
                  lineage={"recipe_hash": "r", "data_version": "d1"}, meta={"params": {"lr": 0.1, "layers": 2}})
    b = put_model(reg, payload=b"two", metrics={"accuracy": 0.95, "loss": 0.25, "p99_ms": 3},
                  lineage={"recipe_hash": "r", "data_version": "d2"}, meta={"params": {"lr": 0.01, "layers": 2}},
                  parent=a.id)
    d = reg.diff(a.ref, b.ref)
    assert d["kind"] == "model" and d["a"] == a.ref and d["b"] == b.ref and d["same"] is False
    assert d["files"] == {"added": [], "removed": [], "changed": ["model.onnx"], "unchanged": ["schema.json"]}
    assert d["metrics"]["accuracy"]["delta"] == pytest.approx(0.05)
    assert d["metrics"]["loss"]["delta"] == pytest.approx(-0.15)
    assert d["metrics"]["p99_ms"] == {"a": None, "b": 3, "delta": None}
    assert d["metrics"]["note"] == {"a": "x", "b": None, "delta": None}
    assert d["lineage"] == {"data_version": {"a": "d1", "b": "d2"}}
    assert d["params"] == {"lr": {"a": 0.1, "b": 0.01}}
    assert d["parent"] == {"a": None, "b": a.id}
    assert reg.diff(a.id, a.id)["same"] is True


def test_diff_of_two_data_versions(reg):
    a_frame = frame(6)
    b_frame = a_frame.drop(index=[0, 1]).copy()  # 2 rows removed
    b_frame.loc[2, "x"] = 42.0  # 1 changed row: counts as 1 removed + 1 added
    b_frame = pd.concat([b_frame, frame(9).iloc[6:]])  # 3 rows added
    b_frame["y"] = b_frame["y"].astype("float64")
    b_frame["weight"] = 1.0
    b_frame = b_frame.drop(columns=["label"])
    a = reg.put_data("iris", a_frame, SCHEMA)
    b = reg.put_data("iris", b_frame, {"x": "float", "y": "float", "weight": "float"}, parent=a.id)
    d = reg.diff(a.id, b.ref, kind="data")
    assert d["rows"] == {"a": 6, "b": 7}
    assert (d["rows_added"], d["rows_removed"]) == (4, 3)
    assert d["columns_added"] == ["weight"] and d["columns_removed"] == ["label"]
    assert d["dtypes_changed"] == {"y": {"a": "int64", "b": "float64"}}
    assert d["schema"] == {
        "label": {"a": "str", "b": None},
        "weight": {"a": None, "b": "float"},
        "y": {"a": "int", "b": "float"},
    }


# ---------------------------------------------------------------------------------------------
# Crashes and concurrency
# ---------------------------------------------------------------------------------------------
def test_crash_mid_write_leaves_no_visible_version(uri):
    reg = Registry(uri)
    old = put_model(reg, payload=b"old")
    backend = reg._backend
    real_write = backend.write_atomic
    blob_writes = []

    def crashing_write(rel, data, overwrite=True):
        if rel.startswith("objects/"):
            blob_writes.append(rel)
            if len(blob_writes) == 2:
                # what a killed process leaves: a half-written temp file next to the target
                folder = rel.rsplit("/", 1)[0]
                real_write(f"{folder}/.{rel.rsplit('/', 1)[1]}.dead.tmp", data[: len(data) // 2])
                raise OSError("simulated crash on the 2nd blob")
        return real_write(rel, data, overwrite)

    backend.write_atomic = crashing_write
    files = {"model.onnx": b"new-model", "weights.bin": b"new-weights", "schema.json": b"new-schema"}
    with pytest.raises(StoreError, match=r"cannot write .*objects/.*simulated crash"):
        reg.put_model("clf", files, {"accuracy": 1.0}, {"data_version": "d"})
    backend.write_atomic = real_write

    for handle in (reg, Registry(uri)):  # the writer's view and a fresh reader's
        assert [v.id for v in handle.list()] == [old.id]
        assert handle.get("clf@latest").id == old.id
        assert handle.read_file(old, "model.onnx") == b"old"
    assert backend.glob("versions/model/clf/*.json") == [f"versions/model/clf/{old.id}.json"]

    retry = reg.put_model("clf", files, {"accuracy": 1.0}, {"data_version": "d"})
    assert [v.id for v in Registry(uri).list()] == [retry.id, old.id]
    for name, data in files.items():
        assert Registry(uri).read_file(retry, name) == data


def test_local_atomic_write_leaves_neither_target_nor_temp_on_failure(local, tmp_path, monkeypatch):
    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.os, "fsync", boom)
    with pytest.raises(StoreError, match=r"cannot write .*disk full"):
        put_model(local)
    monkeypatch.undo()
    objects = tmp_path / "store" / "objects"
    assert [p for p in objects.rglob("*") if p.is_file()] == []
    assert local.list() == []
    assert put_model(local).id  # and the store still works


def test_crash_between_manifest_and_catalogue_is_healed_by_a_retry(local, tmp_path, monkeypatch):
    def boom(manifest):
        raise StoreError("simulated crash before the catalogue transaction")

    monkeypatch.setattr(local._catalogue, "add", boom)
    with pytest.raises(StoreError, match="simulated crash"):
        put_model(local)
    monkeypatch.undo()
    assert Registry(tmp_path / "store").list() == []  # SQLite is the visibility point locally
    v = put_model(local)
    on_disk = json.loads((tmp_path / "store" / "versions" / "model" / "clf" / f"{v.id}.json").read_text())
    assert v.created_at == on_disk["created_at"]  # the first manifest is kept, not rewritten
    assert [x.id for x in Registry(tmp_path / "store").list()] == [v.id]


def test_sqlite_catalogue_and_its_rebuild(local, tmp_path):
    v = put_model(local)
    d = local.put_data("iris", frame(), SCHEMA)
    local.set_alias("model", "clf", "prod", v.id)
    db_path = tmp_path / "store" / "catalogue.sqlite"
    with sqlite3.connect(db_path) as db:
        assert sorted(db.execute("SELECT kind, name, id FROM versions")) == sorted(
            [("model", "clf", v.id), ("data", "iris", d.id)]
        )
        assert list(db.execute("SELECT kind, name, alias, version_id FROM aliases")) == [
            ("model", "clf", "prod", v.id)
        ]
    db_path.unlink()  # e.g. a store synced down from S3 carries no catalogue
    again = Registry(tmp_path / "store")
    assert {x.id for x in again.list()} == {v.id, d.id}
    assert again.get("clf@prod").id == v.id


def test_concurrent_put_of_the_same_content_is_harmless(uri):
    barrier = threading.Barrier(4)

    def put(_):
        reg = Registry(uri)
        barrier.wait()
        return put_model(reg).id, reg.put_data("iris", frame(), SCHEMA).id

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(put, range(4)))
    assert len(set(results)) == 1
    reg = Registry(uri)
    assert len(reg.list()) == 2
    assert reg.read_file(reg.get("clf"), "model.onnx") == b"onnx-1"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_list_show_diff_alias(tmp_path, capsys):
    uri = str(tmp_path / "store")
    reg = Registry(uri)
    d = reg.put_data("iris", frame(), SCHEMA)
    a = put_model(reg, payload=b"one", metrics={"accuracy": 0.9}, lineage={"data_version": d.id})
    b = put_model(reg, payload=b"two", metrics={"accuracy": 0.95}, lineage={"data_version": d.id})

    assert versions_command(["alias", "clf@prod", a.id[:8]], uri) == 0
    assert f"model clf@prod -> {a.ref}" in capsys.readouterr().out

    assert versions_command(["list"], uri) == 0
    out = capsys.readouterr().out
    for text in ("clf", "iris", a.id[:12], b.id[:12], d.id[:12], "prod", "accuracy=0.95", "rows=5"):
        assert text in out, text
    assert a.id[:13] not in out  # ids are shown as 12 characters
    assert out.index(b.id[:12]) < out.index(a.id[:12]) < out.index(d.id[:12])  # newest first

    assert versions_command(["list", "--kind", "data"], uri) == 0
    out = capsys.readouterr().out
    assert d.id[:12] in out and a.id[:12] not in out

    assert versions_command(["show", "clf@prod"], uri) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == a.id and shown["aliases"] == ["prod"] and shown["lineage"]["data_version"] == d.id

    assert versions_command(["show", d.id[:8]], uri) == 0  # the kind is found without --kind
    assert json.loads(capsys.readouterr().out)["kind"] == "data"

    assert versions_command(["diff", "clf@prod", b.id], uri) == 0
    out = capsys.readouterr().out
    assert "accuracy  0.9 -> 0.95  (+0.05)" in out and "changed model.onnx" in out
    assert versions_command(["diff", b.id, a.id], uri) == 0
    assert "(-0.05)" in capsys.readouterr().out


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    uri = str(tmp_path / "store")
    put_model(Registry(uri))
    for argv, expected in (
        (["show", "clf@nope"], "unknown alias 'nope'"),
        (["show", "zzz"], "unknown"),
        (["alias", "clf", "abcdef"], "write NAME@ALIAS"),
        (["frobnicate"], "invalid choice"),
        (["list", "--kind", "weights"], "invalid choice"),
    ):
        assert versions_command(argv, uri) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err and err.count("\n") == 1, (argv, err)
    assert versions_command(["list"], "nosuchproto://x") == 2
    assert "cannot open store" in capsys.readouterr().err
