"""Import whylogs through here, never directly. Two small, documented workarounds:

1. whylogs 1.6.4 still refers to ``np.unicode_`` (``whylogs/core/datatypes.py``), an alias NumPy 2
   removed; it is the same type as ``np.str_``, so restoring the alias is exact.
2. ``whylogs/viz/__init__.py`` imports IPython (the notebook visualiser, the ``whylogs[viz]``
   extra), which we do not install. The drift algorithms under ``whylogs.viz.drift`` do not use
   it, so ``drift_algorithms()`` loads that module without running the ``viz`` package's
   ``__init__`` when IPython is missing.

Telemetry is opted out before import: whylogs would otherwise try to reach its stats endpoint.
"""
import importlib
import importlib.util
import os
import sys
import types

import numpy as np

if not hasattr(np, "unicode_"):
    np.unicode_ = np.str_

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "1")

import whylogs  # noqa: E402

why = whylogs
_DRIFT = "whylogs.viz.drift.column_drift_algorithms"


def drift_algorithms() -> types.ModuleType:
    """``whylogs.viz.drift.column_drift_algorithms`` (``calculate_drift_scores``, ``KS`` ...)."""
    try:
        return importlib.import_module(_DRIFT)
    except ModuleNotFoundError as exc:
        if exc.name != "IPython":
            raise
    # a bare stand-in for the ``whylogs.viz`` package, only while its submodules import
    spec = importlib.util.find_spec("whylogs.viz")
    stub = types.ModuleType("whylogs.viz")
    stub.__path__ = list(spec.submodule_search_locations)
    stub.__package__ = "whylogs.viz"
    sys.modules["whylogs.viz"] = stub
    try:
        return importlib.import_module(_DRIFT)
    finally:
        # later ``import whylogs.viz`` still runs the real package (and fails loudly without IPython)
        if sys.modules.get("whylogs.viz") is stub:
            del sys.modules["whylogs.viz"]


__all__ = ["why", "whylogs", "drift_algorithms"]
