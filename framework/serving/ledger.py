"""What was served, and what feedback came back for it: the memory behind ``POST feedback``.

Pure Python. Feedback may arrive late, out of order and more than once; the ledger checks it
against the answers it remembers and hands the strategy host one ``Feedback`` per answer and kind.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict, deque
from typing import Any, Iterable, Mapping, NamedTuple

from ..components import Feedback
from ..errors import RequestError
from .requests import FeedbackItem

#: request ids remembered for feedback (oldest evicted): ~100 B each plus the prediction
FEEDBACK_MEMORY = 100_000
#: served instances remembered across those ids (oldest evicted first): a flood of 1,024-instance
#: requests must not hold 100M predictions in memory
FEEDBACK_MEMORY_INSTANCES = 1_000_000
#: feedback entries shown by ``GET -/strategy`` (the per-arm counters are cumulative); only these
#: are kept: the record log holds every item
FEEDBACK_LOG = 10


class Accepted(NamedTuple):
    """A feedback request's outcome: what to pass to the strategy, and the JSON answer."""

    feedback: list[Feedback]
    body: dict
    #: per accepted feedback: "predict" or "rank", the kind of answer it is about (for the record log)
    answer_kinds: list = []


class FeedbackLedger:
    """Served request ids (at most ``memory``) and the feedback recorded against them, per arm."""

    def __init__(self, arms: Iterable[str], memory: int = FEEDBACK_MEMORY, log_kept: int = FEEDBACK_LOG,
                 label_mapping: Mapping[str, str] | None = None,
                 memory_instances: int = FEEDBACK_MEMORY_INSTANCES):
        self.arms = list(arms)
        if not self.arms:
            raise ValueError("a feedback ledger needs at least one arm")
        if int(memory) < 1:
            raise ValueError(f"feedback memory must be >= 1 request id, got {memory}")
        self.memory = int(memory)
        self.memory_instances = max(1, int(memory_instances))
        self._instances = 0
        # request id -> _Served, oldest first: eviction pops from the front
        self._served: OrderedDict[str, _Served] = OrderedDict()
        self._log: deque[dict] = deque(maxlen=max(1, int(log_kept)))
        self._per_arm = {arm: _ArmCounters() for arm in self.arms}
        self.counts = {"accepted": 0, "duplicates": 0, "unknown": 0}
        #: arms of different label schemas: labels and predictions are judged in mapped classes
        self.label_mapping = {str(k): v for k, v in (label_mapping or {}).items()}

    def __len__(self) -> int:
        return len(self._served)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._served

    def remember(self, request_id: str, arm: str, prediction: Any, kind: str) -> None:
        """An answer was served (``kind`` "predict" or "rank") by one of the ledger's arms; a reused
        id keeps the latest answer, the one feedback will judge."""
        served = self._served
        if request_id in served:
            self._instances -= served.pop(request_id).size
        entry = served[request_id] = _Served(arm, prediction, kind)
        self._instances += entry.size
        while len(served) > self.memory or (self._instances > self.memory_instances and len(served) > 1):
            self._instances -= served.popitem(last=False)[1].size

    def restore(self, answers: Iterable[dict], feedback: Iterable[dict]) -> int:
        """Rebuild from the record log after a restart: the answers still within memory, which
        feedback kinds they already got, and the per-arm counters. Returns the answers restored."""
        for answer in answers:
            if answer.get("arm") in self._per_arm:
                self.remember(answer["request_id"], answer["arm"], answer.get("prediction"), answer.get("kind", "predict"))
        for item in feedback:
            arm = item.get("arm")
            if arm not in self._per_arm:
                continue
            entry = self._served.get(item["request_id"])
            kinds = set(item.get("kinds") or ())
            if entry is not None:
                entry.given = entry.given | kinds
            restored = Feedback(item["request_id"], arm, label=item.get("label") if "label" in kinds else None,
                                reward=item.get("reward") if "reward" in kinds else None,
                                clicks=tuple(item.get("clicks") or ()) if "clicks" in kinds else (),
                                prediction=item.get("prediction"))
            self._count(restored, item.get("answer_kind", "predict"))
            self.counts["accepted"] += 1
        return len(self._served)

    def accept(self, items: list[FeedbackItem], batch: bool) -> Accepted:
        """Check ``items`` against what was served, then record them (a batch is one unit).

        Unknown ids: RequestError 404 for a single item, listed as ``unknown`` in a batch. Clicks
        on a ranking must name items that were in it (RequestError 422 naming the click).
        A kind (label, reward, clicks) already given for an answer is counted as a duplicate.
        """
        resolved: list[tuple[FeedbackItem, _Served | None]] = []
        for item in items:
            entry = self._served.get(item.request_id)
            if entry is None and not batch:
                self.counts["unknown"] += 1
                raise RequestError("request_id", f"unknown or expired request id '{item.request_id}'", 404)
            if entry is not None and item.clicks and entry.kind == "rank":
                _check_clicks(item, entry)
            resolved.append((item, entry))
        accepted: list[Feedback] = []
        answer_kinds: list[str] = []
        duplicates, unknown = 0, []
        for item, entry in resolved:
            if entry is None:
                unknown.append(item.request_id)
                continue
            new = tuple(k for k in item.kinds if k not in entry.given)
            if not new:  # acknowledged, but the strategy counts each answer once per kind
                duplicates += 1
                continue
            entry.given = entry.given | set(new)
            feedback = Feedback(
                item.request_id,
                entry.arm,
                label=self._mapped(item.label) if "label" in new else None,
                reward=item.reward if "reward" in new else None,
                clicks=tuple(item.clicks) if "clicks" in new else (),
                prediction=self._mapped(entry.prediction) if entry.kind == "predict" else entry.prediction,
            )
            self._count(feedback, entry.kind)
            accepted.append(feedback)
            answer_kinds.append(entry.kind)
        self.counts["accepted"] += len(accepted)
        self.counts["duplicates"] += duplicates
        self.counts["unknown"] += len(unknown)
        body: dict[str, Any] = {"accepted": len(accepted), "duplicates": duplicates, "unknown": unknown}
        if not batch:
            body.update(request_id=items[0].request_id, arm=resolved[0][1].arm, duplicate=duplicates == 1)
        return Accepted(accepted, body, answer_kinds)

    def _mapped(self, value: Any) -> Any:
        """A label or prediction in the classes the arms are compared in (``label_mapping``)."""
        if not self.label_mapping or value is None:
            return value
        if isinstance(value, list):
            return [self._mapped(v) for v in value]
        return self.label_mapping.get(str(value), value)

    def summary(self) -> dict:
        """Counts, per-arm accuracy / reward / clicks, and the ten latest entries (JSON-able)."""
        return {
            **self.counts,
            "remembered_requests": len(self._served),
            "arms": {arm: c.as_dict() for arm, c in self._per_arm.items()},
            "recent": list(self._log)[-10:],
        }

    def _count(self, feedback: Feedback, kind: str) -> None:
        counters = self._per_arm[feedback.arm]
        counters.feedback += 1
        if feedback.label is not None and kind == "predict":
            n, correct = _score(feedback.label, feedback.prediction)
            counters.labels += n
            counters.correct += correct
        if feedback.reward is not None:
            counters.rewards += 1
            counters.reward_sum += feedback.reward
        if feedback.clicks:
            counters.clicked += 1
            counters.clicks += len(feedback.clicks)
        self._log.append(
            {"time": time.time(), "request_id": feedback.request_id, "arm": feedback.arm, "label": feedback.label,
             "reward": feedback.reward, "clicks": list(feedback.clicks), "prediction": feedback.prediction}
        )


class _Served:
    """One answered request, so later feedback can name its arm and prediction."""

    __slots__ = ("arm", "prediction", "kind", "given", "size")

    def __init__(self, arm: str, prediction: Any, kind: str):
        self.arm = arm
        self.prediction = prediction
        self.kind = kind
        self.given: frozenset = frozenset()  # feedback kinds already passed to the strategy
        self.size = len(prediction) if isinstance(prediction, list) else 1


class _ArmCounters:
    """Cumulative feedback counters of one arm (what answered, judged against what came back)."""

    __slots__ = ("feedback", "labels", "correct", "rewards", "reward_sum", "clicked", "clicks")

    def __init__(self):
        self.feedback = self.labels = self.correct = self.rewards = self.clicked = self.clicks = 0
        self.reward_sum = 0.0

    def as_dict(self) -> dict:
        return {
            "feedback": self.feedback,
            "labels": self.labels,
            "correct": self.correct,
            "accuracy": self.correct / self.labels if self.labels else None,
            "rewards": self.rewards,
            "mean_reward": self.reward_sum / self.rewards if self.rewards else None,
            "clicked_answers": self.clicked,
            "clicks": self.clicks,
        }


def _same(label: Any, prediction: Any) -> bool:
    return label == prediction or str(label) == str(prediction)


def _score(label: Any, prediction: Any) -> tuple[int, int]:
    """(labels scored, correct): one per instance; shapes that do not match are not scored."""
    if isinstance(prediction, list):
        if isinstance(label, list) and len(label) == len(prediction):
            return len(label), sum(_same(a, b) for a, b in zip(label, prediction))
        return 0, 0
    if isinstance(label, list):
        return (1, int(_same(label[0], prediction))) if len(label) == 1 else (0, 0)
    return 1, int(_same(label, prediction))


def _check_clicks(item: FeedbackItem, entry: _Served) -> None:
    """Clicks on a ranking must name items that were in it. Compared as strings ("3" is 3) and
    handed on as the ids that were served, so a strategy matches them against its own ranking."""
    shown = {str(i): i for i in entry.prediction}
    clicks = []
    for j, c in enumerate(item.clicks or ()):
        if str(c) not in shown:
            raise RequestError(
                f"{item.at}clicks[{j}]", f"item {json.dumps(c)} was not in the ranking served for request '{item.request_id}'"
            )
        clicks.append(shown[str(c)])
    item.clicks = tuple(clicks)
