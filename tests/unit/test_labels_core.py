"""framework.labels: labeling functions, label models, active learning, Label Studio files, schemas."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from framework.errors import RecipeError, StageError
from framework.labels import ABSTAIN, Migration, labeling_function, schema_id
from framework.labels.active import Loop, labels_to_reach, select, uncertainty
from framework.labels.functions import analyse, apply_functions, compile_pattern, parse_functions
from framework.labels.model import DawidSkene, combine, majority_vote
from framework.labels.studio import label_config, read_export, simulate_annotator, export_tasks

CARS = pd.DataFrame({
    "Name": ["toyota corolla", "ford pinto", "vw rabbit", "honda civic", "chevrolet impala", None],
    "Cylinders": [4, 4, 4, 4, 8, 6],
})
CLASSES = ["Europe", "Japan", "USA"]


@labeling_function("test_long_names")
def long_names(frame):
    return frame["Name"].map(lambda n: "USA" if isinstance(n, str) and len(n) > 14 else None)


def functions(*extra):
    return parse_functions([
        {"name": "japanese", "type": "keywords", "column": "Name", "words": ["toyota", "honda"], "label": "Japan"},
        {"name": "german", "type": "regex", "column": "Name", "pattern": r"^(vw|volkswagen)\b", "label": "Europe"},
        {"name": "big", "type": "threshold", "column": "Cylinders", "op": ">=", "value": 6, "label": "USA"},
        *extra,
    ], "label.functions", CLASSES)


def test_functions_vote_or_abstain_and_the_analysis_counts_coverage_overlap_conflict_and_accuracy():
    fns = functions({"name": "long", "type": "callable", "callable": "test_long_names"})
    matrix = apply_functions(fns, CARS, CLASSES)
    assert matrix.tolist() == [[1, -1, -1, -1], [-1, -1, -1, -1], [-1, 0, -1, -1], [1, -1, -1, -1],
                               [-1, -1, 2, 2], [-1, -1, 2, -1]]
    gold = np.array([1, 2, 0, 1, 2, ABSTAIN])
    report = analyse(matrix, [f.name for f in fns], gold)
    assert report["functions"]["japanese"]["coverage"] == pytest.approx(2 / 6)
    assert report["functions"]["big"]["overlap"] == pytest.approx(1 / 6)
    assert report["functions"]["big"]["conflict"] == 0.0
    assert report["functions"]["big"]["empirical_accuracy"] == 1.0 and report["functions"]["big"]["gold_rows"] == 1
    assert report["totals"]["coverage"] == pytest.approx(5 / 6)


def test_recipe_mistakes_fail_at_plan_time_naming_the_key():
    with pytest.raises(RecipeError, match=r"label.functions\[0\].label: 'Mars' is not a class"):
        parse_functions([{"name": "x", "type": "keywords", "column": "Name", "words": ["a"], "label": "Mars"}],
                        "label.functions", CLASSES)
    with pytest.raises(RecipeError, match=r"functions\[0\].callable: 'os.system' is not on the allow-list"):
        parse_functions([{"name": "x", "type": "callable", "callable": "os.system"}], "functions")
    with pytest.raises(RecipeError, match=r"quantified group is quantified again"):
        compile_pattern("(a+)+$", "p")
    with pytest.raises(RecipeError, match=r"at most 200"):
        compile_pattern("a" * 201, "p")
    with pytest.raises(RecipeError, match=r"unknown key for a 'threshold'"):
        parse_functions([{"name": "x", "type": "threshold", "column": "c", "op": ">", "value": 1, "label": "a",
                          "code": "1"}], "functions")
    with pytest.raises(RecipeError, match=r"\.op: one of"):
        parse_functions([{"name": "x", "type": "threshold", "column": "c", "op": "=>", "value": 1, "label": "a"}], "f")


def test_a_callable_name_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        labeling_function("test_long_names")(lambda frame: None)


def simulated_votes(seed=0, n=3000):
    rng = np.random.default_rng(seed)
    truth = rng.choice(3, size=n, p=[0.5, 0.3, 0.2])
    specs = [(0, 0.9, 0.5), (0, 0.6, 0.5), (1, 0.85, 0.4), (1, 0.7, 0.3), (2, 0.8, 0.4), (2, 0.55, 0.6)]
    matrix = np.full((n, len(specs)), ABSTAIN)
    for j, (c, accuracy, coverage) in enumerate(specs):
        right = (truth == c) & (rng.random(n) < coverage)
        wrong = (truth != c) & (rng.random(n) < coverage * (1 - accuracy) / accuracy * 0.4)
        matrix[right | wrong, j] = c
    return matrix, truth


def test_majority_vote_splits_ties_and_leaves_uncovered_rows_without_a_label():
    m = np.array([[0, 0, 1], [0, 1, ABSTAIN], [ABSTAIN, ABSTAIN, ABSTAIN]])
    p = majority_vote(m, 2)
    assert p[0].tolist() == [1.0, 0.0] and p[1].tolist() == [0.5, 0.5] and np.isnan(p[2]).all()


def test_the_generative_model_learns_each_functions_accuracy_without_gold_and_beats_the_majority():
    matrix, truth = simulated_votes()
    covered = (matrix != ABSTAIN).any(axis=1)
    mv = majority_vote(matrix, 3)[covered].argmax(axis=1)
    probs, info = combine(matrix, 3, "generative")
    assert np.allclose(probs[covered].sum(axis=1), 1.0) and np.isnan(probs[~covered]).all()
    ds = probs[covered].argmax(axis=1)
    assert (ds == truth[covered]).mean() >= (mv == truth[covered]).mean()
    empirical = [(truth[matrix[:, j] != ABSTAIN] == matrix[matrix[:, j] != ABSTAIN, j]).mean() for j in range(6)]
    learned = np.array(info["learned_accuracy"])
    assert np.abs(learned - empirical).max() < 0.2 and np.abs(learned - empirical).mean() < 0.06
    assert learned.argmax() == int(np.argmax(empirical))
    model = DawidSkene(3).fit(matrix)
    assert model.log_likelihood == sorted(model.log_likelihood)  # EM never lowers the likelihood


def test_uncertainty_measures_rank_the_unsure_row_first():
    p = np.array([[0.98, 0.01, 0.01], [0.4, 0.35, 0.25], [0.5, 0.5, 0.0]])
    assert uncertainty(p, "entropy").argmax() == 1
    assert uncertainty(p, "margin").argmax() == 2
    assert uncertainty(p, "least_confidence").argmax() == 1
    rng = np.random.default_rng(0)
    assert select(p, 1, "margin", rng).tolist() == [2]
    assert sorted(select(p, 3, "random", rng).tolist()) == [0, 1, 2]


def test_the_diverse_variant_spreads_a_batch_over_clusters():
    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.01, (50, 2)), rng.normal(5, 0.01, (50, 2))])
    p = np.full((100, 2), 0.5)
    p[:50] = [0.45, 0.55]  # the second cluster is slightly more uncertain: plain margin takes only it
    assert (select(p, 4, "margin", np.random.default_rng(1), x) >= 50).all()
    diverse = select(p, 4, "margin", np.random.default_rng(1), x, diverse=True, diversity_pool=25)
    assert 0 < (diverse >= 50).sum() < 4


def test_uncertainty_sampling_needs_fewer_labels_than_random_on_digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x_pool, y_pool, x_test, y_test = x[:1200], y[:1200], x[1200:], y[1200:]
    reached = {}
    for strategy in ("margin", "random"):
        start = {int(i): int(y_pool[i]) for i in np.random.default_rng(0).choice(1200, 20, replace=False)}
        loop = Loop(x_pool, 10, strategy, batch_size=20, diverse=strategy != "random", seed=0, labels=start)
        rounds = loop.run(12, lambda pos: {int(i): int(y_pool[i]) for i in pos}, lambda l: l.accuracy(x_test, y_test))
        reached[strategy] = labels_to_reach([(r.labeled, r.accuracy) for r in rounds], 0.88)
    assert reached["margin"] is not None and (reached["random"] is None or reached["margin"] < reached["random"])


def test_label_studio_round_trip_through_real_files(tmp_path):
    frame = CARS.set_index(pd.Index([10, 11, 12, 13, 14, 15]))
    probs = np.array([[0.1, 0.8, 0.1], [0.2, 0.2, 0.6]])
    tasks = export_tasks(frame, [13, 11], CLASSES, tmp_path / "q" / "tasks.json", columns=["Name", "Cylinders"],
                         probabilities=probs, model_version="m1")
    written = json.loads(tasks.read_text())
    assert written[0]["data"]["row_id"] == "13" and written[0]["data"]["text"] == "Name: honda civic | Cylinders: 4"
    prediction = written[0]["predictions"][0]["result"][0]
    assert prediction == {"id": "pred-1", "from_name": "label", "to_name": "text", "type": "choices",
                          "value": {"choices": ["Japan"]}, "score": 0.8}
    assert '<Choice value="Japan"/>' in (tmp_path / "q" / "label_config.xml").read_text()
    export = simulate_annotator(tasks, tmp_path / "q" / "export.json", {"13": "Japan"}, classes=CLASSES)
    exported = json.loads(export.read_text())
    assert exported[0]["annotations"][0]["result"][0]["value"] == {"choices": ["Japan"]}
    assert exported[1]["annotations"] == []
    imported = read_export(export, CLASSES)
    assert imported.labels == {"13": "Japan"} and imported.skipped == ["11"]


def test_an_export_with_a_choice_that_is_not_a_class_is_refused(tmp_path):
    path = tmp_path / "export.json"
    path.write_text(json.dumps([{"id": 1, "data": {"row_id": "3"}, "annotations": [
        {"was_cancelled": False, "result": [{"type": "choices", "from_name": "label", "value": {"choices": ["Mars"]}}]},
    ]}]))
    with pytest.raises(StageError, match=r"choice 'Mars' is not a class"):
        read_export(path, CLASSES)
    path.write_text(json.dumps([{"id": 1, "data": {"row_id": "3"}, "annotations": [
        {"was_cancelled": True, "result": [{"type": "choices", "from_name": "label", "value": {"choices": ["Mars"]}}]},
    ]}]))
    assert read_export(path, CLASSES).skipped == ["3"]


def test_label_config_escapes_class_names():
    assert "<Choice value='a &lt;b&gt; \"c\"'/>" in label_config(['a <b> "c"'])


def test_a_migration_merges_automatically_queues_a_split_and_says_how_to_compare():
    old = pd.Series(["sun", "rain", "drizzle", "wet", "fog", "wet"], index=list("abcdef"))
    merge = Migration.parse({"merge": {"wet": ["rain", "drizzle"]}}, "m")
    merged, queued, counts = merge.apply(old)
    assert merged.tolist() == ["sun", "wet", "wet", "wet", "fog", "wet"] and len(queued) == 0
    assert merge.new_classes(["drizzle", "fog", "rain", "sun"]) == ["wet", "fog", "sun"]
    split = Migration.parse({"split": {"wet": ["rain", "drizzle"]}, "add": ["hail"], "remove": ["fog"]}, "m")
    split.check_classes(["fog", "sun", "wet"], "m")
    new, queued, counts = split.apply(merged)
    assert list(queued) == ["b", "c", "d", "f"] and counts["queued"] == 4 and counts["removed"] == {"fog": 1}
    assert new.tolist() == ["sun", None, None, None, None, None]
    assert split.new_classes(["fog", "sun", "wet"]) == ["sun", "rain", "drizzle", "hail"]
    assert split.comparison() == {"rain": "wet", "drizzle": "wet"}
    assert schema_id(["a", "b"]) == schema_id(["b", "a"]) != schema_id(["a", "c"])
    with pytest.raises(RecipeError, match=r"m.split: wet not among the current classes"):
        split.check_classes(["sun", "fog"], "m")
    with pytest.raises(RecipeError, match=r"m.split.wet: two or more new classes"):
        Migration.parse({"split": {"wet": ["rain"]}}, "m")


def test_a_model_function_votes_the_registered_models_class_above_its_confidence_floor(mlp_onnx):
    from pathlib import Path
    from types import SimpleNamespace

    from framework.testing.data import breast_cancer_splits

    splits = breast_cancer_splits()
    classes = list(splits.dataset.classes)
    model = SimpleNamespace(ref="bc:0123456789ab", onnx_bytes=Path(mlp_onnx.path).read_bytes(), schema=mlp_onnx.schema,
                            classes=list(mlp_onnx.classes), input_name=mlp_onnx.input_name, output_name=mlp_onnx.output_name)
    asked = []

    def loader(ref):
        asked.append(ref)
        return model

    def votes(floor):
        fns = parse_functions([{"name": "champion", "type": "model", "ref": "bc@prod", "min_confidence": floor}], "f")
        return apply_functions(fns, splits.test, classes, loader)[:, 0]

    every, sure = votes(0.0), votes(0.9999)
    assert (every != ABSTAIN).all() and asked == ["bc@prod", "bc@prod"]
    assert 0 < (sure != ABSTAIN).sum() < len(every) and set(sure[sure != ABSTAIN]) <= set(every)
    truth = splits.test[splits.dataset.target].map({c: i for i, c in enumerate(classes)}).to_numpy()
    assert (every == truth).mean() > 0.9
    with pytest.raises(StageError, match="no registry is available"):
        apply_functions(parse_functions([{"name": "m", "type": "model", "ref": "bc@prod"}], "f"), splits.test, classes)
