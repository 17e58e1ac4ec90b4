"""Action ``log``: every alert it is declared ``on`` written to the run's log (and so to the
act stage's events), at the level the recipe says."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from framework.components import Action, ActionContext, Alert
from framework.errors import RecipeError
from framework.hookspecs import hookimpl

LEVELS = ("info", "warning", "error")


@dataclass
class LogConfig:
    #: info | warning | error
    level: str = "warning"


class LogAction(Action):
    name = "log"
    Config = LogConfig
    summary = "write each alert and its evidence to the run's log"

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if config.level not in LEVELS:
            raise RecipeError(f"{key}.level: expected one of {', '.join(LEVELS)}, got '{config.level}'")

    def act(self, alert: Alert, ctx: ActionContext) -> dict:
        logger = logging.getLogger("framework.alerts")
        getattr(logger, self.config.level)("%s alert from %s: %s", alert.kind, alert.monitor, alert.message)
        return {"logged": self.config.level}


@hookimpl
def register_actions():
    return [LogAction]
