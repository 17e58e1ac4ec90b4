"""Action ``retrain``: on an alert, the recipe's data ▸ checks ▸ version ▸ … ▸ train ▸ export ▸
gate ▸ register again on the newest data version, and the new model canaried against ``prod`` on
the running app with the traffic strategy ``strategy`` (default ``canary``): no human step.

``data`` overrides keys of the recipe's data section for the re-read (e.g. the ``path`` of the
file the newest rows arrived in); with ``data.append: true`` in the recipe the rows are stored
as a new batch of the data version. Data that is not newer than the served model's ends the
action (``no newer data``) before any training. Give it a ``cooldown_s``: one incident, one
retrain.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict

from framework.components import Action, ActionContext, Alert
from framework.errors import RecipeError
from framework.hookspecs import hookimpl


@dataclass
class RetrainConfig:
    #: keys overriding the recipe's data section when it is re-read (e.g. {path: new.csv})
    data: Dict[str, Any] = field(default_factory=dict)
    #: the traffic strategy that rolls the new model out against prod
    strategy: str = "canary"
    #: its options (champion / challenger arm names, steps, gates ...)
    strategy_options: Dict[str, Any] = field(default_factory=dict)


class RetrainAction(Action):
    name = "retrain"
    Config = RetrainConfig
    summary = "retrain on the newest data version and canary the new model against prod"
    references = {"strategy": "traffic_strategy"}

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        if "type" in config.strategy_options:
            raise RecipeError(f"{key}.strategy_options.type: name the strategy with {key}.strategy")
        for banned in ("window", "append"):
            if banned in config.data:
                raise RecipeError(f"{key}.data.{banned}: a retrain re-reads the recipe's source; "
                                  f"set data.{banned} in the recipe's data section")
        strategy = (refs or {}).get("strategy")
        if strategy is not None:
            cls.strategy_config(strategy, config.strategy_options, f"{key}.strategy_options")

    @staticmethod
    def strategy_config(strategy: type, options: dict, key: str) -> Any:
        from omegaconf import OmegaConf
        from omegaconf.errors import OmegaConfBaseException

        try:
            config = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(strategy.Config), dict(options)))
        except OmegaConfBaseException as exc:
            raise RecipeError(f"{key}: {str(exc).splitlines()[0]}") from None
        strategy.check_config(config, key, {})
        return config

    def act(self, alert: Alert, ctx: ActionContext) -> dict:
        strategy = self.refs.get("strategy")
        if strategy is None:
            raise RecipeError(f"retrain: strategy '{self.config.strategy}' was not resolved (build the action from a plan)")
        config = self.strategy_config(strategy, self.config.strategy_options, "retrain.strategy_options")
        return ctx.retrain(alert, dict(self.config.data), strategy, config)


@hookimpl
def register_actions():
    return [RetrainAction]
