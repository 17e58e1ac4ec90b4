"""framework.explain (permutation importance, occlusion attributions) and framework.model_card."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from framework.explain import (
    occlusion_attributions,
    occlusion_batch,
    permutation_importance,
    top_attributions,
    training_means,
)
from framework.model_card import build_model_card, render_markdown, slice_metrics

FEATURES = ["signal", "noise_a", "noise_b"]


def logistic_fn(w: np.ndarray, b: float = 0.0):
    """A two-class model: p(class 1) = sigmoid(x @ w + b); counts its calls."""

    def fn(x: np.ndarray) -> np.ndarray:
        fn.calls += 1
        z = np.asarray(x, dtype=np.float64) @ w + b
        p1 = 1.0 / (1.0 + np.exp(-z))
        return np.stack([1.0 - p1, p1], axis=1).astype(np.float32)

    fn.calls = 0
    return fn


@pytest.fixture
def synthetic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)  # only "signal" decides the class
    return x, y


def test_permutation_importance_ranks_informative_feature_first(synthetic):
    x, y = synthetic
    fn = logistic_fn(np.array([4.0, 0.05, 0.0]))
    rows = permutation_importance(fn, x, y, FEATURES, repeats=5, seed=0)
    assert [r["feature"] for r in rows][0] == "signal"
    assert set(rows[0]) == {"feature", "importance", "std"}
    signal = rows[0]["importance"]
    noise = {r["feature"]: r["importance"] for r in rows[1:]}
    assert signal > 0.3  # shuffling the only informative feature ruins the model
    assert all(abs(v) < 0.05 for v in noise.values())
    assert noise["noise_b"] == 0.0 and rows[-1]["feature"] == "noise_b"  # unused: exactly no drop
    assert [r["importance"] for r in rows] == sorted((r["importance"] for r in rows), reverse=True)
    assert fn.calls == 1 + len(FEATURES)  # one call per feature for all repeats
    again = permutation_importance(fn, x, y, FEATURES, repeats=5, seed=0)
    assert again == rows  # seeded


def test_permutation_importance_rejects_bad_shapes(synthetic):
    x, y = synthetic
    fn = logistic_fn(np.array([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="one column per feature"):
        permutation_importance(fn, x, y, FEATURES[:2])
    with pytest.raises(ValueError, match="labels"):
        permutation_importance(fn, x, y[:10], FEATURES)


def test_occlusion_batch_layout():
    x = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    batch = occlusion_batch(x, [10.0, 20.0])
    np.testing.assert_array_equal(
        batch, [[1, 2], [10, 2], [1, 20], [3, 4], [10, 4], [3, 20]]
    )
    with pytest.raises(ValueError, match="baseline has 3 values for 2 features"):
        occlusion_batch(x, [0.0, 0.0, 0.0])


def test_occlusion_attributions_sign_shape_and_one_call():
    fn = logistic_fn(np.array([3.0, -2.0, 0.0]))
    baseline = [0.0, 0.0, 0.0]
    x = np.array([[2.0, 0.0, 5.0], [-2.0, 0.0, 5.0], [0.0, 1.0, 5.0]], dtype=np.float32)
    a = occlusion_attributions(fn, x, baseline)
    assert a.shape == (3, 3) and fn.calls == 1
    # row 0 predicted class 1; "signal"=2 pushed toward it
    assert a[0, 0] > 0.4
    # row 1 predicted class 0; "signal"=-2 pushed toward class 0, so also positive
    assert a[1, 0] > 0.4
    # row 2: "noise_a"=1 with weight -2 pushed toward class 0, the predicted one
    assert fn(x[2:3])[0].argmax() == 0 and a[2, 1] > 0
    # a feature at its baseline value or unused by the model attributes nothing
    np.testing.assert_allclose(a[:, 2], 0.0, atol=1e-7)
    np.testing.assert_allclose(a[0, 1], 0.0, atol=1e-7)
    # definition: p(target | x) - p(target | x with feature j := baseline)
    p = fn(x)
    occluded = x.copy()
    occluded[:, 0] = 0.0
    expected = p[np.arange(3), p.argmax(1)] - fn(occluded)[np.arange(3), p.argmax(1)]
    np.testing.assert_allclose(a[:, 0], expected, atol=1e-6)
    # an explicit target explains that class instead: the opposite sign for two classes
    np.testing.assert_allclose(occlusion_attributions(fn, x[:1], baseline, target_index=0)[0], -a[0], atol=1e-6)


def test_top_attributions_sorted_by_size():
    pairs = top_attributions(np.array([[0.1, -0.5, 0.2]]), ["a", "b", "c"], k=2)
    assert pairs == [[["b", -0.5], ["c", 0.2]]]


def test_training_means():
    assert training_means(np.array([[1.0, 2.0], [3.0, 6.0]])) == [2.0, 4.0]
    with pytest.raises(ValueError):
        training_means(np.zeros((0, 2)))


# ---------------------------------------------------------------------------------------------
# Model card
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def frame(synthetic):
    x, y = synthetic
    df = pd.DataFrame(x, columns=FEATURES)
    df["label"] = np.where(y == 1, "yes", "no")
    df["region"] = np.where(np.arange(len(df)) % 4 == 0, "north", "south")
    return df


def test_slice_metrics_and_card(frame, synthetic):
    x, y = synthetic
    fn = logistic_fn(np.array([4.0, 0.0, 0.0]))
    slices = slice_metrics(fn, frame, FEATURES, "label", ["no", "yes"],
                           {"north": "region == 'north'", "strong signal": "signal > 1", "nobody": "signal > 100"})
    assert slices["north"]["n"] == 100 and slices["north"]["accuracy"] == 1.0
    assert slices["strong signal"]["n"] == int((x[:, 0] > 1).sum())
    assert slices["nobody"] == {"query": "signal > 100", "n": 0, "accuracy": None}

    importance = permutation_importance(fn, x, y, FEATURES)
    card = build_model_card(
        "clf:3", "data-abc", {"accuracy": 0.97, "f1_macro": 0.96}, slices, importance,
        "Sort incoming cases for a human to review first.",
        ["Not for cases outside the training population.", "Not a diagnosis."],
        {"target": "label", "classes": ["no", "yes"], "trainer": "tune", "rows": 400},
    )
    assert card["model_version"] == "clf:3" and card["data_version"] == "data-abc"
    assert card["feature_importance"][0]["feature"] == "signal"
    import json

    json.dumps(card)  # plain data
    md = render_markdown(card)
    for text in ("# Model card: clf:3", "It predicts **label**", "`yes`", "97.0%", "| north (`region == 'north'`) | 100 | 100.0% |",
                 "strong signal", "nobody", "no examples: cannot judge", "| signal |", "Not a diagnosis.",
                 "data-abc", "trainer: tune", '"explain": true', "What it should not be used for",
                 "What it relies on most"):
        assert text in md, text


def test_small_and_weak_slices_are_flagged():
    card = build_model_card("m:1", None, {"accuracy": 0.9},
                            {"tiny": {"query": "a == 1", "n": 5, "accuracy": 0.6}}, [], "x", [], {})
    md = render_markdown(card)
    assert "only 5 examples: too few to judge" in md and "weaker than overall by 30.0 pts" in md
    assert "No limitations were written down" in md


def test_bad_slice_query_is_named(frame):
    fn = logistic_fn(np.array([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="slice 'broken'.*no_such_column"):
        slice_metrics(fn, frame, FEATURES, "label", ["no", "yes"], {"ok": "signal > 0", "broken": "no_such_column > 1"})
    with pytest.raises(ValueError, match="slice 'syntax'"):
        slice_metrics(fn, frame, FEATURES, "label", ["no", "yes"], {"syntax": "signal >> >"})


def test_card_requires_intended_use():
    with pytest.raises(ValueError, match="intended_use"):
        build_model_card("m:1", None, {}, {}, [], "  ", [], {})
