"""Chunked data versions on real stores and real Parquet: exact round trips, chunks shared
between versions, deltas for scattered changes, integrity on read, crashes, old versions,
appended batches."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from framework.errors import StoreError
from framework.registry import Registry
from framework.registry import tables
from framework.registry.versions import canonical_json, frame_content_hash, sha256

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["local", "memory"])
def reg(request, tmp_path):
    if request.param == "local":
        yield Registry(tmp_path / "store")
    else:
        import fsspec

        url = f"memory://chunks-{uuid.uuid4().hex}"
        yield Registry(url)
        fsspec.filesystem("memory").rm(url[len("memory://"):], recursive=True)


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 100 rows, so a few thousand rows make a multi-chunk table."""
    monkeypatch.setattr(tables, "MIN_CHUNK_ROWS", 100)
    monkeypatch.setattr(tables, "MAX_CHUNK_ROWS", 100)


def mixed(n: int = 12, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "f": rng.normal(size=n),
        "f_nan": np.where(np.arange(n) % 4 == 0, np.nan, rng.normal(size=n)),
        "i": np.arange(n, dtype="int64"),
        "i_null": pd.array([None if k % 3 == 0 else k for k in range(n)], dtype="Int64"),
        "s": pd.Series([None if k % 5 == 0 else f"s{k % 4}" for k in range(n)], dtype="str"),
        "o": pd.Series([None if k % 6 == 0 else f"o{k}" for k in range(n)], dtype=object),
        "sp": pd.array([None if k % 2 else f"p{k}" for k in range(n)], dtype="string"),
        # categories in a non-sorted order, one unused, one missing value
        "c": pd.Categorical([None if k == 1 else ["b", "a"][k % 2] for k in range(n)], categories=["b", "a", "zz"]),
        "co": pd.Categorical(["lo", "hi", "mid"] * (n // 3) + ["lo"] * (n % 3), categories=["lo", "mid", "hi"], ordered=True),
        "b": np.arange(n) % 2 == 0,
        "bn": pd.array([None if k % 4 == 1 else k % 2 == 0 for k in range(n)], dtype="boolean"),
        "t": pd.date_range("2024-01-01", periods=n, freq="h"),
        "tz": pd.Series(pd.date_range("2024-03-30", periods=n, freq="6h", tz="Europe/Paris")).where(np.arange(n) % 7 != 3),
        "td": pd.to_timedelta(np.arange(n), unit="s"),
    })


def chunk_blobs(reg) -> set[str]:
    return {rel.rsplit("/", 1)[-1] for rel in reg._backend.glob("objects/*/*")}


def assert_exact(back: pd.DataFrame, expected: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(back, expected, check_exact=True)
    assert list(back.dtypes.astype(str)) == list(expected.dtypes.astype(str))
    for col in expected.select_dtypes("category"):
        assert list(back[col].cat.categories) == list(expected[col].cat.categories)
        assert back[col].cat.ordered == expected[col].cat.ordered
    assert frame_content_hash(back) == frame_content_hash(expected)


# ---------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------
def test_mixed_types_round_trip_exactly(reg):
    frame = mixed()
    v = reg.put_data("mixed", frame, {"key": "i"})
    back = reg.load_frame(v)
    assert_exact(back, frame)
    assert back["o"].iloc[0] is None  # a missing python object stays None, not NaN
    assert v.table["layout"] == tables.LAYOUT and v.table["rows"] == 12
    assert sorted(v.files) == ["categories.parquet", "chunk-000000.parquet"]
    assert reg.put_data("mixed", back, {"key": "i"}).id == v.id  # what is read back has the same id


@pytest.mark.parametrize("index", ["named", "strings", "multi", "offset_range", "empty"])
def test_indexes_and_edge_shapes_round_trip(reg, index):
    frame = mixed(9)
    if index == "named":
        frame = frame.set_index("i")
    elif index == "strings":
        frame.index = pd.Index([f"r{k}" for k in range(9)], name="row")
    elif index == "multi":
        frame = frame.set_index(["i", "b"])
    elif index == "offset_range":
        frame.index = pd.RangeIndex(100, 100 + 3 * 9, 3, name="pos")
    else:
        frame = frame.iloc[:0]
    v = reg.put_data("shapes", frame, {})
    assert_exact(reg.load_frame(v), frame)


def test_delta_round_trips_mixed_types_with_changes_inserts_and_removals(reg, small_chunks):
    base = mixed(1000)
    v1 = reg.put_data("mixed", base, {"key": "i"})
    child = base.drop(index=[3, 500, 999]).copy()
    child.loc[[10, 400, 800], "f"] = 7.0
    child.loc[20, "c"] = "zz"
    child = pd.concat([child.iloc[:300], mixed(5, seed=9).assign(i=np.arange(2000, 2005)), child.iloc[300:]],
                      ignore_index=True)
    v2 = reg.put_data("mixed", child, {"key": "i"}, parent=v1.id)
    assert v2.table["delta_of"] == v1.id and v2.table["pieces"] > 1
    assert_exact(reg.load_frame(v2), child)
    assert_exact(reg.load_frame(v1), base)  # the parent is untouched


def test_text_and_category_content_change_gives_a_new_id(reg):
    frame = mixed()
    v = reg.put_data("m", frame, {})
    recat = frame.copy()
    recat["c"] = recat["c"].cat.reorder_categories(["a", "b", "zz"])  # same values, other category order
    assert reg.put_data("m", recat, {}).id != v.id
    as_object = frame.astype({"s": object})
    assert reg.put_data("m", as_object, {}).id != v.id


def test_frames_the_store_cannot_hold_are_refused_clearly(reg):
    with pytest.raises(StoreError, match=r"column names must be strings.*\[0, 1\]"):
        reg.put_data("bad", pd.DataFrame([[1, 2]]), {})
    dup = pd.DataFrame([[1, 2]], columns=["a", "a"])
    with pytest.raises(StoreError, match=r"duplicate column names \['a'\]"):
        reg.put_data("bad", dup, {})
    with pytest.raises(StoreError, match=r"cannot store the frame as Parquet"):
        reg.put_data("bad", pd.DataFrame({"x": pd.Series([1, "a"], dtype=object)}), {})
    assert reg.list() == []


# ---------------------------------------------------------------------------------------------
# Sharing and deltas
# ---------------------------------------------------------------------------------------------
def numbers(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(n), "x": rng.normal(size=n), "label": rng.choice(["a", "b", "c"], size=n)})


def test_appending_rows_shares_every_old_chunk(reg, small_chunks):
    base = numbers(1000)
    v1 = reg.put_data("n", base, {})
    assert len(v1.table["chunk_rows"]) == 10 and "rows.parquet" not in v1.files
    before = chunk_blobs(reg)
    more = pd.concat([base, numbers(50, seed=1).assign(id=np.arange(1000, 1050))], ignore_index=True)
    v2 = reg.put_data("n", more, {}, parent=v1.id)
    added = chunk_blobs(reg) - before
    assert len(added) == 1  # one new chunk of 50 rows; the chunks in order are the table: no row map
    old_chunks = {d for f, d in v1.files.items() if f.startswith("chunk-")}
    assert old_chunks <= set(v2.files.values()) and "rows.parquet" not in v2.files
    assert v2.table["new_rows"] == 50 and v2.table["delta_of"] == v1.id
    assert_exact(reg.load_frame(v2), more)


def test_scattered_changes_cost_only_the_changed_rows(tmp_path, small_chunks):
    reg = Registry(tmp_path / "store")
    base = numbers(5000)
    v1 = reg.put_data("n", base, {})
    first = sum(p.stat().st_size for p in (tmp_path / "store" / "objects").rglob("*") if p.is_file())
    changed = base.copy()
    rows = np.arange(7, 5000, 100)  # 1% of the rows, one in every chunk
    changed.loc[rows, "x"] = -1.0
    before = chunk_blobs(reg)
    v2 = reg.put_data("n", changed, {}, parent=v1.id)
    new = chunk_blobs(reg) - before
    extra = sum(p.stat().st_size for p in (tmp_path / "store" / "objects").rglob("*") if p.name in new)
    assert v2.table["new_rows"] == len(rows) and len(new) == 2  # the 50 rows in one chunk, and the row map
    assert extra < 0.15 * first  # the tiny tables here carry Parquet's fixed overhead; see the benchmark
    assert v2.table["pieces"] == 3 * len(rows)  # per chunk: the rows before, the changed row, the rows after
    assert_exact(reg.load_frame(v2), changed)


def test_a_chunk_the_child_barely_uses_is_compacted_away(reg, small_chunks):
    base = numbers(1000)
    v1 = reg.put_data("n", base, {})
    # keep 30 of the 100 rows of chunk 0 and every row of the others: chunk 0 is rewritten
    child = pd.concat([base.iloc[:30], base.iloc[100:]], ignore_index=True)
    v2 = reg.put_data("n", child, {}, parent=v1.id)
    assert v1.files["chunk-000000.parquet"] not in v2.files.values()
    assert v2.table["new_rows"] == 30
    stored = sum(v2.table["chunk_rows"])
    assert stored <= len(child) / tables.MIN_CHUNK_USE  # reads stay bounded
    assert_exact(reg.load_frame(v2), child)


def test_mostly_new_rows_or_a_new_schema_is_a_snapshot(reg, small_chunks):
    base = numbers(1000)
    v1 = reg.put_data("n", base, {})
    other = numbers(1000, seed=5)  # every x differs
    v2 = reg.put_data("n", other, {}, parent=v1.id)
    assert v2.table["delta_of"] is None and v2.table["pieces"] == 0
    wider = base.assign(extra=1.0)
    v3 = reg.put_data("n", wider, {}, parent=v1.id)
    assert v3.table["delta_of"] is None
    shuffled = base.sample(frac=1.0, random_state=0)  # same rows, no order left: a row map would not pay off
    v4 = reg.put_data("n", shuffled.reset_index(drop=True), {}, parent=v1.id)
    assert v4.table["delta_of"] is None
    for v, frame in ((v2, other), (v3, wider), (v4, shuffled.reset_index(drop=True))):
        assert_exact(reg.load_frame(v), frame)


def test_duplicate_rows_are_matched_and_kept(reg, small_chunks):
    base = pd.DataFrame({"x": [1.0, 1.0, 2.0, 2.0, 2.0] * 200})
    v1 = reg.put_data("dups", base, {})
    child = pd.concat([base, pd.DataFrame({"x": [2.0, 3.0]})], ignore_index=True)
    v2 = reg.put_data("dups", child, {}, parent=v1.id)
    assert v2.table["delta_of"] == v1.id and v2.table["new_rows"] == 1  # 2.0 exists: only 3.0 is new
    assert_exact(reg.load_frame(v2), child)


# ---------------------------------------------------------------------------------------------
# Integrity
# ---------------------------------------------------------------------------------------------
def test_a_corrupt_or_missing_chunk_is_named_with_version_file_and_path(tmp_path, small_chunks):
    reg = Registry(tmp_path / "store")
    v1 = reg.put_data("n", numbers(1000), {})
    changed = numbers(1000)
    changed.loc[[5, 450], "x"] = 0.0
    v2 = reg.put_data("n", changed, {}, parent=v1.id)
    digest = v1.files["chunk-000004.parquet"]
    blob = tmp_path / "store" / "objects" / digest[:2] / digest
    good = blob.read_bytes()
    blob.write_bytes(good[:-10] + b"0123456789")
    for v in (v1, v2):  # the chunk is shared: both versions see it
        with pytest.raises(StoreError) as err:
            reg.load_frame(v)
        msg = str(err.value)
        assert msg.startswith("corrupt artifact: ") and v.ref in msg and "'chunk-000004.parquet'" in msg
        assert str(blob) in msg and f"expected {digest}" in msg
    blob.unlink()
    with pytest.raises(StoreError, match=rf"data {v2.ref} file 'chunk-000004.parquet': blob {digest} is missing at {blob}"):
        reg.load_frame(v2)
    blob.write_bytes(good)
    row_map = v2.files["rows.parquet"]
    (tmp_path / "store" / "objects" / row_map[:2] / row_map).write_bytes(b"PAR1")
    with pytest.raises(StoreError, match=rf"corrupt artifact: data {v2.ref} file 'rows.parquet'"):
        reg.load_frame(v2)
    assert_exact(reg.load_frame(v1), numbers(1000))


def test_a_consistent_but_wrong_row_map_is_refused(reg, small_chunks):
    v1 = reg.put_data("n", numbers(1000), {})
    v2 = reg.put_data("n", numbers(1010), {}, parent=v1.id)
    for pieces, message in (
        (([0], [0], [5]), r"the row map does not describe 1010 rows of 11 chunks"),
        (([0], [0], [1010]), r"the row map points outside its chunks"),  # chunk 0 has 100 rows
    ):
        bogus = tables._row_map_bytes(*(np.asarray(p) for p in pieces))
        digest = sha256(bogus)
        reg._backend.write_atomic(f"objects/{digest[:2]}/{digest}", bogus)
        manifest = v2.manifest()
        manifest["files"]["rows.parquet"] = digest
        forged = type(v2).from_manifest(manifest)  # what a manifest edited by hand would say
        with pytest.raises(StoreError, match=message):
            reg.load_frame(forged)


def test_versions_written_as_one_parquet_file_still_read(tmp_path):
    """A store written before chunked tables: manifests with one data.parquet blob."""
    root = tmp_path / "old-store"
    frame = numbers(20)
    blob = frame.to_parquet(engine="pyarrow", index=True)
    digest = sha256(blob)
    (root / "objects" / digest[:2]).mkdir(parents=True)
    (root / "objects" / digest[:2] / digest).write_bytes(blob)
    vid = "ab" * 32
    manifest = {"kind": "data", "name": "old", "id": vid, "parent": None, "created_at": "2025-01-01T00:00:00.000000+00:00",
                "files": {"data.parquet": digest}, "metrics": {"rows": 20, "columns": 3}, "lineage": {}, "meta": {},
                "schema": {"target": "label"}, "format": 1}
    (root / "versions" / "data" / "old").mkdir(parents=True)
    (root / "versions" / "data" / "old" / f"{vid}.json").write_bytes(canonical_json(manifest))

    reg = Registry(root)  # no catalogue yet: rebuilt from the manifests
    old = reg.get("old", "data")
    pd.testing.assert_frame_equal(reg.load_frame(old), frame)
    assert reg.batches(old) == [{"version": vid, "start": 0, "stop": 20, "rows": 20, "content": None}]
    child = pd.concat([frame, numbers(5, 1)], ignore_index=True)
    new = reg.put_data("old", child, {"target": "label"}, parent=old.id)  # an old parent: a snapshot
    assert new.table["delta_of"] is None and new.parent == old.id
    assert_exact(reg.load_frame(new), child)
    assert reg.diff(old.id, new.id, kind="data")["rows_added"] == 5
    on_disk = json.loads((root / "versions" / "data" / "old" / f"{new.id}.json").read_text())
    assert on_disk["format"] == 2 and on_disk["table"]["layout"] == tables.LAYOUT
    model_manifest = reg.put_model("m", {"model.onnx": b"x"}, {}, {}).manifest()
    assert model_manifest["format"] == 1 and "table" not in model_manifest  # older readers still read models


def test_a_writer_killed_between_chunks_and_manifest_leaves_the_store_consistent(tmp_path):
    store = tmp_path / "store"
    reg = Registry(store)
    v1 = reg.put_data("n", numbers(3000), {})
    script = textwrap.dedent(f"""
        import os, signal
        import numpy as np, pandas as pd
        from framework.registry import Registry, tables
        tables.MIN_CHUNK_ROWS = tables.MAX_CHUNK_ROWS = 500
        reg = Registry({str(store)!r})
        real = reg._backend.write_atomic
        def write(rel, data, overwrite=True):
            if rel.startswith("versions/"):  # every blob is on disk: die before the manifest
                os.kill(os.getpid(), signal.SIGKILL)
            return real(rel, data, overwrite)
        reg._backend.write_atomic = write
        rng = np.random.default_rng(1)
        frame = pd.DataFrame({{"id": np.arange(4000), "x": rng.normal(size=4000), "label": rng.choice(["a", "b"], 4000)}})
        reg.put_data("n", frame, {{}}, parent={v1.id!r})
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr
    orphans = chunk_blobs(reg) - set(v1.files.values())
    assert orphans  # the chunks were written ...
    for handle in (reg, Registry(store)):  # ... but no version points at them
        assert [v.id for v in handle.list("data")] == [v1.id]
        assert_exact(handle.load_frame(v1), numbers(3000))
    assert not list(store.glob("versions/data/n/.*"))  # no temp manifest either

    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"id": np.arange(4000), "x": rng.normal(size=4000), "label": rng.choice(["a", "b"], 4000)})
    retry = Registry(store).put_data("n", frame, {}, parent=v1.id)
    assert_exact(Registry(store).load_frame(retry), frame)
    assert [v.id for v in Registry(store).list("data")] == [retry.id, v1.id]


# ---------------------------------------------------------------------------------------------
# Appended batches
# ---------------------------------------------------------------------------------------------
def batch(k: int, n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(k)
    return pd.DataFrame({
        "id": np.arange(k * n, (k + 1) * n),
        "ts": pd.date_range(f"2024-01-{k + 1:02d}", periods=n, freq="min"),
        "x": rng.normal(size=n),
        "kind": pd.Categorical(rng.choice(["a", "b"] if k < 2 else ["a", "b", f"new{k}"], size=n)),
    })


def test_append_builds_cumulative_versions_and_records_each_batch(reg):
    seen = []
    for k in range(3):
        appended = reg.append_data("events", batch(k), {"key": "id", "time": "ts"})
        assert not appended.repeated
        seen.append(appended.version)
    v1, v2, v3 = seen
    assert v1.parent is None and v2.parent == v1.id and v3.parent == v2.id
    assert [(b["version"], b["start"], b["stop"]) for b in reg.batches(v3)] == [
        (v1.id, 0, 40), (v2.id, 40, 80), (v3.id, 80, 120)]
    whole = reg.load_frame(v3)
    assert list(whole["id"]) == list(range(120)) and isinstance(whole.index, pd.RangeIndex)
    # categories grow batch by batch, the older ones first
    assert list(whole["kind"].cat.categories) == ["a", "b", "new2"]
    pd.testing.assert_frame_equal(whole.iloc[80:].reset_index(drop=True), batch(2).astype({"kind": whole["kind"].dtype}))
    assert v3.table["delta_of"] == v2.id  # cumulative versions cost the new rows, not the whole table


def test_the_same_batch_twice_in_a_row_is_stored_once(reg):
    first = reg.append_data("events", batch(0), {})
    again = reg.append_data("events", batch(0), {})
    assert again.repeated and again.version.id == first.version.id
    assert len(reg.list("data", "events")) == 1 and len(again.frame) == 40
    later = reg.append_data("events", batch(1), {})
    assert not later.repeated and len(later.frame) == 80


def test_append_refuses_rows_that_do_not_fit(reg):
    reg.append_data("events", batch(0), {})
    with pytest.raises(StoreError, match=r"other columns \(missing: \['x'\]; extra: \['y'\]\)"):
        reg.append_data("events", batch(1).rename(columns={"x": "y"}), {})
    with pytest.raises(StoreError, match=r"column 'x' is float64 in the stored rows but str in the new ones"):
        reg.append_data("events", batch(1).astype({"x": str}), {})
    ints = batch(1).assign(id=batch(1)["id"].astype("float64"))  # whole floats fit an int column
    assert reg.append_data("events", ints, {}).frame["id"].dtype == "int64"
    with pytest.raises(StoreError, match=r"column 'id' is int64 in the stored rows; the new float64 values do not fit"):
        reg.append_data("events", batch(2).assign(id=0.5), {})


def test_append_schema_may_depend_on_the_combined_rows(reg):
    reg.append_data("events", batch(0), lambda frame: {"rows_seen": len(frame)})
    v = reg.append_data("events", batch(1), lambda frame: {"rows_seen": len(frame)}).version
    assert v.schema == {"rows_seen": 80}


def test_a_reused_row_is_the_same_content_bit_for_bit(reg, small_chunks):
    base = pd.DataFrame({"id": np.arange(300), "x": np.zeros(300), "s": ["a"] * 300})
    v1 = reg.put_data("z", base, {"key": "id"})
    child = base.copy()
    child.loc[7, "x"] = -0.0  # equal to 0.0 for ==, another value for a content address
    child.loc[8, "s"] = None
    v2 = reg.put_data("z", child, {"key": "id"}, parent=v1.id)
    assert v2.table["new_rows"] == 2
    back = reg.load_frame(v2)
    assert np.signbit(back.loc[7, "x"]) and not np.signbit(back.loc[6, "x"])
    assert_exact(back, child)
