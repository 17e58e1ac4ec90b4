"""Conformance kit for actions (recipe list ``actions``), with a recording stand-in for the core's
``ActionContext``.

Subclass :class:`ActionContract` in a test module::

    from framework.testing import ActionContract

    class TestMyActionContract(ActionContract):
        action_cls = MyAction

        def make_config(self):
            return MyAction.Config(url="http://127.0.0.1:9/")

The kit calls ``act`` on a drift alert with a :class:`RecordingActionContext` (its ``rollback``
and ``retrain`` record the call and answer as the core would), and checks the event's details
are JSON-able and the alert untouched.
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ..components import Action, Alert
from .component_contract import ComponentContract, assert_jsonable

__all__ = ["ActionContract", "RecordingActionContext", "drift_alert"]


def drift_alert() -> Alert:
    """A drift alert with evidence, as the whylogs_drift monitor raises one."""
    return Alert("whylogs_drift", "drift", "drift in feature 'mean radius' of model:000000000001: KS D 0.41",
                 {"columns_drifted": 1, "drifted_columns": ["mean radius"], "tests": 31}, 1_700_000_000.0)


class RecordingActionContext:
    """An ``ActionContext`` that records what an action asked of the system."""

    def __init__(self, out_dir: Path, app_url: str | None = "http://127.0.0.1:9/"):
        self.logger = logging.getLogger("framework.testing.action")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.app_url = app_url
        self.calls: list[tuple[str, Any]] = []

    def rollback(self, reason: str) -> dict:
        self.calls.append(("rollback", reason))
        return {"rolled_back": True, "event": {"verdict": "rollback", "reason": reason}}

    def retrain(self, alert: Alert, data: Mapping[str, Any], rollout: Any, rollout_config: Any) -> dict:
        self.calls.append(("retrain", {"alert": alert.message, "data": dict(data), "rollout": getattr(rollout, "name", rollout)}))
        return {"status": "promoted", "model_version": "model:000000000002", "data_version": "data:000000000002"}


class ActionContract(ComponentContract):
    """Subclass, set ``action_cls``; override ``make_config()`` and ``make_alert()`` if needed."""

    kind = "action"
    component_attr = "action_cls"
    action_cls: ClassVar[type[Action]]

    def make_alert(self) -> Alert:
        return drift_alert()

    def act(self, tmp_path: Path) -> tuple[dict, RecordingActionContext, Alert]:
        alert = self.make_alert()
        ctx = RecordingActionContext(Path(tmp_path) / "act")
        return self.new_component().act(alert, ctx), ctx, alert

    def test_acts_and_returns_jsonable_details(self, tmp_path):
        result, _, _ = self.act(tmp_path)
        assert isinstance(result, dict), f"{self.action_cls.__name__}.act() returned {type(result).__name__}, not a dict"
        assert_jsonable(result, f"{self.action_cls.__name__}.act()")

    def test_leaves_the_alert_unchanged(self, tmp_path):
        alert = self.make_alert()
        before = copy.deepcopy(alert)
        self.new_component().act(alert, RecordingActionContext(Path(tmp_path) / "act"))
        assert alert == before, "act() modified the alert"
