"""What earlier stages of a run hand to later ones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..components import DataSplits, ExportedModel, TrainedModel
from ..errors import StageError
from ..plan import Plan, this_run_rank


@dataclass
class RunState:
    dataset: Any = None
    splits: DataSplits | None = None
    data_version: Any = None
    #: the label version the label stage stored (None: the source's labels were used as they are)
    label_version: Any = None
    trained: TrainedModel | None = None
    exported: ExportedModel | None = None
    model_version: Any = None
    exports: dict[int, ExportedModel] = field(default_factory=dict)  # candidate rank -> export
    model_versions: dict[int, Any] = field(default_factory=dict)  # candidate rank -> version
    #: the best candidate's export, then each ONNX-level compression of it: {name, exported, version}
    variants: list[dict] = field(default_factory=list)
    variant_table: list[dict] = field(default_factory=list)  # their measured comparison
    app: Any = None
    registry: Any = None
    #: the prediction table the batch stage stored (a registry Version of kind "prediction")
    prediction_table: Any = None
    #: rows the data checks took out of this run (stages.data.Quarantined), stored by the version stage
    quarantine: list = field(default_factory=list)
    #: the monitors' alerts of this run (``components.Alert``), for the act stage
    alerts: list = field(default_factory=list)
    #: the monitor stage's: renders its report again with the act stage's events
    add_actions_to_report: Any = None

    def candidate(self, rank: int, where: str) -> TrainedModel:
        """Candidate ``rank`` of this run's training: 1 the best, 2 the runner-up ..."""
        if rank == 1:
            return self.trained
        runners_up = self.trained.runners_up
        if rank - 2 >= len(runners_up):
            raise StageError(f"{where}: this_run#{rank} asked for, but training produced {len(runners_up) + 1} candidate(s)")
        return runners_up[rank - 2]

    def registry_ref(self, ref: str, where: str) -> str:
        """A recipe's model reference as a registry reference (``this_run#k`` -> ``NAME:ID``)."""
        rank = this_run_rank(ref)
        if rank is None:
            return ref
        version = self.model_versions.get(rank)
        if version is None:
            raise StageError(f"{where}: '{ref}' but this run registered no such model")
        return f"{version.name}:{version.id}"

    @property
    def data_ref(self) -> str | None:
        return self.data_version.ref if self.data_version else None


def served_ranks(plan: Plan) -> list[int]:
    """Which candidates of this run the recipe serves: 1 is the best, 2 the runner-up ..."""
    return sorted({1} | {r for r in map(this_run_rank, map(str, plan.recipe.serve.models.values())) if r})


def trainer_label(plan: Plan) -> str:
    """Who made the model: the trainer's type, or the registered version the chain started from."""
    train = plan.stage("train")
    if train.components:
        return train.component.type
    first = plan.stage("compress").components[0]
    refs = ", ".join(first.cls.registry_refs(first.config).values())
    return f"none ({first.type} from {refs})"
