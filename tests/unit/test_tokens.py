"""Service tokens at plan time: never on the command line or in the recipe, never empty or short,
from an environment variable or a 0600 file, and redacted from every file a run writes.

Regressions of the [harden] findings "an empty admin token opens the admin endpoints" (2) and
"secrets in plain sight" (8).
"""
from __future__ import annotations

import logging
import os

import pytest

from framework.errors import RecipeError, ServingError
from framework.run import plan_recipe
from framework.tokens import MIN_TOKEN_LENGTH, RedactingFilter, redact, token_problem

GOOD = "a-long-enough-admin-token-0123456789"
BASE = ["+recipe=quickstart"]


@pytest.fixture(autouse=True)
def no_tokens_in_env(monkeypatch):
    monkeypatch.delenv("FRAMEWORK_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("FRAMEWORK_CLIENT_TOKEN", raising=False)


def plan_error(overrides):
    with pytest.raises(RecipeError) as info:
        plan_recipe(BASE + overrides)
    return str(info.value)


@pytest.mark.parametrize("value", ["''", "s3cret", GOOD])
def test_a_literal_token_is_refused_whatever_its_value(value):
    msg = plan_error([f"serve.admin_token={value}"])
    assert msg.startswith("serve.admin_token: a token written in the recipe or on the command line")
    assert "FRAMEWORK_ADMIN_TOKEN" in msg and (value.strip("'") == "" or value not in msg)
    assert plan_error([f"serve.client_token={value}"]).startswith("serve.client_token:")


def test_the_empty_token_of_the_finding_is_refused(monkeypatch):
    monkeypatch.setenv("FRAMEWORK_ADMIN_TOKEN", "")
    msg = plan_error([])
    assert msg.startswith("serve.admin_token_env (environment variable FRAMEWORK_ADMIN_TOKEN): the token is refused: empty")
    monkeypatch.setenv("FRAMEWORK_ADMIN_TOKEN", "short")
    assert f"use at least {MIN_TOKEN_LENGTH}" in plan_error([])


def test_tokens_from_the_environment(monkeypatch):
    monkeypatch.setenv("FRAMEWORK_ADMIN_TOKEN", GOOD)
    monkeypatch.setenv("MY_CLIENT_TOKEN", "c" * 20)
    plan = plan_recipe(BASE + ["serve.client_token_env=MY_CLIENT_TOKEN"])
    assert plan.tokens.admin == GOOD and plan.tokens.client == "c" * 20
    assert GOOD not in repr(plan) and GOOD not in str(plan.resolved) and GOOD not in str(plan.describe())
    monkeypatch.setenv("MY_CLIENT_TOKEN", GOOD)
    assert "the same as the admin token" in plan_error(["serve.client_token_env=MY_CLIENT_TOKEN"])


def test_tokens_from_a_private_file_only(tmp_path):
    token_file = tmp_path / "admin.token"
    token_file.write_text(GOOD + "\n")
    os.chmod(token_file, 0o644)
    msg = plan_error([f"serve.admin_token_file={token_file}"])
    assert msg.startswith("serve.admin_token_file: ") and "mode 0644" in msg and "chmod 600" in msg
    os.chmod(token_file, 0o600)
    assert plan_recipe(BASE + [f"serve.admin_token_file={token_file}"]).tokens.admin == GOOD
    assert "cannot read" in plan_error([f"serve.admin_token_file={tmp_path / 'missing'}"])


def test_no_token_is_read_when_nothing_is_served(monkeypatch):
    monkeypatch.setenv("FRAMEWORK_ADMIN_TOKEN", "")
    assert plan_recipe(BASE + ["serve.enabled=false"]).tokens.admin is None


@pytest.mark.parametrize("token,problem", [("", "empty"), ("   " * 8, "empty"), ("x" * 15, "15 characters"),
                                           (" " + "x" * 20, "whitespace"), ("x" * 20 + "\n", "whitespace"), (None, "string")])
def test_token_problems(token, problem):
    assert problem in token_problem(token)


def test_deploy_refuses_empty_and_short_tokens():
    for token in ("", "short"):
        with pytest.raises(ServingError) as info:
            _deploy_with(token)
        assert "serve.admin_token: refused" in str(info.value)


def _deploy_with(token):
    from framework.components import FeatureSpec, InputSchema
    from framework.serving import ServedModel, deploy
    from plugins.strategy_single import SingleConfig, SingleStrategy

    model = ServedModel("primary", "v1", b"", InputSchema([FeatureSpec("a")]), [0, 1], "input", "probabilities")
    return deploy([model], SingleStrategy, SingleConfig(), admin_token=token, app_name="never")


def test_redaction_of_text_and_log_records(tmp_path):
    assert redact(f"token={GOOD} again {GOOD}", [GOOD]) == "token=*** again ***"
    handler = logging.FileHandler(tmp_path / "run.log")
    handler.addFilter(RedactingFilter([GOOD]))
    logger = logging.getLogger("framework.test_tokens")
    logger.addHandler(handler)
    try:
        logger.warning("header X-Admin-Token: %s", GOOD)
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = (tmp_path / "run.log").read_text()
    assert "X-Admin-Token: ***" in text and GOOD not in text


def test_run_files_never_hold_the_token(monkeypatch, tmp_path):
    """A token that leaked into another key (here the description) is redacted from recipe.yaml,
    plan.json, run.log and summary.json; the run fails early (no data) but writes them all."""
    from framework.run import Reporter, execute
    from framework.plugins import default_components

    monkeypatch.setenv("FRAMEWORK_ADMIN_TOKEN", GOOD)
    plan = plan_recipe(BASE + [f"runs_dir={tmp_path}", f"description=pasted {GOOD} by mistake",
                               "store.uri=memory://tokens-test"])
    plan.stages = [s for s in plan.stages if s.name == "data"]
    from types import SimpleNamespace

    spec = plan.stages[0].spec
    plan.stages[0].spec = SimpleNamespace(name=spec.name, needs_ray=False, load_runner=lambda: _failing_runner(GOOD))
    with pytest.raises(Exception):
        execute(plan, default_components(), Reporter(quiet=True))
    run_dir = next(tmp_path.iterdir())
    for name in ("recipe.yaml", "plan.json", "run.log", "summary.json"):
        text = (run_dir / name).read_text()
        assert GOOD not in text, name
    assert "pasted *** by mistake" in (run_dir / "recipe.yaml").read_text()
    assert "***" in (run_dir / "summary.json").read_text()


def _failing_runner(token):
    def run(*args):
        logging.getLogger("framework.stage.data").warning("about to fail with %s", token)
        from framework.errors import StageError

        raise StageError(f"failed while holding {token}")

    return run
