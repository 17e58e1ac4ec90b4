"""How a data version's table is stored: content-addressed Parquet chunks plus a row map.

A version's rows are a list of *pieces* ``(chunk, start, rows)``: read those rows of that chunk,
in order, and the concatenation is the table. Chunks are blobs named by their sha256, so a chunk
two versions share is stored once.

* A **snapshot** cuts the table into chunks of at most ``chunk_rows`` rows; the pieces are the
  chunks whole, in order, and no row map is stored.
* A **delta** against the parent reuses the parent's chunks for every row the parent already
  holds, wherever it sits: only new and changed rows are written, as new chunks in the child's
  order, and the row map (``rows.parquet``: chunk, start, rows per piece) says where each row of
  the child comes from. Removed rows are simply not referenced. This is what makes scattered
  changes cheap: with 1% of rows changed uniformly, every fixed-size chunk holds some change, but
  the delta stores only that 1% plus a row map of about two pieces per changed row.

  A child row's candidate in the parent is the row with the same declared key (``schema["key"]``)
  or, without a key, a row with the same 64-bit row hash; a candidate is reused only if every
  cell is equal (floats bit for bit), so a hash collision can never swap a row's content.

Reads never replay a chain of deltas: the row map points straight at chunks, whatever version
wrote them. What keeps reads bounded is compaction at write time: a parent chunk of which the
child uses less than ``MIN_CHUNK_USE`` of the rows is not referenced; its live rows are copied
into the child's new chunks instead, so a read touches at most ~1/MIN_CHUNK_USE times the rows it
returns. A delta that would copy more than half of the rows, or whose row map would be more
fragmented than ``MAX_PIECES_PER_ROW``, is written as a snapshot.

A RangeIndex is stored as three numbers; any other index is stored as columns of the chunks (and
is part of each row's hash). Column dtypes pyarrow cannot bring back on its own (``object``,
categoricals with their exact categories and order) are restored from what the version records.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import StoreError

#: the manifest's ``table.layout`` of versions written by this module
LAYOUT = "chunks/1"
CHUNK_PREFIX = "chunk-"
ROW_MAP_FILE = "rows.parquet"
CATEGORIES_FILE = "categories.parquet"
#: aim for chunks of about this much in-memory data (pyarrow's count), within the row bounds:
#: large enough that Parquet's per-chunk dictionaries and footers cost little (a single file
#: has row groups of 1Mi rows), small enough to write one chunk at a time
TARGET_CHUNK_BYTES = 256 * 1024 * 1024
MIN_CHUNK_ROWS, MAX_CHUNK_ROWS = 4096, 1 << 20
#: a parent chunk the child uses less than this share of is compacted away (its rows copied)
MIN_CHUNK_USE = 0.5
#: a delta copying more than this share of the rows is written as a snapshot instead
MAX_DELTA_SHARE = 0.5
#: more pieces than this per row: the rows are too scattered for a row map to pay off
MAX_PIECES_PER_ROW = 0.5
COMPRESSION = "zstd"
#: pandas' hash_key (16 bytes) for row hashes
HASH_KEY = "0123456789123456"


def chunk_name(i: int) -> str:
    return f"{CHUNK_PREFIX}{i:06d}.parquet"


# ---------------------------------------------------------------------------------------------
# What a frame is, independent of how it is stored
# ---------------------------------------------------------------------------------------------
def is_range_index(index: Any) -> bool:
    import pandas as pd

    return type(index) is pd.RangeIndex


def _check_frame(frame: Any, where: str) -> None:
    import pandas as pd

    if not isinstance(frame, pd.DataFrame):
        raise StoreError(f"{where}: expected a pandas.DataFrame, got {type(frame).__name__}")
    bad = [c for c in frame.columns if not isinstance(c, str)]
    if bad:
        raise StoreError(f"{where}: column names must be strings (Parquet); got {bad[:5]!r}: rename them")
    if frame.columns.has_duplicates:
        dup = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise StoreError(f"{where}: duplicate column names {dup[:5]!r}")


def _categories_digest(dtype: Any) -> str:
    import pandas as pd

    cats = pd.util.hash_pandas_object(pd.Series(dtype.categories), index=False).to_numpy(dtype="<u8")
    return hashlib.sha256(cats.tobytes() + (b"o" if dtype.ordered else b"u")).hexdigest()


def describe_frame(frame: Any, where: str = "frame") -> dict:
    """Columns, dtypes and index of a frame as JSON: what the content hash covers besides the
    rows, and what a read needs to rebuild the exact frame."""
    import pandas as pd

    _check_frame(frame, where)
    index = frame.index
    if is_range_index(index):
        index_info: dict = {"range": [int(index.start), int(index.step)], "name": index.name}
    else:
        index_info = {"stored": [None if n is None else str(n) for n in index.names],
                      "dtypes": [str(t) for t in getattr(index, "dtypes", [index.dtype])]}
    categorical = {}
    for col, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.CategoricalDtype):
            categorical[col] = {"ordered": bool(dtype.ordered), "digest": _categories_digest(dtype)}
    return {
        "columns": list(frame.columns),
        "dtypes": {c: str(t) for c, t in frame.dtypes.items()},
        "categorical": categorical,
        "index": index_info,
        "rows": int(len(frame)),
    }


def row_hashes(frame: Any, where: str = "frame") -> Any:
    """One 64-bit hash per row; the index counts unless it is a RangeIndex, which is stored as
    numbers, not per row."""
    import pandas as pd

    try:
        return pd.util.hash_pandas_object(
            frame, index=not is_range_index(frame.index), hash_key=HASH_KEY
        ).to_numpy(dtype="<u8")
    except TypeError as exc:
        raise StoreError(f"{where}: a cell cannot be hashed ({exc}); store scalar values only") from exc


def content_hash(description: dict, hashes: Any) -> str:
    """The table's content address: its description plus its row hashes, in order."""
    header = {k: description[k] for k in ("columns", "dtypes", "categorical", "index", "rows")}
    h = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    h.update(hashes.tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
@dataclass
class TableWrite:
    """What ``plan_write`` decided: the blobs to write and the manifest entries."""

    #: name in the version -> (digest, None) for a reused blob or (None, bytes producer)
    files: dict[str, tuple[str | None, Callable[[], bytes] | None]] = field(default_factory=dict)
    table: dict = field(default_factory=dict)


def to_arrow(frame: Any, where: str) -> Any:
    import pyarrow as pa

    try:
        return pa.Table.from_pandas(frame, preserve_index=not is_range_index(frame.index))
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise StoreError(f"{where}: cannot store the frame as Parquet: {exc}") from exc


def _parquet_bytes(table: Any) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression=COMPRESSION)
    return sink.getvalue().to_pybytes()


def _chunk_rows(table: Any) -> int:
    per_row = max(1, table.nbytes // max(1, table.num_rows))
    return int(min(MAX_CHUNK_ROWS, max(MIN_CHUNK_ROWS, TARGET_CHUNK_BYTES // per_row)))


def _categories_blob(frame: Any) -> bytes | None:
    """Each categorical column's categories, in order, as one row of list columns."""
    import pandas as pd
    import pyarrow as pa

    cols = {c: t for c, t in frame.dtypes.items() if isinstance(t, pd.CategoricalDtype)}
    if not cols:
        return None
    arrays = {c: pa.array([pa.array(t.categories.to_numpy(dtype=object)).to_pylist()]) for c, t in cols.items()}
    return _parquet_bytes(pa.table(arrays))


def _snapshot(arrow: Any, description: dict) -> TableWrite:
    n = arrow.num_rows
    size = _chunk_rows(arrow)
    write = TableWrite()
    starts = range(0, n, size) if n else [0]
    rows = []
    for i, start in enumerate(starts):
        part = arrow.slice(start, size)
        write.files[chunk_name(i)] = (None, lambda part=part: _parquet_bytes(part))
        rows.append(int(part.num_rows))
    write.table = {"chunk_rows": rows, "pieces": 0, "new_rows": n, "delta_of": None}
    return write


@dataclass
class ParentRows:
    """What a delta needs of its parent: its rows (as Arrow, in its row order), how to find a
    child row's candidate among them (key values or row hashes), and where each is stored
    (position in the concatenation of the parent's chunks)."""

    version_id: str
    description: dict
    chunks: list[tuple[str, int]]  # (digest, rows) in the parent's chunk order
    table: Any  # pyarrow.Table of the parent's frame
    stored_at: Any
    #: the declared key column and the parent's key values (unique), or None
    key: str | None = None
    keys: Any = None
    #: the parent's row hashes when there is no usable key
    hashes: Any = None


def plan_write(frame: Any, description: dict, hashes: Any, where: str,
               parent: ParentRows | None = None) -> TableWrite:
    """Decide how to store ``frame``: a delta against ``parent`` when that pays off, else a
    snapshot. Nothing is written here; the caller writes ``files`` then the manifest."""
    arrow = to_arrow(frame, where)
    write = _delta(frame, arrow, description, hashes, parent) if parent is not None else None
    if write is None:
        write = _snapshot(arrow, description)
    categories = _categories_blob(frame)
    if categories is not None:
        write.files[CATEGORIES_FILE] = (None, lambda: categories)
    write.table = {
        "layout": LAYOUT,
        **{k: description[k] for k in ("columns", "dtypes", "index", "rows")},
        "ordered": sorted(c for c, info in description["categorical"].items() if info["ordered"]),
        **write.table,
    }
    return write


def _compatible(a: dict, b: dict) -> bool:
    # same columns and dtype names (categories may differ: rows match by value), same index kind
    same_index = ("range" in a["index"]) == ("range" in b["index"]) and (
        "range" in a["index"] or a["index"] == b["index"])
    return a["columns"] == b["columns"] and a["dtypes"] == b["dtypes"] and same_index


def _delta(frame: Any, arrow: Any, description: dict, hashes: Any, parent: ParentRows) -> TableWrite | None:
    import numpy as np
    import pandas as pd

    n = len(frame)
    if n == 0 or parent.table.num_rows == 0 or not _compatible(description, parent.description):
        return None
    if parent.key is not None and parent.key in frame.columns:
        cand = parent.keys.get_indexer(pd.Index(frame[parent.key]))
    elif parent.hashes is not None:
        cand = _match(parent.hashes, hashes)
    else:
        return None
    matched = cand >= 0
    matched &= _rows_equal(arrow, parent.table, np.maximum(cand, 0))
    src = np.where(matched, parent.stored_at[np.maximum(cand, 0)], -1)

    chunk_rows = np.asarray([r for _, r in parent.chunks], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(chunk_rows)])
    src_chunk = np.searchsorted(offsets, src, side="right") - 1
    # compaction: drop parent chunks the child barely uses; their rows are copied instead
    live = np.zeros(int(offsets[-1]), dtype=bool)
    live[src[matched]] = True  # each stored row counts once, however many child rows use it
    used = np.add.reduceat(live, np.minimum(offsets[:-1], len(live) - 1)) if len(live) else np.zeros(len(chunk_rows), dtype=np.int64)
    used = np.where(chunk_rows > 0, used, 0)
    keep = used >= MIN_CHUNK_USE * np.maximum(chunk_rows, 1)
    reused = matched & keep[np.where(matched, src_chunk, 0)]
    new_pos = np.flatnonzero(~reused)
    if len(new_pos) > MAX_DELTA_SHARE * n:
        return None

    kept = np.flatnonzero(keep)
    renumber = np.full(len(chunk_rows), -1, dtype=np.int64)
    renumber[kept] = np.arange(len(kept))
    size = _chunk_rows(arrow)
    loc_chunk = np.empty(n, dtype=np.int64)
    loc_off = np.empty(n, dtype=np.int64)
    loc_chunk[reused] = renumber[src_chunk[reused]]
    loc_off[reused] = src[reused] - offsets[src_chunk[reused]]
    loc_chunk[new_pos] = len(kept) + np.arange(len(new_pos)) // size
    loc_off[new_pos] = np.arange(len(new_pos)) % size

    # a piece starts wherever the next row is not the next row of the same chunk
    starts = np.flatnonzero(np.concatenate([[True], (loc_chunk[1:] != loc_chunk[:-1]) | (loc_off[1:] != loc_off[:-1] + 1)]))
    if len(starts) > max(1, MAX_PIECES_PER_ROW * n):
        return None
    lengths = np.diff(np.concatenate([starts, [n]]))

    write = TableWrite()
    rows = []
    for i, k in enumerate(kept):
        write.files[chunk_name(i)] = (parent.chunks[k][0], None)
        rows.append(int(chunk_rows[k]))
    if len(new_pos):
        patch = arrow.take(new_pos)
        for j, start in enumerate(range(0, len(new_pos), size)):
            part = patch.slice(start, size)
            write.files[chunk_name(len(kept) + j)] = (None, lambda part=part: _parquet_bytes(part))
            rows.append(int(part.num_rows))
    whole_chunks = (len(starts) == len(rows) and (loc_chunk[starts] == np.arange(len(rows))).all()
                    and not loc_off[starts].any() and (lengths == np.asarray(rows)).all())
    if not whole_chunks:  # e.g. rows appended at the end need no row map: the chunks in order are the table
        row_map = _row_map_bytes(loc_chunk[starts], loc_off[starts], lengths)
        write.files[ROW_MAP_FILE] = (None, lambda: row_map)
    write.table = {"chunk_rows": rows, "pieces": 0 if whole_chunks else int(len(starts)),
                   "new_rows": int(len(new_pos)), "delta_of": parent.version_id}
    return write


def _rows_equal(child: Any, parent: Any, cand: Any) -> Any:
    """Per child row: is it cell for cell equal to parent row ``cand``? Missing equals missing;
    floats compare bit for bit (-0.0 is not 0.0), so a reused row is the very same content."""
    import numpy as np
    import pyarrow as pa

    n = min(child.num_rows, parent.num_rows)
    if (cand[:n] == np.arange(n)).all() and not (cand[n:] >= 0).any():
        # rows edited in place, or appended at the end: compare the rows as they lie (no copy)
        equal = np.zeros(child.num_rows, dtype=bool)
        equal[:n] = _columns_equal(child.slice(0, n), parent.slice(0, n))
        return equal
    return _columns_equal(child, parent.take(pa.array(cand)))


def _columns_equal(child: Any, other: Any) -> Any:
    """Row by row: are two tables of the same length equal in every column?"""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    equal = np.ones(child.num_rows, dtype=bool)
    for name in child.column_names:
        if name not in other.column_names:
            return np.zeros(child.num_rows, dtype=bool)
        a, b = child.column(name), other.column(name)
        if pa.types.is_dictionary(a.type):
            a = a.cast(a.type.value_type)
        if pa.types.is_dictionary(b.type):
            b = b.cast(b.type.value_type)
        if pa.types.is_null(a.type) and pa.types.is_null(b.type):  # missing everywhere on both sides
            continue
        if a.type != b.type:
            try:
                b = b.cast(a.type)  # e.g. a chunk that held only missing values, or string vs large_string
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                return np.zeros(child.num_rows, dtype=bool)
        if pa.types.is_floating(a.type):
            x, y = a.to_numpy(), b.to_numpy()  # missing -> NaN
            same = x.view(f"u{x.itemsize}") == y.view(f"u{y.itemsize}")
            equal &= same | (np.isnan(x) & np.isnan(y))
            continue
        try:
            same = pc.fill_null(pc.equal(a, b), False)
        except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # a type pyarrow cannot compare
            return np.zeros(child.num_rows, dtype=bool)
        both_missing = pc.and_(pc.is_null(a), pc.is_null(b))
        equal &= pc.or_(same, both_missing).to_numpy(zero_copy_only=False)
    return equal


def _match(parent_h: Any, child_h: Any) -> Any:
    """For each child row, a parent row with the same hash (-1: none). The k-th copy of a
    duplicated row in the child gets the k-th copy in the parent (the first once the parent
    runs out), so duplicates kept in order still form long runs."""
    import numpy as np

    if len(parent_h) == 0:
        return np.full(len(child_h), -1, dtype=np.int64)
    order_p = np.argsort(parent_h, kind="stable")  # stable: copies stay in row order
    sorted_p = parent_h[order_p]
    order_c = np.argsort(child_h, kind="stable")
    sorted_c = child_h[order_c]
    rank = np.empty(len(child_h), dtype=np.int64)
    rank[order_c] = np.arange(len(sorted_c)) - np.searchsorted(sorted_c, sorted_c, side="left")
    first = np.searchsorted(sorted_p, child_h, side="left")
    count = np.searchsorted(sorted_p, child_h, side="right") - first
    at = first + np.where(rank < count, rank, 0)
    found = count > 0
    return np.where(found, order_p[np.minimum(at, len(order_p) - 1)], -1)


def _row_map_bytes(chunk: Any, start: Any, rows: Any) -> bytes:
    """The row map as Parquet: per piece its chunk, its row count and its *gap*, the distance
    from where the previous piece of the same chunk ended. Pieces of a chunk mostly follow each
    other with a row or two left out, so gaps are tiny and compress to almost nothing: a
    version's row map grows with how scattered its rows are by about a byte per piece."""
    import pyarrow as pa

    gap = start - _previous_ends(chunk, start, rows)
    return _parquet_bytes(pa.table({"chunk": pa.array(chunk, pa.int32()), "gap": pa.array(gap, pa.int32()),
                                    "rows": pa.array(rows, pa.int32())}))


def _previous_ends(chunk: Any, start: Any, rows: Any) -> Any:
    """For each piece, where the previous piece of the same chunk ended (0 for a chunk's first)."""
    import numpy as np

    order = np.argsort(chunk, kind="stable")
    ends = (start + rows)[order]
    previous = np.concatenate([[0], ends[:-1]])
    first_of_chunk = np.concatenate([[True], chunk[order][1:] != chunk[order][:-1]])
    previous[first_of_chunk] = 0
    out = np.empty(len(chunk), dtype=np.int64)
    out[order] = previous
    return out


def _starts_from_gaps(chunk: Any, gap: Any, rows: Any) -> Any:
    """Inverse of the gap encoding: within each chunk, start = the gaps so far + the rows so far."""
    import numpy as np

    order = np.argsort(chunk, kind="stable")
    c, g, r = chunk[order], gap[order], rows[order]
    step = np.cumsum(g + r) - r  # inclusive gaps, exclusive rows, over all pieces in this order
    first = np.concatenate([[True], c[1:] != c[:-1]])
    group_base = np.maximum.accumulate(np.where(first, np.arange(len(c)), 0))
    before = np.concatenate([[0], np.cumsum(g + r)])[group_base]  # what earlier chunks summed to
    out = np.empty(len(chunk), dtype=np.int64)
    out[order] = step - before
    return out


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def _read_parquet(data: bytes, what: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise StoreError(f"{what}: not a readable Parquet file: {exc}") from exc


def stored_positions(table_info: dict, row_map: bytes | None, what: str) -> Any:
    """For each row of the version, its position in the concatenation of the version's chunks."""
    import numpy as np

    n = int(table_info["rows"])
    if row_map is None:
        return np.arange(n, dtype=np.int64)
    pieces = _read_parquet(row_map, what)
    try:
        chunk, gap, rows = (pieces.column(c).to_numpy().astype(np.int64) for c in ("chunk", "gap", "rows"))
    except KeyError as exc:
        raise StoreError(f"{what}: not a row map (no column {exc})") from None
    chunk_rows = np.asarray(table_info["chunk_rows"], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(chunk_rows)])
    if rows.sum() != n or (rows < 0).any() or (chunk < 0).any() or (chunk >= len(chunk_rows)).any():
        raise StoreError(f"{what}: the row map does not describe {n} rows of {len(chunk_rows)} chunks")
    start = _starts_from_gaps(chunk, gap, rows)
    if (start < 0).any() or (start + rows > chunk_rows[chunk]).any():
        raise StoreError(f"{what}: the row map points outside its chunks")
    begin = offsets[chunk] + start
    first_out = np.concatenate([[0], np.cumsum(rows)[:-1]])
    return np.repeat(begin - first_out, rows) + np.arange(n, dtype=np.int64)


def assemble_table(table_info: dict, chunks: Any, row_map: bytes | None, what: str) -> Any:
    """The rows a version stored, as one Arrow table in the version's row order (categoricals
    decoded to their values), from its chunk bytes (already hash-checked)."""
    import pyarrow as pa

    tables = [_read_parquet(data, f"{what} {chunk_name(i)}") for i, data in enumerate(chunks)]
    # chunks written by different versions may encode a column differently (a dictionary's
    # index width, an all-null chunk): decode dictionaries, let pyarrow unify the rest
    tables = [_decode_dictionaries(t) for t in tables]
    try:
        whole = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    except (pa.ArrowException, ValueError) as exc:
        raise StoreError(f"{what}: chunks do not fit together: {exc}") from exc
    positions = stored_positions(table_info, row_map, f"{what} {ROW_MAP_FILE}")
    if row_map is not None or whole.num_rows != len(positions):
        whole = whole.take(pa.array(positions))
    return whole


def to_frame(whole: Any, info: dict, categories: bytes | None, what: str) -> Any:
    """The exact frame a version stored, from ``assemble_table``'s result."""
    return _to_frame(whole, info, categories, what)


def _decode_dictionaries(table: Any) -> Any:
    import pyarrow as pa

    for i, f in enumerate(table.schema):
        if pa.types.is_dictionary(f.type):
            table = table.set_column(i, pa.field(f.name, f.type.value_type), table.column(i).cast(f.type.value_type))
    return table


def _to_frame(whole: Any, info: dict, categories: bytes | None, what: str) -> Any:
    import pandas as pd

    wanted = list(info["columns"])
    try:
        frame = whole.to_pandas()
    except Exception as exc:  # pyarrow raises its own types on a bad file
        raise StoreError(f"{what}: cannot rebuild the frame: {exc}") from exc
    cats = {}
    if categories is not None:
        ctable = _read_parquet(categories, f"{what} {CATEGORIES_FILE}")
        cats = {name: ctable.column(name)[0].values.to_pandas() for name in ctable.column_names}
    ordered = set(info.get("ordered", []))
    for col in wanted:
        expected = info["dtypes"][col]
        if col in cats:
            frame[col] = pd.Categorical(frame[col], categories=pd.Index(cats[col]), ordered=col in ordered)
        elif expected == "object" and str(frame[col].dtype) != "object":
            # pandas reads text as its string dtype; the stored frame had python objects (None stays None)
            frame[col] = pd.Series(whole.column(col).to_numpy(zero_copy_only=False), index=frame.index, dtype=object)
        elif str(frame[col].dtype) != expected:
            try:
                frame[col] = frame[col].astype(expected)
            except (TypeError, ValueError) as exc:
                raise StoreError(f"{what}: column {col!r} reads as {frame[col].dtype}, stored as {expected}: {exc}") from exc
    frame = frame[wanted]
    index = info["index"]
    if "range" in index:
        start, step = index["range"]
        frame.index = pd.RangeIndex(start, start + step * len(frame), step, name=index["name"])
    return frame
