"""The labeling recipes end to end: weak supervision, active learning through real Label Studio
files (the simulated annotator answers from the hidden true labels), and a label schema migration
whose retrained model is canaried against the deployed one through the class mapping."""
from __future__ import annotations

import json

import pytest

from framework.plugins import Components, get_plugin_manager
from framework.registry import Registry
from framework.run import Reporter, execute, plan_recipe

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

FAST_TRAIN = ["train.num_samples=1", "train.max_epochs=6"]


def run_recipe(name, tmp_path, *overrides):
    components = Components.collect(get_plugin_manager())
    plan = plan_recipe([f"+recipe={name}", f"store.uri={tmp_path / 'store'}", f"runs_dir={tmp_path / 'runs'}",
                        *FAST_TRAIN, *overrides], components)
    result = execute(plan, components, Reporter(quiet=True))
    assert result.status == "ok", result.summary
    stages = {s.stage: s for s in result.stages}
    return result, stages, Registry(str(tmp_path / "store"))


def stage_dir(result, name):
    return next((result.run_dir / "stages").glob(f"*-{name}"))


def test_weak_supervision_labels_the_hidden_train_rows_and_trains_on_them(ray_session, tmp_path):
    result, stages, registry = run_recipe("weak_supervision", tmp_path)
    label = stages["label"].metrics
    # every train label was hidden; train rows no function voted on leave the training data
    assert label["hidden_labels"] == label["train_rows"] + (label["hidden_labels"] - label["hidden_rows_labeled"])
    assert label["hidden_rows_labeled"] >= 0.9 * label["hidden_labels"]  # the functions cover most rows
    assert label["label_accuracy_hidden"] >= 0.9
    report = json.loads((stage_dir(result, "label") / "labels_report.json").read_text())["report"]
    functions = report["functions"]
    assert set(functions) == {"japanese_makes", "european_makes", "american_makes", "misspelt_makes",
                              "eight_cylinders", "heavy", "small_engine"}
    for entry in functions.values():  # coverage, overlap, conflicts, gold accuracy, learned accuracy
        assert {"coverage", "overlap", "conflict", "empirical_accuracy", "learned_accuracy"} <= set(entry)
    assert functions["small_engine"]["learned_accuracy"] < functions["american_makes"]["learned_accuracy"]

    labels = registry.get("cars.labels@latest", kind="label")
    assert labels.lineage["labeler"] == "weak_supervision" and labels.lineage["label_model"].startswith("generative")
    assert [f["name"] for f in labels.lineage["functions"]][:2] == ["japanese_makes", "european_makes"]
    assert labels.lineage["data_version"] == registry.get("cars@latest", kind="data").id
    stored = registry.load_labels(labels)
    assert {"label", "source", "p:Europe", "p:Japan", "p:USA"} <= set(stored.columns)
    assert set(stored["source"].dropna()) == {"gold", "label_model"}
    model = registry.get("cars_weak@latest")
    assert model.lineage["label_version"] == labels.id
    assert model.lineage["label_schema"]["classes"] == ["Europe", "Japan", "USA"]
    assert stages["train"].metrics["test_accuracy"] > 0.6


def test_active_learning_asks_a_person_through_label_studio_files_batch_by_batch(ray_session, tmp_path):
    result, stages, registry = run_recipe("active_learning", tmp_path, "label.batches=3")
    label = stages["label"].metrics
    assert label["start_labels"] == 20 and label["acquired_labels"] == 60
    assert label["train_rows"] == 80  # only labeled train rows train the model
    assert label["label_accuracy_hidden"] == 1.0  # the simulated person answers from the true labels
    folders = sorted((stage_dir(result, "label") / "label_studio").iterdir())
    assert [f.name for f in folders] == ["01-margin-diverse", "02-margin-diverse", "03-margin-diverse",
                                         "04-random", "05-random", "06-random"]
    tasks = json.loads((folders[0] / "tasks.json").read_text())
    assert len(tasks) == 20
    pre = tasks[0]["predictions"][0]["result"][0]  # the model's pre-annotation
    assert pre["from_name"] == "label" and pre["to_name"] == "text" and pre["type"] == "choices"
    assert len(pre["value"]["choices"]) == 1 and tasks[0]["meta"]["uncertainty"] > 0
    export = json.loads((folders[0] / "export.json").read_text())
    answer = export[0]["annotations"][0]
    assert answer["was_cancelled"] is False and answer["result"][0]["value"]["choices"]
    assert "<Choices name=\"label\" toName=\"text\"" in (folders[0] / "label_config.xml").read_text()
    report = json.loads((stage_dir(result, "label") / "labels_report.json").read_text())["report"]
    assert [p["labeled"] for p in report["curve"]] == [20, 40, 60, 80]
    assert [p["labeled"] for p in report["random_curve"]] == [20, 40, 60, 80]
    stored = registry.load_labels("digits.labels@latest")
    assert (stored["source"] == "annotator").sum() == 60
    assert registry.get("digits.labels@latest", kind="label").lineage["label_studio"][0]["answered"] == 20


def test_a_class_split_queues_only_its_rows_flags_the_old_model_and_canaries_through_the_mapping(
        ray_session, serve_port, tmp_path):
    run_recipe("weather_coarse", tmp_path)
    result, stages, registry = run_recipe(
        "label_migration", tmp_path, f"serve.port={serve_port}", "online_eval.rows=16", "traffic.requests=600")
    label = stages["label"].metrics
    coarse = registry.load_labels("seattle_weather.labels@coarse")
    wet = int((coarse["label"] == "wet").sum())
    assert label["queued_for_relabeling"] == wet < 0.3 * len(coarse)  # only the split class's rows
    assert label["answered_rows"] == wet and label["unlabeled_rows"] == 0
    assert label["models_on_old_schema"] and all(r.startswith("seattle_weather:") for r in label["models_on_old_schema"])
    flagged = registry.get(label["models_on_old_schema"][0])
    assert registry.schema_flags(flagged) and "replaced by" in registry.schema_flags(flagged)[0]

    diff = registry.diff("seattle_weather.labels@coarse", "seattle_weather.labels@split", kind="label")
    assert diff["changed"] == wet
    assert {(p["from"], p["to"]) for p in diff["pairs"]} == {("wet", "rain"), ("wet", "drizzle")}
    assert diff["classes"]["added"] == ["rain", "drizzle"] and diff["classes"]["removed"] == ["wet"]

    traffic = stages["traffic"].metrics
    assert traffic["decision"] in ("promote", "rollback", "hold") and traffic["requests"] > 0
    assert set(traffic["share"]) == {"champion", "challenger"}
