"""What changed between two data versions, and between the recipes of two model versions.

A data diff is computed from two *profiles*, one per version, so only one frame is in memory at
a time: a profile keeps per-row hashes (and the key column), per-column summaries and a bounded
sample of each numeric column, not the rows. Rows are matched by the declared key
(``schema["key"]``) when both versions declare the same one and it is unique, else by content:
then a changed row counts as one removed plus one added.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from .versions import Version, dict_diff

#: a numeric column is summarised by at most this many evenly spaced order statistics (KS test)
KS_POINTS = 100_000
#: a text column with more distinct values than this is reported by its distinct count only
MAX_CATEGORIES = 10_000
#: per-cell hashes (which columns a changed row changed in) of the first version are kept, at
#: 4 bytes a cell, up to this many cells; beyond, a keyed diff counts rows but not cells
MAX_CELL_HASHES = 100_000_000
#: how many example keys / categories a diff lists
SHOWN = 10
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class FrameProfile:
    rows: int
    dtypes: dict[str, str]
    nulls: dict[str, int]
    row_hashes: Any  # uint64 per row, over the compared columns
    keys: Any = None  # the key column's values, when diffing by key
    keys_unique: bool = False
    cell_hashes: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, dict] = field(default_factory=dict)


def _kind(dtype: Any) -> str:
    from pandas.api.types import is_bool_dtype, is_datetime64_any_dtype, is_numeric_dtype

    if is_bool_dtype(dtype):
        return "categorical"
    if is_numeric_dtype(dtype):
        return "numeric"
    if is_datetime64_any_dtype(dtype):
        return "datetime"
    return "categorical"


def comparable_casts(dtypes_a: Mapping[str, str], dtypes_b: Mapping[str, str]) -> dict[str, str]:
    """For each shared column whose dtype changed, the type both sides are cast to so that
    1 (int) and 1.0 (float) count as the same value, not as a changed row."""
    import pandas as pd
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    casts = {}
    for col in dtypes_a:
        if col not in dtypes_b or dtypes_a[col] == dtypes_b[col]:
            continue
        try:
            ta, tb = pd.api.types.pandas_dtype(dtypes_a[col]), pd.api.types.pandas_dtype(dtypes_b[col])
            numeric = all(is_numeric_dtype(t) and not is_bool_dtype(t) for t in (ta, tb))
        except TypeError:
            numeric = False
        casts[col] = "float64" if numeric else "str"
    return casts


#: FNV-1a's 64-bit offset basis and prime: folds per-column hashes into one per row
_BASIS, _PRIME = 0xCBF29CE484222325, 0x100000001B3


def profile(frame: Any, columns: list[str], casts: Mapping[str, str], key: str | None) -> FrameProfile:
    """What a diff needs of one version's frame, over the ``columns`` both versions share.

    Each column is hashed once; the row hash folds the column hashes together, and a keyed diff
    keeps each cell's hash (truncated to 32 bits) to tell which columns a changed row changed."""
    import numpy as np
    import pandas as pd

    keep_cells = key is not None and len(frame) * max(1, len(columns)) <= MAX_CELL_HASHES
    hashes = np.full(len(frame), _BASIS, dtype=np.uint64)
    cells = {}
    for col in columns:
        values = frame[col]
        target = casts.get(col)
        if target == "str":
            values = values.map(lambda v: None if pd.isna(v) else str(v))
        elif target is not None:
            values = values.astype(target)
        column_hash = pd.util.hash_pandas_object(values, index=False).to_numpy(dtype=np.uint64)
        hashes = (hashes ^ column_hash) * np.uint64(_PRIME)  # uint64 arithmetic wraps, as FNV wants
        if keep_cells and col != key:
            cells[col] = column_hash.astype(np.uint32)
    keys = frame[key].to_numpy() if key is not None else None
    return FrameProfile(
        rows=int(len(frame)),
        dtypes={c: str(t) for c, t in frame.dtypes.items()},
        nulls={c: int(frame[c].isna().sum()) for c in frame.columns},
        row_hashes=hashes,
        keys=keys,
        keys_unique=bool(pd.Index(keys).is_unique) if keys is not None else False,
        cell_hashes=cells,
        columns={c: _column_summary(frame[c]) for c in frame.columns},
    )


def _column_summary(col: Any) -> dict:
    import numpy as np

    kind = _kind(col.dtype)
    values = col.dropna()
    out: dict[str, Any] = {"kind": kind, "rows": int(len(col)), "missing": int(len(col) - len(values))}
    if kind in ("numeric", "datetime"):
        raw = values.to_numpy()
        if kind == "datetime":
            raw = values.astype("int64").to_numpy() if len(values) else np.asarray([], dtype=np.int64)
            out["min"] = str(values.min()) if len(values) else None
            out["max"] = str(values.max()) if len(values) else None
        floats = raw.astype("float64")
        ordered = np.sort(floats)
        if kind == "numeric" and len(raw):
            out["mean"] = float(floats.mean())
            out["std"] = float(floats.std(ddof=1)) if len(floats) > 1 else 0.0
            # linear interpolation between order statistics, as numpy's default quantile
            at = np.asarray(QUANTILES) * (len(ordered) - 1)
            low, high = np.floor(at).astype(np.int64), np.ceil(at).astype(np.int64)
            values = ordered[low] + (ordered[high] - ordered[low]) * (at - low)
            out["quantiles"] = {f"p{int(q * 100):02d}": float(v) for q, v in zip(QUANTILES, values)}
        if len(ordered) > KS_POINTS:  # evenly spaced order statistics: the ECDF within 1/KS_POINTS
            ordered = ordered[np.linspace(0, len(ordered) - 1, KS_POINTS).round().astype(np.int64)]
        out["sorted"] = ordered
    else:
        counts = values.astype(str).value_counts() if str(values.dtype) not in ("str", "object") else values.value_counts()
        out["distinct"] = int(len(counts))
        if len(counts) <= MAX_CATEGORIES:
            out["counts"] = {str(k): int(v) for k, v in counts.items()}
    return out


def ks_statistic(a: Any, b: Any) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic: the largest gap between the two ECDFs."""
    import numpy as np

    if len(a) == 0 or len(b) == 0:
        return None
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.max(np.abs(fa - fb)))


def _change(a: Any, b: Any) -> dict:
    delta = b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else None
    return {"a": a, "b": b, "delta": delta}


def column_shift(a: dict, b: dict) -> dict:
    """How one column's distribution moved from A to B."""
    rate_a = a["missing"] / a["rows"] if a["rows"] else 0.0
    rate_b = b["missing"] / b["rows"] if b["rows"] else 0.0
    out: dict[str, Any] = {"kind": b["kind"], "missing_rate": _change(rate_a, rate_b)}
    if a["kind"] != b["kind"]:
        out["kind"] = f"{a['kind']} -> {b['kind']}"
        return out
    if a["kind"] in ("numeric", "datetime"):
        out["ks"] = ks_statistic(a["sorted"], b["sorted"])
        if a["kind"] == "datetime":
            out["min"] = {"a": a.get("min"), "b": b.get("min")}
            out["max"] = {"a": a.get("max"), "b": b.get("max")}
        elif "mean" in a and "mean" in b:
            out["mean"] = _change(a["mean"], b["mean"])
            out["std"] = _change(a["std"], b["std"])
            out["quantiles"] = {q: _change(a["quantiles"][q], b["quantiles"][q]) for q in a["quantiles"]}
        return out
    out["distinct"] = _change(a["distinct"], b["distinct"])
    if "counts" in a and "counts" in b:
        ca, cb = a["counts"], b["counts"]
        new = [k for k in cb if k not in ca]
        vanished = [k for k in ca if k not in cb]
        na, nb = sum(ca.values()) or 1, sum(cb.values()) or 1
        out["new"], out["new_count"] = new[:SHOWN], len(new)
        out["vanished"], out["vanished_count"] = vanished[:SHOWN], len(vanished)
        out["tvd"] = 0.5 * sum(abs(ca.get(k, 0) / na - cb.get(k, 0) / nb) for k in set(ca) | set(cb))
    else:
        out["note"] = f"more than {MAX_CATEGORIES} distinct values: categories not compared"
    return out


def _shown(values: Any) -> list:
    return [v.item() if hasattr(v, "item") else v for v in values[:SHOWN]]


def rows_by_key(a: FrameProfile, b: FrameProfile, key: str) -> dict:
    import numpy as np
    import pandas as pd

    ia, ib = pd.Index(a.keys), pd.Index(b.keys)
    at = ia.get_indexer(ib)  # for each B row, its A row (-1: added)
    in_b = at >= 0
    removed_mask = np.ones(a.rows, dtype=bool)
    removed_mask[at[in_b]] = False
    changed = in_b.copy()
    changed[in_b] = a.row_hashes[at[in_b]] != b.row_hashes[in_b]
    per_column = {}
    if a.cell_hashes and b.cell_hashes and changed.any():
        rows_b = np.flatnonzero(changed)
        for col in a.cell_hashes.keys() & b.cell_hashes.keys():
            n = int((a.cell_hashes[col][at[rows_b]] != b.cell_hashes[col][rows_b]).sum())
            if n:
                per_column[col] = n
    return {
        "by": f"key {key!r}",
        "added": int((~in_b).sum()),
        "removed": int(removed_mask.sum()),
        "changed": int(changed.sum()),
        "unchanged": int(in_b.sum() - changed.sum()),
        "changed_columns": dict(sorted(per_column.items(), key=lambda kv: -kv[1])) if per_column else None,
        "examples": {
            "added": _shown(ib[~in_b]),
            "removed": _shown(ia[removed_mask]),
            "changed": _shown(ib[changed]),
        },
    }


def rows_by_content(a: FrameProfile, b: FrameProfile, note: str | None = None) -> dict:
    """Rows as multisets of content hashes: a changed row is one removed plus one added."""
    import numpy as np

    ua, ca = np.unique(a.row_hashes, return_counts=True)
    ub, cb = np.unique(b.row_hashes, return_counts=True)
    _, ia, ib = np.intersect1d(ua, ub, assume_unique=True, return_indices=True)
    same = int(np.minimum(ca[ia], cb[ib]).sum())
    out = {"by": "content", "added": b.rows - same, "removed": a.rows - same, "changed": None, "unchanged": same}
    if note:
        out["note"] = note
    return out


def diff_key(a: Version, b: Version, columns_a: Mapping[str, str], columns_b: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The key both versions declare (and hold), or None with the reason rows go by content."""
    ka, kb = a.schema.get("key"), b.schema.get("key")
    if not ka and not kb:
        return None, None
    if ka != kb:
        return None, f"the versions declare different keys ({ka!r}, {kb!r}): rows compared by content"
    if ka not in columns_a or ka not in columns_b:
        return None, f"key {ka!r} is not a column of both versions: rows compared by content"
    return ka, None


def data_diff(a: Version, b: Version, pa: FrameProfile, pb: FrameProfile, key: str | None,
              key_note: str | None, ancestry: dict) -> dict:

    cols_a, cols_b = list(pa.dtypes), list(pb.dtypes)
    common = [c for c in cols_a if c in set(cols_b)]
    rows = None
    if key is not None:
        if pa.keys_unique and pb.keys_unique:
            rows = rows_by_key(pa, pb, key)
        else:
            key_note = f"key {key!r} is not unique in both versions: rows compared by content"
    if rows is None:
        rows = rows_by_content(pa, pb, key_note)
    nullable = {c: {"a": pa.nulls[c] > 0, "b": pb.nulls[c] > 0} for c in common if (pa.nulls[c] > 0) != (pb.nulls[c] > 0)}
    return {
        "kind": "data",
        "a": a.ref,
        "b": b.ref,
        "same": a.id == b.id,
        "rows": {"a": pa.rows, "b": pb.rows},
        "row_changes": rows,
        # kept for readers of the earlier diff format
        "rows_added": rows["added"],
        "rows_removed": rows["removed"],
        "columns_added": [c for c in cols_b if c not in set(cols_a)],
        "columns_removed": [c for c in cols_a if c not in set(cols_b)],
        "dtypes_changed": {c: {"a": pa.dtypes[c], "b": pb.dtypes[c]} for c in common if pa.dtypes[c] != pb.dtypes[c]},
        "nullable_changed": nullable,
        "shift": {c: column_shift(pa.columns[c], pb.columns[c]) for c in common if c != key},
        "ancestry": ancestry,
        "schema": dict_diff(a.schema, b.schema),
        "lineage": dict_diff(a.lineage, b.lineage),
        "meta": dict_diff(a.meta, b.meta),
        "parent": {"a": a.parent, "b": b.parent},
    }


def ancestry(a: Version, b: Version, parent_of: Callable[[str], str | None], limit: int = 10_000) -> dict:
    """How A and B are related through ``parent`` links: the path from the older to the newer
    when one descends from the other, else their nearest common ancestor (if any)."""

    def chain(v: Version) -> list[str]:
        ids, current = [v.id], v.parent
        while current and len(ids) < limit and current not in ids:
            ids.append(current)
            current = parent_of(current)
        return ids

    up_a, up_b = chain(a), chain(b)
    out: dict[str, Any] = {"a_is_ancestor_of_b": a.id in up_b and a.id != b.id,
                           "b_is_ancestor_of_a": b.id in up_a and a.id != b.id}
    if out["a_is_ancestor_of_b"]:
        out["path"] = list(reversed(up_b[: up_b.index(a.id) + 1]))
    elif out["b_is_ancestor_of_a"]:
        out["path"] = list(reversed(up_a[: up_a.index(b.id) + 1]))
    else:
        seen = set(up_a)
        out["common_ancestor"] = next((i for i in up_b if i in seen), None)
    return out


def recipe_diff(a: Mapping | None, b: Mapping | None) -> dict:
    """Recipe keys that differ, as ``{"train.max_epochs": {"a": 5, "b": 10}}``; lists compare whole."""
    return dict_diff(a or {}, b or {})
