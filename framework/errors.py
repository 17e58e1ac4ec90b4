"""One hierarchy for every error the framework raises on purpose.

Each message says where (recipe key path, or plugin and hook), what is wrong and what to do.
All of them are plain picklable exceptions: Ray ships them between processes.
"""
from __future__ import annotations


class FrameworkError(Exception):
    """Base of every deliberate framework error."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):  # keep subclasses with extra fields picklable
        return (self.__class__._rebuild, (self.__dict__,))

    @classmethod
    def _rebuild(cls, state):
        obj = cls.__new__(cls)
        Exception.__init__(obj, state.get("message", ""))
        obj.__dict__.update(state)
        return obj

    def __str__(self) -> str:
        return self.message


class RecipeError(FrameworkError):
    """The recipe (file, key, value or override) is wrong; nothing heavy has started."""


class PluginError(FrameworkError):
    """A plugin is broken: duplicate component name, bad hook result, failed import."""


class DataCheckError(FrameworkError):
    """Data failed a declared check. ``failures`` lists (column, check, rows)."""

    def __init__(self, message: str, failures: list[dict] | None = None):
        super().__init__(message)
        self.failures = failures or []


class StoreError(FrameworkError):
    """The version store cannot read or write what was asked."""


class StageError(FrameworkError):
    """A stage failed while running; names the stage and the plugin component."""


class ServingError(FrameworkError):
    """Deploying or talking to the served model failed."""


class RequestError(FrameworkError):
    """A client request is malformed: ``field`` and ``reason`` go back in a 4xx answer."""

    def __init__(self, field: str, reason: str, status: int = 422):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.status = status


class GateError(FrameworkError):
    """A quality gate failed: the model is not registered or served. ``gates`` holds the table."""

    def __init__(self, message: str, gates: list[dict] | None = None):
        super().__init__(message)
        self.gates = gates or []
