"""Data source ``sklearn``: the small tables bundled inside scikit-learn.

Only the ``load_*`` loaders are used: their data ship in the wheel, so nothing is downloaded.
Four are classification tables (class labels are ints); ``diabetes`` is a regression table (a
float target, ``classes`` None).
scikit-learn is imported inside ``load`` because the core imports every plugin at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass

from framework import DataSource, Dataset, hookimpl
from framework.errors import RecipeError

#: dataset name -> (scikit-learn loader, one-line summary). The core may list these.
DATASETS: dict[str, tuple[str, str]] = {
    "breast_cancer": ("load_breast_cancer", "569 tumours, 30 float features, 2 classes"),
    "wine": ("load_wine", "178 wines, 13 float features, 3 classes"),
    "digits": ("load_digits", "1797 8x8 digit images, 64 pixel features, 10 classes"),
    "iris": ("load_iris", "150 flowers, 4 float features, 3 classes"),
    "diabetes": ("load_diabetes", "442 patients, 10 float features, disease progression a year later (regression)"),
}
#: datasets whose task is not classification
TASK: dict[str, str] = {"diabetes": "regression"}

TARGET = "target"


def _title(descr: str, fallback: str) -> str:
    """The first real line of a scikit-learn DESCR (it starts with an rst label)."""
    for line in (descr or "").splitlines():
        line = line.strip()
        if line and not line.startswith(".."):
            return line
    return fallback


class SklearnDataSource(DataSource):
    name = "sklearn"
    summary = "a table that ships inside scikit-learn (breast_cancer, wine, digits, iris; diabetes: regression)"

    @dataclass
    class Config:
        #: one of ``DATASETS``
        dataset: str = "breast_cancer"

    def __init__(self, config=None, refs=None):
        super().__init__(config, refs)
        # fail when the component is built (plan time), before anything heavy runs
        self._check_name(self.config.dataset)

    @classmethod
    def datasets(cls) -> list[str]:
        return sorted(DATASETS)

    @classmethod
    def planned_task(cls, config) -> str | None:
        """The task of the dataset, known without loading it (the planner asks)."""
        return TASK.get(config.dataset, "classification") if config.dataset in DATASETS else None

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in DATASETS:
            raise RecipeError(
                f"data.dataset: unknown scikit-learn dataset '{name}'. "
                f"Valid names: {', '.join(sorted(DATASETS))}"
            )

    def load(self, ctx) -> Dataset:
        import numpy as np
        import pandas as pd
        import sklearn.datasets

        name = self.config.dataset
        self._check_name(name)
        loader, _ = DATASETS[name]
        bunch = getattr(sklearn.datasets, loader)()

        task = TASK.get(name, "classification")
        # sklearn hands out numpy str_ names for some sets: make them plain str
        features = [str(f) for f in bunch.feature_names]
        frame = pd.DataFrame(np.asarray(bunch.data, dtype=np.float64), columns=features)
        if task == "regression":
            frame[TARGET] = np.asarray(bunch.target, dtype=np.float64)
            classes = None
            description = f"{_title(bunch.DESCR, name)} (scikit-learn {loader}); regression target"
        else:
            frame[TARGET] = np.asarray(bunch.target, dtype=np.int64)
            classes = sorted(int(c) for c in np.unique(bunch.target))
            names = getattr(bunch, "target_names", None)
            labels = ", ".join(f"{c}={names[c]}" for c in classes) if names is not None else ""
            description = f"{_title(bunch.DESCR, name)} (scikit-learn {loader}); classes: {labels}"

        if ctx is not None:
            ctx.metric("rows", len(frame))
            ctx.metric("features", len(features))
        return Dataset(
            name=name,
            frame=frame,
            features=features,
            target=TARGET,
            task=task,
            classes=classes,
            description=description,
        )


@hookimpl
def register_data_sources():
    return [SklearnDataSource]
