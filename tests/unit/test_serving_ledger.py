"""FeedbackLedger without Ray: served ids, dedup per kind, eviction, validation, counters."""
from __future__ import annotations

import json

import pytest

from framework.components import Feedback
from framework.errors import RequestError
from framework.serving.ledger import FeedbackLedger
from framework.serving.requests import parse_feedback_body

ARMS = ("champion", "challenger")


def items(body: dict):
    return parse_feedback_body(json.dumps(body).encode())


def give(ledger: FeedbackLedger, body: dict):
    return ledger.accept(*items(body))


def test_construction_validates():
    with pytest.raises(ValueError, match="at least one arm"):
        FeedbackLedger([])
    with pytest.raises(ValueError, match="memory must be >= 1"):
        FeedbackLedger(ARMS, memory=0)


def test_single_feedback_names_arm_and_prediction():
    ledger = FeedbackLedger(ARMS)
    ledger.remember("r1", "challenger", "setosa", "predict")
    accepted = give(ledger, {"request_id": "r1", "label": "setosa"})
    assert accepted.feedback == [Feedback("r1", "challenger", label="setosa", prediction="setosa")]
    assert accepted.body == {"accepted": 1, "duplicates": 0, "unknown": [], "request_id": "r1",
                             "arm": "challenger", "duplicate": False}


def test_dedup_is_per_kind():
    ledger = FeedbackLedger(ARMS)
    ledger.remember("r1", "champion", 1, "predict")
    give(ledger, {"request_id": "r1", "label": 1})
    again = give(ledger, {"request_id": "r1", "label": 0})
    assert again.feedback == [] and again.body["duplicate"] is True and again.body["duplicates"] == 1
    # a reward is a new kind for the same answer; the label it repeats is dropped
    both = give(ledger, {"request_id": "r1", "label": 1, "reward": 0.5})
    assert both.feedback == [Feedback("r1", "champion", label=None, reward=0.5, prediction=1)]
    assert ledger.counts == {"accepted": 2, "duplicates": 1, "unknown": 0}


def test_a_reused_request_id_is_judged_by_its_latest_answer():
    ledger = FeedbackLedger(ARMS)
    ledger.remember("r1", "champion", 0, "predict")
    give(ledger, {"request_id": "r1", "label": 0})
    ledger.remember("r1", "challenger", 1, "predict")
    accepted = give(ledger, {"request_id": "r1", "label": 0})
    assert accepted.feedback[0].arm == "challenger" and accepted.feedback[0].prediction == 1


def test_oldest_request_ids_are_evicted():
    ledger = FeedbackLedger(ARMS, memory=2)
    for rid in ("r1", "r2", "r3"):
        ledger.remember(rid, "champion", 0, "predict")
    assert len(ledger) == 2 and "r1" not in ledger and "r3" in ledger
    with pytest.raises(RequestError) as info:
        give(ledger, {"request_id": "r1", "label": 0})
    assert info.value.status == 404 and info.value.field == "request_id" and "'r1'" in info.value.reason


def test_unknown_ids_404_alone_listed_in_a_batch():
    ledger = FeedbackLedger(ARMS)
    ledger.remember("r1", "champion", 0, "predict")
    with pytest.raises(RequestError) as info:
        give(ledger, {"request_id": "nope", "label": 0})
    assert info.value.status == 404 and ledger.counts["unknown"] == 1
    batch = give(ledger, {"feedback": [{"request_id": "nope", "label": 0}, {"request_id": "r1", "label": 0},
                                       {"request_id": "gone", "reward": 1.0}]})
    assert batch.body == {"accepted": 1, "duplicates": 0, "unknown": ["nope", "gone"]}  # no single-item fields
    assert [f.request_id for f in batch.feedback] == ["r1"]
    assert ledger.counts == {"accepted": 1, "duplicates": 0, "unknown": 3}


def test_clicks_must_name_items_of_the_served_ranking():
    ledger = FeedbackLedger(ARMS)
    ledger.remember("q1", "challenger", [3, "b", 7], "rank")
    accepted = give(ledger, {"request_id": "q1", "clicks": ["3", "b"]})
    assert accepted.feedback[0].clicks == (3, "b")  # as served: "3" is the item 3
    ledger.remember("q2", "champion", ["x"], "rank")
    with pytest.raises(RequestError) as info:
        give(ledger, {"feedback": [{"request_id": "q2", "clicks": ["x"]}, {"request_id": "q2", "clicks": ["y"]}]})
    assert info.value.field == "feedback[1].clicks[0]" and "'q2'" in info.value.reason
    # the batch was refused as one: the valid first item was not recorded either
    assert ledger.counts["accepted"] == 1 and give(ledger, {"request_id": "q2", "clicks": ["x"]}).body["accepted"] == 1


def test_clicks_on_a_prediction_are_not_checked():
    ledger = FeedbackLedger(ARMS)
    ledger.remember("r1", "champion", "a", "predict")
    assert give(ledger, {"request_id": "r1", "clicks": ["anything"]}).feedback[0].clicks == ("anything",)


def test_per_arm_counters_and_summary():
    ledger = FeedbackLedger(ARMS, log_kept=3)
    ledger.remember("p1", "champion", ["a", "b"], "predict")
    ledger.remember("p2", "champion", "a", "predict")
    ledger.remember("p3", "challenger", 1, "predict")
    ledger.remember("q1", "challenger", ["i1", "i2"], "rank")
    give(ledger, {"feedback": [
        {"request_id": "p1", "label": ["a", "c"]},  # two instances, one right
        {"request_id": "p2", "label": "a", "reward": 1.0},
        {"request_id": "p3", "label": "1", "reward": 0.0},  # "1" is the class 1
        {"request_id": "q1", "label": "x", "clicks": ["i2"]},  # a ranking's label is not scored
    ]})
    summary = ledger.summary()
    champion, challenger = summary["arms"]["champion"], summary["arms"]["challenger"]
    assert (champion["feedback"], champion["labels"], champion["correct"], champion["accuracy"]) == (2, 3, 2, 2 / 3)
    assert (champion["rewards"], champion["mean_reward"]) == (1, 1.0)
    assert (challenger["labels"], challenger["correct"], challenger["rewards"], challenger["mean_reward"]) == (1, 1, 1, 0.0)
    assert (challenger["clicked_answers"], challenger["clicks"]) == (1, 1)
    assert summary["accepted"] == 4 and summary["remembered_requests"] == 4
    assert [e["request_id"] for e in summary["recent"]] == ["p2", "p3", "q1"]  # the log is bounded
    assert json.loads(json.dumps(summary)) == summary
