"""[harden] finding 6: the store verifies what it reads. Each test edits a real store on disk the
way the finding did (by hand, outside the framework) and fails on the code before the fix: the
tampered version was served, the edit ignored, or the store read as empty."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from framework.errors import StoreError
from framework.registry import Registry
from framework.registry.cli import versions_command
from framework.registry.labels import labels_frame


def _models(tmp_path):
    reg = Registry(tmp_path / "store")
    files = {"schema.json": b'{"features": ["x"]}'}
    a = reg.put_model("clf", {"model.onnx": b"model-a", **files}, {"accuracy": 0.7}, {})
    b = reg.put_model("clf", {"model.onnx": b"model-b", **files}, {"accuracy": 0.9}, {})
    reg.set_alias("model", "clf", "prod", b.id)
    return reg, a, b


def _manifest(tmp_path, kind, name, vid):
    return tmp_path / "store" / "versions" / kind / name / f"{vid}.json"


def _point_prod_at_the_other_blob(tmp_path, a, b):
    """The finding's attack: prod's manifest lists version a's ONNX blob under b's id."""
    path = _manifest(tmp_path, "model", "clf", b.id)
    m = json.loads(path.read_text())
    m["files"]["model.onnx"] = a.files["model.onnx"]
    path.write_text(json.dumps(m))


def test_a_manifest_pointed_at_another_versions_blob_is_refused_not_served(tmp_path):
    reg, a, b = _models(tmp_path)
    _point_prod_at_the_other_blob(tmp_path, a, b)
    (tmp_path / "store" / "catalogue.sqlite").unlink()  # and the catalogue removed, as in the finding
    again = Registry(tmp_path / "store")
    with pytest.raises(StoreError, match=rf"model clf:{b.id[:12]}: its manifest does not give its id"):
        again.read_file("clf@prod", "model.onnx")
    # the untouched version still loads, with its own bytes
    assert again.read_file(f"clf:{a.id[:12]}", "model.onnx") == b"model-a"


def test_a_manifest_edited_while_the_catalogue_exists_is_noticed(tmp_path):
    reg, a, b = _models(tmp_path)
    _point_prod_at_the_other_blob(tmp_path, a, b)
    with pytest.raises(StoreError, match=rf"model clf:{b.id[:12]}: its manifest .* differs from the catalogue in files"):
        Registry(tmp_path / "store").get("clf@prod")
    # metadata only (metrics) edited by hand: still named, never silently ignored
    reg2, _, b2 = _models(tmp_path / "second")
    path = _manifest(tmp_path / "second", "model", "clf", b2.id)
    m = json.loads(path.read_text())
    m["metrics"]["accuracy"] = 0.99
    path.write_text(json.dumps(m))
    with pytest.raises(StoreError, match="differs from the catalogue in metrics"):
        reg2.get("clf@prod")


def test_a_missing_or_corrupt_manifest_is_named(tmp_path):
    reg, a, b = _models(tmp_path)
    path = _manifest(tmp_path, "model", "clf", b.id)
    path.write_text("{not json")
    with pytest.raises(StoreError, match=rf"model clf:{b.id[:12]}: corrupt JSON file .*its manifest cannot be read"):
        reg.get("clf@prod")
    path.unlink()
    with pytest.raises(StoreError, match=rf"model clf:{b.id[:12]}: the catalogue lists this version but its manifest .* is missing"):
        reg.get("clf@prod")


def test_a_zero_byte_catalogue_is_rebuilt_from_the_manifests_not_read_as_empty(tmp_path):
    reg, a, b = _models(tmp_path)
    catalogue = tmp_path / "store" / "catalogue.sqlite"
    catalogue.write_bytes(b"")
    again = Registry(tmp_path / "store")
    assert {v.id for v in again.list("model")} == {a.id, b.id}
    assert again.get("clf@prod").id == b.id


def test_a_catalogue_that_is_not_sqlite_is_a_clear_error_saying_how_to_rebuild(tmp_path):
    _models(tmp_path)
    catalogue = tmp_path / "store" / "catalogue.sqlite"
    catalogue.write_bytes(b"garbage, not a database" * 100)
    with pytest.raises(StoreError, match="catalogue .*catalogue.sqlite: file is not a database .*move it aside"):
        Registry(tmp_path / "store")
    catalogue.unlink()
    assert len(Registry(tmp_path / "store").list("model")) == 2


def test_a_data_manifest_given_another_versions_chunks_is_refused(tmp_path):
    reg = Registry(tmp_path / "store")
    first = pd.DataFrame({"x": np.arange(50.0), "y": np.arange(50) % 3})
    second = first.assign(x=first.x * 2)
    schema = {"x": "float", "y": "int"}
    va, vb = reg.put_data("table", first, schema), reg.put_data("table", second, schema)
    path = _manifest(tmp_path, "data", "table", vb.id)
    m = json.loads(path.read_text())
    m["files"] = json.loads(_manifest(tmp_path, "data", "table", va.id).read_text())["files"]
    path.write_text(json.dumps(m))
    (tmp_path / "store" / "catalogue.sqlite").unlink()
    with pytest.raises(StoreError, match=rf"data table:{vb.id[:12]}: its rows do not give its content hash"):
        Registry(tmp_path / "store").load_frame(f"table:{vb.id[:12]}")
    pd.testing.assert_frame_equal(Registry(tmp_path / "store").load_frame(f"table:{va.id[:12]}"), first)


def test_a_label_version_given_another_versions_labels_file_is_refused(tmp_path):
    reg = Registry(tmp_path / "store")
    index = pd.RangeIndex(6)
    one = labels_frame(pd.Series(["a", "b"] * 3, index=index), ["a", "b"])
    two = labels_frame(pd.Series(["b", "a"] * 3, index=index), ["a", "b"])
    la = reg.put_labels("lab", one, {"classes": ["a", "b"]}, {"data_version": "d1"})
    lb = reg.put_labels("lab", two, {"classes": ["a", "b"]}, {"data_version": "d1"})
    path = _manifest(tmp_path, "label", "lab", lb.id)
    m = json.loads(path.read_text())
    m["files"] = la.files
    path.write_text(json.dumps(m))
    shutil.move(tmp_path / "store" / "catalogue.sqlite", tmp_path / "old-catalogue")
    with pytest.raises(StoreError, match=rf"label lab:{lb.id[:12]}: its labels do not give its id"):
        Registry(tmp_path / "store").load_labels(f"lab:{lb.id[:12]}")
    assert list(Registry(tmp_path / "store").load_labels(f"lab:{la.id[:12]}")["label"]) == ["a", "b"] * 3


def test_versions_show_names_the_tampered_version(tmp_path, capsys):
    reg, a, b = _models(tmp_path)
    _point_prod_at_the_other_blob(tmp_path, a, b)
    (tmp_path / "store" / "catalogue.sqlite").unlink()
    assert versions_command(["show", "clf@prod", "--kind", "model"], str(tmp_path / "store")) == 2
    assert f"model clf:{b.id[:12]}: its manifest does not give its id" in capsys.readouterr().err
