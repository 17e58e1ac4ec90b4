"""Service tokens (admin and client): where they come from, how long they must be, and keeping them
out of every file a run writes.

A token never needs the command line (where ``ps`` shows it to every user of the machine) nor
the recipe (written to ``runs/<run>/recipe.yaml``): it comes from an environment variable
(``serve.admin_token_env``, by default ``FRAMEWORK_ADMIN_TOKEN``) or from a file only its owner
can read (``serve.admin_token_file``, mode 0600). A literal ``serve.admin_token=...`` is refused
at plan time for that reason. Empty and short tokens are refused too.
"""
from __future__ import annotations

import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import RecipeError

#: a token shorter than this is refused (16 random characters: ~95 bits from a URL-safe alphabet)
MIN_TOKEN_LENGTH = 16
#: the headers tokens travel in; never logged
ADMIN_HEADER = "X-Admin-Token"
CLIENT_HEADER = "Authorization"  # "Bearer <client token>"
REDACTED = "***"


def token_problem(token: object) -> str | None:
    """Why ``token`` cannot be a service token, or None when it can."""
    if not isinstance(token, str):
        return f"expected a string, got {type(token).__name__}"
    if not token.strip():
        return "empty: an empty token would let anyone in"
    if len(token) < MIN_TOKEN_LENGTH:
        return f"{len(token)} characters; use at least {MIN_TOKEN_LENGTH} (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
    if token != token.strip() or any(c in token for c in "\r\n\x00"):
        return "contains whitespace at its ends or control characters"
    return None


def read_token_file(path: str, key: str) -> str:
    """The token in ``path`` (one line); RecipeError unless the file is readable by its owner only."""
    file = Path(path).expanduser()
    try:
        info = file.stat()
    except OSError as exc:
        raise RecipeError(f"{key}: cannot read {file}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RecipeError(f"{key}: {file} is not a regular file")
    if info.st_mode & 0o077:
        raise RecipeError(
            f"{key}: {file} has mode {stat.S_IMODE(info.st_mode):04o}: other users can read it; "
            f"make it private with 'chmod 600 {file}'"
        )
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise RecipeError(f"{key}: {file} belongs to another user (uid {info.st_uid})")
    return file.read_text().strip("\r\n")


def resolve_token(literal: str | None, env_name: str | None, file: str | None, key: str) -> str | None:
    """One token from its recipe keys ``{key}``, ``{key}_env`` and ``{key}_file``; None when none is set.

    The literal is refused whatever its value: it would sit in ``ps`` and in the run directory.
    """
    if literal is not None:
        raise RecipeError(
            f"{key}: a token written in the recipe or on the command line is visible to every user of the "
            f"machine (ps, runs/*/recipe.yaml); put it in an environment variable ({key}_env, default "
            f"{env_name or 'unset'}) or in a file only you can read ({key}_file, chmod 600)"
        )
    if file:
        token, where = read_token_file(file, f"{key}_file"), f"{key}_file ({file})"
    elif env_name and env_name in os.environ:
        token, where = os.environ[env_name], f"{key}_env (environment variable {env_name})"
    else:
        return None
    problem = token_problem(token)
    if problem:
        raise RecipeError(f"{where}: the token is refused: {problem}")
    return token


@dataclass
class ServiceTokens:
    """The tokens a served app is deployed with; never printed (repr hides them)."""

    admin: str | None = field(default=None, repr=False)
    client: str | None = field(default=None, repr=False)

    def values(self) -> list[str]:
        return [t for t in (self.admin, self.client) if t]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced by ``***``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """A log filter that replaces secrets in each record's final message."""

    def __init__(self, secrets: Iterable[str]):
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            message = record.getMessage()
            cleaned = redact(message, self.secrets)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True
