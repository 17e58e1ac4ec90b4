"""``Registry.diff`` and ``versions diff``: what changed between data versions (rows by key or
content, schema, per-column shift, ancestry) and between model versions (plus their training
data and recipes). Real stores, real Parquet."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from framework.registry import Registry
from framework.registry.cli import versions_command
from framework.registry.diffs import ks_statistic
from framework.registry.versions import RECIPE_FILE


@pytest.fixture
def reg(tmp_path):
    return Registry(tmp_path / "store")


def users(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "id": np.arange(n),
        "age": rng.normal(40, 5, size=n),
        "city": pd.Series(rng.choice(["paris", "lyon", "nice"], size=n, p=[0.5, 0.3, 0.2]), dtype="str"),
        "score": rng.integers(0, 10, size=n),
    })


def edited(base: pd.DataFrame) -> pd.DataFrame:
    """10 rows removed, every 20th row's age changed (one also its city), 5 rows added, a
    column added and one retyped, missing ages appear, 'nice' becomes 'marseille'."""
    b = base[base["id"] >= 10].copy()
    b.loc[b["id"] % 20 == 0, "age"] += 30.0
    b.loc[b["id"] == 40, "city"] = "lyon" if b.loc[b["id"] == 40, "city"].item() != "lyon" else "paris"
    b["city"] = b["city"].replace({"nice": "marseille"})
    added = pd.DataFrame({"id": np.arange(1000, 1005), "age": [np.nan] * 5, "city": ["paris"] * 5, "score": [1] * 5})
    b = pd.concat([b, added], ignore_index=True)
    b["score"] = b["score"].astype("float64")
    b["vip"] = b["id"] % 7 == 0
    return b


def test_data_diff_by_key(reg):
    base = users()
    a = reg.put_data("users", base, {"key": "id"})
    b = reg.put_data("users", edited(base), {"key": "id"}, parent=a.id)
    d = reg.diff(a.ref, b.id, kind="data")
    nice = int((base["city"] == "nice").sum() - (base.loc[base["id"] < 10, "city"] == "nice").sum())
    age_changed = len([i for i in range(10, 200) if i % 20 == 0])
    rc = d["row_changes"]
    assert rc["by"] == "key 'id'"
    assert (rc["added"], rc["removed"]) == (5, 10)
    # rows whose age changed, or whose city went nice -> marseille, or both (id 40)
    changed_ids = set(range(20, 200, 20)) | set(base.loc[(base["id"] >= 10) & (base["city"] == "nice"), "id"]) | {40}
    assert rc["changed"] == len(changed_ids) and rc["unchanged"] == 190 - len(changed_ids)
    assert rc["changed_columns"]["age"] == age_changed
    assert rc["changed_columns"]["city"] == nice + (0 if 40 in set(base.loc[base["city"] == "nice", "id"]) else 1)
    assert rc["examples"]["added"] == [1000, 1001, 1002, 1003, 1004]
    assert rc["examples"]["removed"] == list(range(10))
    assert d["rows"] == {"a": 200, "b": 195} and (d["rows_added"], d["rows_removed"]) == (5, 10)
    assert d["columns_added"] == ["vip"] and d["columns_removed"] == []
    assert d["dtypes_changed"] == {"score": {"a": "int64", "b": "float64"}}
    assert d["nullable_changed"] == {"age": {"a": False, "b": True}}
    # score 3 (int) and 3.0 (float) are the same value: the retyping alone changes no row
    assert "score" not in rc["changed_columns"]

    age, city, score = d["shift"]["age"], d["shift"]["city"], d["shift"]["score"]
    assert age["kind"] == "numeric" and age["mean"]["delta"] > 0 and 0 < age["ks"] < 0.2
    assert age["missing_rate"]["a"] == 0 and age["missing_rate"]["b"] == pytest.approx(5 / 195)
    assert set(age["quantiles"]) == {"p05", "p25", "p50", "p75", "p95"}
    assert city["kind"] == "categorical" and city["new"] == ["marseille"] and city["vanished"] == ["nice"]
    assert city["tvd"] == pytest.approx(0.5 * sum(abs(
        (base["city"] == c).mean() - (edited(base)["city"] == c).mean()) for c in ("paris", "lyon", "nice", "marseille")))
    assert score["ks"] is not None and "id" not in d["shift"]  # the key is no distribution
    assert d["ancestry"] == {"a_is_ancestor_of_b": True, "b_is_ancestor_of_a": False, "path": [a.id, b.id]}
    json.dumps(d)  # plain JSON all the way down


def test_data_diff_by_content_when_no_key_or_an_unusable_key(reg):
    base = users(50)
    changed = base.copy()
    changed.loc[3, "age"] = 99.0
    changed = pd.concat([changed, base.iloc[:2]], ignore_index=True)  # two duplicate rows added
    a = reg.put_data("u", base, {})
    b = reg.put_data("u", changed, {}, parent=a.id)
    rc = reg.diff(a.id, b.id, kind="data")["row_changes"]
    # by content a changed row is one removed plus one added; duplicates count as rows
    assert (rc["by"], rc["added"], rc["removed"], rc["changed"], rc["unchanged"]) == ("content", 3, 1, None, 49)

    dup = reg.put_data("u", changed, {"key": "id"})  # ids 0 and 1 twice: not a key
    rc = reg.diff(reg.put_data("u", base, {"key": "id"}).id, dup.id, kind="data")["row_changes"]
    assert rc["by"] == "content" and "key 'id' is not unique" in rc["note"]
    other = reg.put_data("u", base, {"key": "city"})
    rc = reg.diff(a.id, other.id, kind="data")["row_changes"]
    assert rc["by"] == "content" and "different keys" in rc["note"]


def test_ancestry_paths_siblings_and_strangers(reg):
    v1 = reg.put_data("d", users(20), {})
    v2 = reg.put_data("d", users(21), {}, parent=v1.id)
    v3 = reg.put_data("d", users(22), {}, parent=v2.id)
    sibling = reg.put_data("d", users(23), {}, parent=v1.id)
    stranger = reg.put_data("other", users(5), {})
    assert reg.diff(v1.id, v3.id, kind="data")["ancestry"]["path"] == [v1.id, v2.id, v3.id]
    back = reg.diff(v3.id, v1.id, kind="data")["ancestry"]
    assert back["b_is_ancestor_of_a"] and back["path"] == [v1.id, v2.id, v3.id]
    assert reg.diff(v3.id, sibling.id, kind="data")["ancestry"] == {
        "a_is_ancestor_of_b": False, "b_is_ancestor_of_a": False, "common_ancestor": v1.id}
    assert reg.diff(v3.id, stranger.id, kind="data")["ancestry"]["common_ancestor"] is None


def test_ks_statistic():
    a = np.sort(np.asarray([1.0, 2.0, 3.0, 4.0]))
    assert ks_statistic(a, a) == 0.0
    assert ks_statistic(a, a + 10) == 1.0
    assert ks_statistic(a, np.asarray([3.0, 4.0, 5.0, 6.0])) == pytest.approx(0.5)
    assert ks_statistic(a, np.asarray([])) is None


def test_datetime_and_category_columns_are_compared(reg):
    a = pd.DataFrame({"t": pd.date_range("2024-01-01", periods=10, freq="D"),
                      "c": pd.Categorical(["x", "y"] * 5, categories=["x", "y", "z"])})
    b = a.copy()
    b["t"] = b["t"] + pd.Timedelta(days=30)
    b["c"] = pd.Categorical(["x", "z"] * 5, categories=["x", "y", "z"])
    va, vb = reg.put_data("t", a, {}), reg.put_data("t", b, {})
    shift = reg.diff(va.id, vb.id, kind="data")["shift"]
    assert shift["t"]["kind"] == "datetime" and shift["t"]["ks"] == 1.0
    assert shift["t"]["min"] == {"a": "2024-01-01 00:00:00", "b": "2024-01-31 00:00:00"}
    assert shift["c"]["new"] == ["z"] and shift["c"]["vanished"] == ["y"] and shift["c"]["tvd"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# Models: their own diff, their training data's and their recipes'
# ---------------------------------------------------------------------------------------------
def recipe(epochs: int, lr: float) -> bytes:
    return yaml.safe_dump({"name": "clf", "train": {"type": "tune", "max_epochs": epochs, "search_space": {"lr": lr}},
                           "data": {"type": "sklearn", "append": True}}).encode()


def models(reg):
    base = users()
    da = reg.put_data("users", base, {"key": "id"})
    db = reg.put_data("users", edited(base), {"key": "id"}, parent=da.id)
    ma = reg.put_model("clf", {"model.onnx": b"one", RECIPE_FILE: recipe(5, 0.1)}, {"accuracy": 0.90},
                       {"data_version": da.id, "recipe_hash": "r1"})
    mb = reg.put_model("clf", {"model.onnx": b"two", RECIPE_FILE: recipe(10, 0.1)}, {"accuracy": 0.93},
                       {"data_version": db.id, "recipe_hash": "r2"}, parent=ma.id)
    return da, db, ma, mb


def test_model_diff_explains_data_and_recipe(reg):
    da, db, ma, mb = models(reg)
    d = reg.diff("clf:" + ma.id, "clf@latest")
    assert d["metrics"]["accuracy"]["delta"] == pytest.approx(0.03)
    assert d["lineage"]["data_version"] == {"a": da.id, "b": db.id}
    assert d["data"]["kind"] == "data" and d["data"]["row_changes"]["added"] == 5
    assert d["data"]["ancestry"]["a_is_ancestor_of_b"] is True
    assert d["recipe"] == {"changed": {"train.max_epochs": {"a": 5, "b": 10}}}
    assert d["files"]["changed"] == ["model.onnx", RECIPE_FILE]
    json.dumps(d)

    same_data = reg.put_model("clf", {"model.onnx": b"three"}, {}, {"data_version": db.id})
    d = reg.diff(mb.id, same_data.id)
    assert d["data"] == {"same": True, "version": db.id}
    assert d["recipe"] == {"note": f"{same_data.ref} has no {RECIPE_FILE} (registered before recipes were stored)"}
    lost = reg.put_model("clf", {"model.onnx": b"four"}, {}, {"data_version": "f" * 64})
    assert reg.diff(mb.id, lost.id)["data"]["note"].startswith("cannot diff the training data: unknown data ref")


def test_the_recipe_file_is_lineage_not_identity(reg):
    a = reg.put_model("clf", {"model.onnx": b"same", RECIPE_FILE: recipe(5, 0.1)}, {}, {})
    b = reg.put_model("clf", {"model.onnx": b"same", RECIPE_FILE: recipe(6, 0.1)}, {}, {})
    assert a.id == b.id and reg.read_file(b, RECIPE_FILE) == recipe(5, 0.1)  # the first registration wins


def test_register_stores_the_resolved_recipe_as_yaml():
    from framework.run import plan_recipe
    from framework.stages.register import recipe_yaml

    plan = plan_recipe(["+recipe=quickstart", "train.max_epochs=3"])
    stored = yaml.safe_load(recipe_yaml(plan))
    assert stored["train"]["max_epochs"] == 3 and stored == json.loads(json.dumps(plan.resolved, default=str))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def test_cli_data_diff_report_and_json(tmp_path, capsys):
    uri = str(tmp_path / "store")
    reg = Registry(uri)
    base = users()
    a = reg.put_data("users", base, {"key": "id"})
    b = reg.put_data("users", edited(base), {"key": "id"}, parent=a.id)
    assert versions_command(["diff", a.id[:8], b.id[:8]], uri) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"data {a.ref} -> {b.ref}"
    assert lines[1] == f"ancestry: A is an ancestor of B, 1 step(s): {a.id[:12]} -> {b.id[:12]}"
    assert lines[2].startswith("rows: 200 -> 195 (-5), by key 'id': 5 added, 10 removed, ")
    assert lines[3].startswith("  changed cells: ") and "age 9" in lines[3]
    assert "  removed keys: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9" in lines and "  changed keys: " in out
    for text in ("added keys: 1000, 1001, 1002, 1003, 1004",
                 "columns added: vip", "dtype score: int64 -> float64", "nullable age: no -> yes", "shift (A -> B):",
                 "new marseille (1)", "vanished nice (1)", "TVD ", "KS ", "missing 0.0% -> 2.6%"):
        assert text in out, text
    assert len(lines) < 30  # short

    assert versions_command(["diff", "--json", "--kind", "data", a.id, b.id], uri) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["row_changes"]["removed"] == 10 and d["shift"]["city"]["new"] == ["marseille"]


def test_cli_model_diff_report(tmp_path, capsys):
    uri = str(tmp_path / "store")
    reg = Registry(uri)
    da, db, ma, mb = models(reg)
    assert versions_command(["diff", ma.id[:8], "clf@latest"], uri) == 0
    out = capsys.readouterr().out
    assert "accuracy  0.9 -> 0.93  (+0.03)" in out
    assert "recipe:\n  train.max_epochs: 5 -> 10" in out
    assert f"training data:\n  data {da.ref} -> {db.ref}" in out
    assert "  rows: 200 -> 195 (-5), by key 'id': 5 added, 10 removed" in out
    assert versions_command(["diff", "--json", ma.id[:8], mb.id[:8]], uri) == 0
    assert json.loads(capsys.readouterr().out)["recipe"]["changed"]["train.max_epochs"] == {"a": 5, "b": 10}
