"""Label versions in the store, their diff by class pair, the models a migration flags, the
Label Studio round trip of ``python -m framework labels``, the label section's core keys, and
serving's refusal of arms of different label schemas (and feedback judged through the mapping)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from framework.components import InputSchema, FeatureSpec
from framework.errors import RecipeError, StoreError
from framework.labels import schema_id
from framework.labels.studio import simulate_annotator
from framework.registry import Registry
from framework.registry.labels import labels_frame
from framework.run import plan_recipe
from framework.serving.app import check_label_schemas
from framework.serving.ledger import FeedbackLedger
from framework.serving.requests import parse_feedback_body
from framework.serving.types import ServedModel

WEATHER = pd.DataFrame({"wind": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "weather": ["sun", "rain", "drizzle", "rain", "fog", "sun"]},
                       index=pd.RangeIndex(10, 16))


def store_with_two_label_versions(tmp_path):
    registry = Registry(tmp_path / "store")
    data = registry.put_data("weather", WEATHER, schema={"target": "weather"})
    coarse = pd.Series(["sun", "wet", "wet", "wet", "fog", "sun"], index=WEATHER.index)
    old = registry.put_labels("weather.labels", labels_frame(coarse, ["sun", "wet", "fog"]),
                              schema={"classes": ["sun", "wet", "fog"], "schema_id": schema_id(["sun", "wet", "fog"]),
                                      "target": "weather"},
                              lineage={"data_version": data.id, "labeler": "schema_migration"})
    fine = pd.Series(["sun", "rain", "drizzle", None, "fog", "sun"], index=WEATHER.index, dtype="object")
    new = registry.put_labels("weather.labels", labels_frame(fine, ["sun", "rain", "drizzle", "fog"],
                                                             sources=pd.Series("annotator", index=WEATHER.index)),
                              schema={"classes": ["sun", "rain", "drizzle", "fog"], "target": "weather",
                                      "schema_id": schema_id(["sun", "rain", "drizzle", "fog"])},
                              lineage={"data_version": data.id, "labeler": "schema_migration",
                                       "migration": {"from_schema": schema_id(["sun", "wet", "fog"]),
                                                     "to_schema": schema_id(["sun", "rain", "drizzle", "fog"]),
                                                     "summary": "split {'wet': ['rain', 'drizzle']}"}},
                              parent=f"weather.labels:{old.id}")
    return registry, old, new


def test_label_versions_are_content_addressed_and_diffed_by_class_pair(tmp_path, capsys):
    registry, old, new = store_with_two_label_versions(tmp_path)
    assert new.parent == old.id and new.kind == "label" and new.metrics == {"rows": 6, "labeled": 5, "unlabeled": 1}
    again = registry.put_labels("weather.labels", registry.load_labels(old), schema=dict(old.schema), lineage=dict(old.lineage))
    assert again.id == old.id  # the same labels of the same rows are one version
    frame = registry.load_labels("weather.labels@latest")
    assert frame["label"].tolist() == ["sun", "rain", "drizzle", None, "fog", "sun"] and list(frame.index) == list(WEATHER.index)
    diff = registry.diff(f"weather.labels:{old.id}", "weather.labels@latest", kind="label")
    assert diff["changed"] == 3 and diff["unchanged"] == 3
    assert {(p["from"], p["to"]): p["rows"] for p in diff["pairs"]} == {("wet", "rain"): 1, ("wet", "drizzle"): 1,
                                                                       ("wet", "(none)"): 1}
    from framework.cli import main

    assert main(["versions", "--store", str(tmp_path / "store"), "diff", f"weather.labels:{old.id[:8]}",
                 "weather.labels@latest"]) == 0
    out = capsys.readouterr().out
    assert "labels: 3 of 6 rows changed" in out and "wet -> rain: 1" in out and "classes: added rain, drizzle" in out
    with pytest.raises(StoreError, match="is not a label version"):
        registry.load_labels(registry.get("weather@latest", kind="data"))


def test_a_model_on_a_replaced_schema_is_flagged(tmp_path, capsys):
    registry, _, _ = store_with_two_label_versions(tmp_path)
    old_model = registry.put_model("weather_model", {"model.onnx": b"old"}, {}, {
        "label_schema": {"id": schema_id(["fog", "sun", "wet"]), "classes": ["sun", "wet", "fog"]}})
    new_model = registry.put_model("weather_model", {"model.onnx": b"new"}, {}, {
        "label_schema": {"id": schema_id(["sun", "rain", "drizzle", "fog"])}})
    assert "replaced by" in registry.schema_flags(old_model)[0] and registry.schema_flags(new_model) == []
    from framework.cli import main

    assert main(["versions", "--store", str(tmp_path / "store"), "list", "weather_model"]) == 0
    assert "OUTDATED label schema" in capsys.readouterr().out


def test_labels_export_and_import_round_trip_through_label_studio_json(tmp_path, capsys):
    from framework.cli import main

    registry, _, new = store_with_two_label_versions(tmp_path)
    store = str(tmp_path / "store")
    tasks = tmp_path / "queue" / "tasks.json"
    assert main(["labels", "--store", store, "export", "weather.labels@latest", "--out", str(tasks)]) == 0
    written = json.loads(tasks.read_text())
    assert [t["data"]["row_id"] for t in written] == ["13"] and "wind: 4.0" in written[0]["data"]["text"]
    export = simulate_annotator(tasks, tmp_path / "queue" / "export.json", {"13": "rain"})
    assert main(["labels", "--store", store, "import", str(export), "--labels", "weather.labels@latest",
                 "--alias", "people"]) == 0
    imported = registry.get("weather.labels@people", kind="label")
    assert imported.parent == new.id and imported.lineage["label_studio_export"]["answers"] == 1
    frame = registry.load_labels(imported)
    assert frame.loc[13, "label"] == "rain" and frame.loc[13, "source"] == "annotator"
    export.write_text(json.dumps([{"id": 1, "data": {"row_id": "99"}, "annotations": [
        {"result": [{"type": "choices", "from_name": "label", "value": {"choices": ["rain"]}}]}]}]))
    assert main(["labels", "--store", store, "import", str(export), "--labels", "weather.labels@latest"]) == 2
    assert "rows ['99'] are not rows of label version" in capsys.readouterr().err


def test_the_label_sections_core_keys_are_checked_at_plan_time():
    base = ["+recipe=active_learning", "serve.enabled=false"]
    plan = plan_recipe(base)
    labeling = plan.stage("label").component.labeling
    assert labeling.hide.keep == 20 and labeling.hide.parts == ["train"] and labeling.annotator.type == "simulated"
    with pytest.raises(RecipeError, match=r"label.annotator.type: one of simulated, files"):
        plan_recipe([*base, "label.annotator.type=mturk"])
    with pytest.raises(RecipeError, match=r"label.hide.parts: name parts among train, val, test"):
        plan_recipe([*base, "label.hide.parts=[everything]"])
    with pytest.raises(RecipeError, match=r"label.strategy: one of"):
        plan_recipe([*base, "label.strategy=bravest"])
    with pytest.raises(RecipeError, match=r"label.functions\[1\].pattern: a quantified group"):
        plan_recipe(["+recipe=weak_supervision", 'label.functions.1.pattern="(a+)+"'])


def served(arm, classes):
    schema = InputSchema([FeatureSpec("wind")])
    return ServedModel(arm, f"m:{arm}", b"", schema, classes, "x", "p")


def test_serving_refuses_arms_of_two_label_schemas_unless_a_mapping_says_how_to_compare():
    old, new = served("champion", ["sun", "wet", "fog"]), served("challenger", ["sun", "rain", "drizzle", "fog"])
    assert check_label_schemas([old, served("b", ["fog", "sun", "wet"])], None) == {}
    with pytest.raises(RecipeError, match=r"serve.models: the arms predict different classes .*serve.label_mapping"):
        check_label_schemas([old, new], None)
    with pytest.raises(RecipeError, match=r"serve.label_mapping: hail not a class of any arm"):
        check_label_schemas([old, new], {"hail": "wet"})
    assert check_label_schemas([old, new], {"rain": "wet", "drizzle": "wet"}) == {"rain": "wet", "drizzle": "wet"}


def test_feedback_is_judged_through_the_mapping():
    ledger = FeedbackLedger(["champion", "challenger"], label_mapping={"rain": "wet", "drizzle": "wet"})
    ledger.remember("r1", "champion", "wet", "predict")
    ledger.remember("r2", "challenger", "drizzle", "predict")
    ledger.remember("r3", "challenger", "sun", "predict")
    for rid in ("r1", "r2", "r3"):
        accepted = ledger.accept(*parse_feedback_body(json.dumps({"request_id": rid, "label": "rain"}).encode()))
    arms = ledger.summary()["arms"]
    assert arms["champion"]["accuracy"] == 1.0 and arms["challenger"]["correct"] == 1
    assert accepted.feedback[0].label == "wet" and accepted.feedback[0].prediction == "sun"
    assert np.isclose(arms["challenger"]["accuracy"], 0.5)


def test_with_people_as_the_annotator_one_batch_is_written_for_them_and_nothing_is_made_up(tmp_path):
    from framework.labels.studio import StudioAnnotator
    from framework.testing import LabelerContract
    from plugins.label_active import ActiveLearning

    class Kit(LabelerContract):
        labeler_cls = ActiveLearning

    dataset, ctx, truth = Kit().make_labeling(tmp_path)
    ctx.annotator = StudioAnnotator(tmp_path / "people", "files", None, list(dataset.features))
    result = ActiveLearning(ActiveLearning.Config(batch_size=15, batches=4)).label(dataset, ctx)
    assert [f["rows"] for f in ctx.annotator.files] == [15] and ctx.annotator.answered == 0
    assert len(result.queued) == 15 and "export" not in ctx.annotator.files[0]
    assert (result.sources == "annotator").sum() == 0
    tasks = json.loads((tmp_path / "people" / "01-margin" / "tasks.json").read_text())
    assert [t["data"]["row_id"] for t in tasks] == [str(r) for r in result.queued]


def test_a_model_labeling_function_is_checked_to_exist_before_the_run_starts(tmp_path):
    from framework.plugins import default_components
    from framework.run import Reporter, execute

    from plugins.label_weak import WeakSupervision

    config = WeakSupervision.Config(functions=[
        {"name": "a", "type": "threshold", "column": "Cylinders", "op": ">", "value": 4, "label": "USA"},
        {"name": "champion", "type": "model", "ref": "cars_weak@prod", "min_confidence": 0.9}])
    assert WeakSupervision.registry_refs(config) == {"functions[1].ref": "cars_weak@prod"}
    plan = plan_recipe(["+recipe=weak_supervision", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        '+label.functions=[{name: champion, type: model, ref: "cars_weak@prod"}]'])
    with pytest.raises(RecipeError, match=r"label.functions\[0\].ref: unknown model 'cars_weak'"):
        execute(plan, default_components(), Reporter(quiet=True))
