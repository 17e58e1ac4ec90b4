"""Keep Ray's token file private. Written against Ray 2.60.

A local ``ray.init()`` turns token authentication on and, the first time, writes the token to
``~/.ray/auth_token`` with a plain ``open(path, "w")``
(``ray._private.authentication.authentication_token_setup.generate_and_save_token``): mode 0644
under the usual umask, so every user of the machine can read the token that authenticates to
the cluster (and run code on it). The framework makes the file 0600 (and ``~/.ray`` 0700)
before and after it starts or joins a local Ray.
"""
from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)


def token_path() -> Path:
    """Where Ray keeps its default token (its own ``_get_default_token_path`` when it still has one)."""
    try:
        from ray._private.authentication.authentication_token_setup import _get_default_token_path
    except ImportError:
        return Path.home() / ".ray" / "auth_token"
    return Path(_get_default_token_path())


def protect_ray_auth_token() -> bool:
    """chmod 0600 the token file (0700 its folder) when it exists and is ours; True when it is private."""
    path = token_path()
    try:
        info = path.stat()
    except FileNotFoundError:
        return True
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return stat.S_IMODE(info.st_mode) & 0o077 == 0
    try:
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, 0o600)
        folder = path.parent.stat()
        if folder.st_uid == info.st_uid and stat.S_IMODE(folder.st_mode) & 0o077:
            os.chmod(path.parent, 0o700)
    except OSError as exc:
        log.warning("cannot make Ray's token file %s private: %s", path, exc)
        return False
    return True
