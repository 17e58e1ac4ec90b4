"""Ray Tune helpers shared by the built-in Tune jobs (``train_tune``, ``compress_distill``).

This module imports Ray Tune at the top: only import it inside functions (a trainer's ``fit``, a
trial), so that listing plugins or planning a recipe never pays for Ray. The classes live at module
level so that pickling them (Tune saves its callbacks with the experiment) finds them by reference.
"""
from __future__ import annotations

import contextlib
import logging
import os
import zlib
from typing import Any, Iterator

from ray import tune

#: Tune's loggers, silenced while a Tune job runs
TUNE_LOGGERS = ("ray.tune", "ray.train", "ray.air")

#: experiment folder -> the progress of the fit running it (see ``reporting_progress``)
_running: dict[str, Any] = {}


def trial_index() -> int:
    """The running trial's number within its experiment (seeds trials differently)."""
    trial_id = tune.get_context().get_trial_id() or ""
    suffix = trial_id.rsplit("_", 1)[-1]
    # Tune's trial ids end in a zero-padded counter (``a1b2c_00003``); fall back to a stable hash
    return int(suffix) if suffix.isdigit() else zlib.crc32(trial_id.encode()) % 10_000


def trial_error_line(error: BaseException) -> str:
    """The trial's own exception in one line, not Ray's wrapper traceback."""
    cause = getattr(error, "cause", None) or error.__cause__ or error
    text = f"{type(cause).__name__}: {cause}"
    return text.strip().splitlines()[-1] if "Traceback" in text else text.strip()


@contextlib.contextmanager
def quiet_tune() -> Iterator[None]:
    """Keep Tune's console output out of the run's console while ``Tuner.fit`` runs.

    Tune's new output engine prints its experiment table even with ``verbose=0``; the legacy
    reporter (``RAY_AIR_NEW_OUTPUT=0``, read when the run starts) honours it. Tune's own loggers
    drop to CRITICAL: its bookkeeping warnings are not the user's business, and failed trials are
    reported by the caller (one line in the stage log, ``error.txt`` in the trial folder).
    """
    saved_env = os.environ.get("RAY_AIR_NEW_OUTPUT")
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    levels = {name: logging.getLogger(name).level for name in TUNE_LOGGERS}
    for name in TUNE_LOGGERS:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        if saved_env is None:
            os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        else:
            os.environ["RAY_AIR_NEW_OUTPUT"] = saved_env
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def reporting_progress(experiment: str, progress: Any) -> Iterator["TrialProgress"]:
    """A ``TrialProgress`` callback advancing ``progress`` (``advance(steps, note)``) as the trials
    of ``experiment`` end, for the duration of the block."""
    _running[experiment] = progress
    try:
        yield TrialProgress(experiment)
    finally:
        _running.pop(experiment, None)


class TrialProgress(tune.Callback):
    """A Tune callback (run in the driver) advancing the running fit's progress as trials end.

    It holds the experiment folder, not the progress: Tune pickles its callbacks with the
    experiment, and ``Tuner.restore`` unpickles them, so a resumed fit must report to its own
    progress (looked up when a trial ends), not to the one of the run that was interrupted.
    """

    def __init__(self, experiment: str):
        self.experiment = experiment

    def _advance(self, note: str) -> None:
        progress = _running.get(self.experiment)
        if progress is not None:
            progress.advance(1, note=note)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._advance(f"{trial.trial_id} done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._advance(f"{trial.trial_id} failed")
