"""Ray's notice that a local cluster has token authentication on. Written against Ray 2.60.

``ray.init()`` of a new local cluster turns token authentication on when ``RAY_AUTH_MODE`` is
unset (the secure default we keep) and logs a WARNING saying so, telling the user to set
``RAY_AUTH_MODE=disabled`` to opt out: read by a newcomer at the top of every run, it looks like
something went wrong. Setting ``RAY_AUTH_MODE=token`` ourselves would silence it, but only when
set before Ray is first imported (Ray caches its config at import), which a library cannot
promise. So the framework filters that one record and says once, in its own words, what is on
(``framework.engine.start_ray``, and the README's "What runs where"). Ray's other
authentication warnings (token auth *disabled*, a missing token) are left alone.
"""
from __future__ import annotations

import logging

#: the logger and the opening words of Ray's record (ray/_private/authentication/authentication_token_setup.py)
NOTICE_LOGGER = "ray._private.authentication.authentication_token_setup"
NOTICE_START = "Token authentication is enabled for this Ray cluster"


class _DropTokenAuthNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOTICE_START)


_FILTER = _DropTokenAuthNotice()


def quiet_token_auth_notice() -> None:
    """Idempotent: drop Ray's "token authentication is enabled" notice in this process."""
    logger = logging.getLogger(NOTICE_LOGGER)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
