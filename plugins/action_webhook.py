"""Action ``webhook``: POST the alert and its evidence as JSON to a URL.

Loopback only by default (``127.0.0.1``, ``::1``, ``localhost``): an alert's evidence names
features and figures of the served traffic, so sending it off the machine is a decision the
recipe states with ``allow_remote: true``. The body::

    {"event": "alert", "recipe": ..., "monitor": "whylogs_drift", "kind": "drift",
     "message": "...", "evidence": {...}, "time": 1700000000.0}
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict
from urllib.parse import urlsplit

from framework.components import Action, ActionContext, Alert
from framework.errors import RecipeError, StageError
from framework.hookspecs import hookimpl

LOOPBACK = ("127.0.0.1", "::1", "localhost")


@dataclass
class WebhookConfig:
    url: str = ""
    timeout_s: float = 5.0
    #: extra request headers (e.g. a receiver's routing key; no secrets in a recipe)
    headers: Dict[str, str] = field(default_factory=dict)
    #: allow a host other than loopback
    allow_remote: bool = False
    #: a reply other than 2xx fails the action (an event with status "failed")
    fail_on_error: bool = True


class WebhookAction(Action):
    name = "webhook"
    Config = WebhookConfig
    summary = "POST each alert and its evidence as JSON to a URL (loopback unless allow_remote)"

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Any = None) -> None:
        parts = urlsplit(config.url or "")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RecipeError(f"{key}.url: expected an http(s) URL, e.g. http://127.0.0.1:9000/alerts, got '{config.url}'")
        if not config.allow_remote and parts.hostname not in LOOPBACK:
            raise RecipeError(f"{key}.url: host '{parts.hostname}' is not loopback ({', '.join(LOOPBACK)}); an alert's "
                              f"evidence describes the served traffic: set {key}.allow_remote=true to send it there")
        if not config.timeout_s > 0:
            raise RecipeError(f"{key}.timeout_s: expected > 0, got {config.timeout_s}")

    def act(self, alert: Alert, ctx: ActionContext) -> dict:
        import httpx

        body = {"event": "alert", "monitor": alert.monitor, "kind": alert.kind, "message": alert.message,
                "evidence": alert.evidence, "time": alert.time}
        try:
            resp = httpx.post(self.config.url, json=body, headers=dict(self.config.headers),
                              timeout=self.config.timeout_s)
        except httpx.HTTPError as exc:
            raise StageError(f"webhook {self.config.url}: {exc!r}") from None
        if self.config.fail_on_error and not 200 <= resp.status_code < 300:
            raise StageError(f"webhook {self.config.url} answered {resp.status_code}: {resp.text[:200]}")
        return {"url": self.config.url, "status_code": resp.status_code}


@hookimpl
def register_actions():
    return [WebhookAction]
