"""The StageContext the core hands to every component call."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .errors import StageError, StoreError
from .registry.models import RegisteredModel, load_registered_model


@dataclass
class ConsoleProgress:
    """Progress of a long stage, shown on the console (rich) and written to the run log."""

    description: str
    total: int
    logger: logging.Logger
    on_advance: Callable[[int, int, str], None] | None = None
    done: int = 0

    def __getstate__(self) -> dict:
        # Engines (Ray Tune) pickle callbacks that hold a progress handle; the console hook stays
        # behind, a copy still logs.
        return {**self.__dict__, "on_advance": None}

    def advance(self, steps: int = 1, note: str = "") -> None:
        self.done = min(self.total, self.done + steps)
        self.logger.info("%s: %d/%d %s", self.description, self.done, self.total, note)
        if self.on_advance:
            self.on_advance(self.done, self.total, note)


@dataclass(frozen=True)
class RegisteredData:
    """A registered data version as a component reads it (``StageContext.registered_data``)."""

    ref: str  # NAME:ID (short id)
    name: str
    id: str
    frame: Any  # pandas.DataFrame, hash-checked on read
    schema: dict
    meta: dict
    created_at: str


@dataclass(frozen=True)
class RegisteredLabels:
    """A stored label version as a labeler reads it (``StageContext.registered_labels``)."""

    ref: str  # NAME:ID (short id)
    name: str
    id: str
    frame: Any  # pandas.DataFrame on the data version's index: label, source, p:CLASS
    schema: dict  # classes, schema_id, target
    lineage: dict


@dataclass
class RunStageContext:
    stage: str
    out_dir: Path
    seed: int = 0
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("framework.stage"))
    metrics: dict[str, Any] = field(default_factory=dict)
    progress_factory: Callable[[str, int], Callable[[int, int, str], None]] | None = None
    #: the run's model registry (None outside a run: tests, notebooks)
    registry: Any = None
    #: label stage only: each row's split part (a Series on the frame's index), and the people (or
    #: their simulated stand-in) a labeler asks through Label Studio files (None: no annotator)
    parts: Any = None
    annotator: Any = None

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)

    def child(self, out_dir: Path) -> "RunStageContext":
        """A context for one component of this stage: its own folder and metrics, the rest shared."""
        return RunStageContext(self.stage, out_dir, self.seed, self.logger, registry=self.registry)

    def registered_model(self, ref: str) -> RegisteredModel:
        """A registered model version (``NAME@ALIAS``, ``NAME:ID``): ONNX bytes, schema, classes
        and tensor names. StageError when it is missing or this context has no registry."""
        return self._from_registry(ref, "a registered model", lambda registry: load_registered_model(registry, ref))

    def registered_data(self, ref: str) -> RegisteredData:
        """A registered data version (``NAME@ALIAS``, ``NAME:ID``, ``NAME@latest``: the newest) with
        its frame. StageError when it is missing or this context has no registry."""
        def load(registry):
            version = registry.get(ref, kind="data")
            return RegisteredData(version.ref, version.name, version.id, registry.load_frame(version),
                                  dict(version.schema), dict(version.meta), version.created_at)

        return self._from_registry(ref, "a registered data version", load)

    def registered_labels(self, ref: str) -> RegisteredLabels:
        """A stored label version (``NAME@latest``, ``NAME:ID``) with its frame. StageError when it
        is missing or this context has no registry."""
        def load(registry):
            version = registry.get(ref, kind="label")
            return RegisteredLabels(version.ref, version.name, version.id, registry.load_labels(version),
                                    dict(version.schema), dict(version.lineage))

        return self._from_registry(ref, "a label version", load)

    def _from_registry(self, ref: str, what: str, load: Callable[[Any], Any]) -> Any:
        """``load(registry)``, its StoreError a StageError naming this stage."""
        if self.registry is None:
            raise StageError(f"{self.stage}: '{ref}' names {what}, but this stage runs without a registry")
        try:
            return load(self.registry)
        except StoreError as exc:
            raise StageError(f"{self.stage}: {exc}") from None

    def progress(self, total: int, description: str) -> ConsoleProgress:
        hook = self.progress_factory(description, total) if self.progress_factory else None
        return ConsoleProgress(description, total, self.logger, hook)

    def metric(self, name: str, value: Any) -> None:
        self.metrics[name] = value
