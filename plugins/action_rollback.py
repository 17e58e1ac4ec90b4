"""Action ``rollback``: roll back the running canary (or any strategy that can) through the app's
admin API (``POST -/admin/rollback`` with the admin token), the alert as the reason. A strategy
with nothing to roll back (a single model) refuses: the event says so."""
from __future__ import annotations

from framework.components import Action, ActionContext, Alert
from framework.hookspecs import hookimpl


class RollbackAction(Action):
    name = "rollback"
    summary = "roll back the running strategy (a canary) through the app's admin API"

    def act(self, alert: Alert, ctx: ActionContext) -> dict:
        return ctx.rollback(f"{alert.kind} alert from {alert.monitor}: {alert.message}")


@hookimpl
def register_actions():
    return [RollbackAction]
