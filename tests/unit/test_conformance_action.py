"""Every built-in action passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from framework.testing import ActionContract
from plugins.action_log import LogAction
from plugins.action_retrain import RetrainAction
from plugins.action_rollback import RollbackAction
from plugins.action_webhook import WebhookAction


class TestLogContract(ActionContract):
    action_cls = LogAction

    def invalid_config(self):
        return LogAction.Config(level="loud")


class TestRollbackContract(ActionContract):
    action_cls = RollbackAction

    def test_asks_the_app_to_roll_back_with_the_alert_as_reason(self, tmp_path):
        result, ctx, alert = self.act(tmp_path)
        assert ctx.calls == [("rollback", f"drift alert from whylogs_drift: {alert.message}")]
        assert result["rolled_back"] is True


class TestRetrainContract(ActionContract):
    action_cls = RetrainAction

    def make_config(self):
        return RetrainAction.Config(data={"path": "new.csv"}, strategy_options={"steps": [50, 100]})

    def invalid_config(self):
        return RetrainAction.Config(data={"append": False})

    def test_asks_the_core_to_retrain_and_roll_out_with_the_strategy(self, tmp_path):
        _, ctx, _ = self.act(tmp_path)
        assert [(name, call["data"], call["rollout"]) for name, call in ctx.calls] == [("retrain", {"path": "new.csv"}, "canary")]


@pytest.fixture(scope="module")
def receiver():
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()
    server.server_close()


class TestWebhookContract(ActionContract):
    action_cls = WebhookAction

    @pytest.fixture(autouse=True)
    def _url(self, receiver):
        self.url = receiver

    def make_config(self):
        return WebhookAction.Config(url=getattr(self, "url", "http://127.0.0.1:9/hook"))

    def invalid_config(self):
        return WebhookAction.Config(url="http://10.0.0.1/hook")
