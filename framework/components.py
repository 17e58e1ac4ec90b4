"""Component contracts: the small, typed classes every plugin implements.

The core knows these contracts and nothing about any vendor. A plugin returns subclasses from a
registration hook (see ``hookspecs.py``); a recipe picks one with ``type: NAME``. Every component
declares a ``Config`` dataclass: the recipe section is validated against it before anything runs.
"""
from __future__ import annotations

import dataclasses
import enum
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping, Optional, Protocol, Sequence


#: a registered version as a recipe names it: ``NAME@ALIAS`` or ``NAME:ID`` (>= 6 hex characters)
REGISTRY_REF = re.compile(r"^[A-Za-z0-9_.-]{1,128}(@[A-Za-z0-9_.-]{1,128}|:[0-9a-f]{6,64})$")


def is_registry_ref(text: Any) -> bool:
    """Whether ``text`` names a registered version (``NAME@ALIAS`` / ``NAME:ID``); cheap, no store."""
    return isinstance(text, str) and bool(REGISTRY_REF.match(text)) and not text.startswith(".")


@dataclass
class NoConfig:
    """Config of a component that takes no options."""


class Component:
    """Base of every component. Subclasses set ``name`` (the recipe's ``type:``) and ``Config``.

    The contract every kind shares:

    * ``Config``: a dataclass; the recipe section (minus ``type``) is validated against it at plan
      time, so a misspelt option fails with its key path before anything heavy starts;
    * ``check_config(config, key, refs)``: cheap, plugin-specific validation at plan time (no heavy
      imports); raise :class:`framework.errors.RecipeError` naming ``key``. Always this signature;
    * the constructor takes ``(config, refs)`` (strategies: ``(config, arms, refs)``) and runs
      ``check_config`` itself, so a component built outside a plan (a test, a notebook) is
      validated the same way.
    """

    kind: ClassVar[str] = "component"
    #: the recipe section a component of this kind is configured in (for messages)
    recipe_key: ClassVar[str] = ""
    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoConfig
    #: one line shown by ``python -m framework plugins``
    summary: ClassVar[str] = ""
    #: config field -> component kind it names (a trainer's ``{"model": "model"}``): the planner
    #: resolves each name (an unknown one fails at that key) and hands the classes to
    #: ``check_config(config, key, refs)`` and to the constructor as ``refs``
    references: ClassVar[Mapping[str, str]] = {}
    #: the tasks (``TASKS``) this component works for; None: any task
    tasks: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, config: Any = None, refs: Mapping[str, type] | None = None):
        self.config = config if config is not None else self.Config()
        self.refs: dict[str, type] = dict(refs or {})
        type(self).check_config(self.config, self.recipe_key or self.kind, self.refs)

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        """Validate ``config`` (an instance of ``Config``) beyond its types; ``key`` is the recipe
        key path for messages, ``refs`` the classes of the components named by ``references``
        (empty when the component was built outside a plan). Raise RecipeError; return None."""

    @classmethod
    def registry_refs(cls, config: Any) -> Mapping[str, str]:
        """Config field -> registered model version this component will read (``NAME@ALIAS``):
        the run checks they exist before any stage starts."""
        return {}

    @classmethod
    def check_task(cls, config: Any, task: str, key: str) -> None:
        """Plan time: refuse data of ``task`` (``TASKS``) this component cannot work with, with a
        RecipeError naming ``key``. Default: ``tasks`` says (None: any task). Override when it
        depends on the config (a strategy judging accuracy cannot judge a regression)."""
        if cls.tasks is not None and task not in cls.tasks:
            from .errors import RecipeError

            raise RecipeError(f"{key}: '{cls.name}' works for {' and '.join(cls.tasks)}, but the data's task is {task}")


# ---------------------------------------------------------------------------------------------
# What flows between stages
# ---------------------------------------------------------------------------------------------
#: what a prediction task is: the trainer, metrics, gates and serving follow it
TASKS = ("classification", "regression", "ranking")
#: feature types a recipe may declare (``category`` holds strings; ``bool`` true/false)
FEATURE_TYPES = ("float", "int", "bool", "category")


@dataclass
class FeatureSpec:
    """One input column: its type, whether it may be missing, and (categorical) its known values."""

    name: str
    dtype: str = "float"  # one of FEATURE_TYPES ("str" in versions stored before is "category")
    nullable: bool = False
    #: ``category`` only: the values seen when the model was fitted; others are unknown
    categories: list[str] | None = None

    def __post_init__(self) -> None:
        if self.dtype == "str":  # the name versions registered before typed features used
            self.dtype = "category"

    @property
    def numeric(self) -> bool:
        return self.dtype in ("float", "int")


#: what a missing categorical value is fed to a model as (its own category, or the unknown bucket)
MISSING_CATEGORY = "__missing__"
#: ``InputLayout.unknown_categories``: an unseen category is the model's unknown bucket, or a 4xx
UNKNOWN_CATEGORIES = ("accept", "refuse")


@dataclass
class InputLayout:
    """How raw rows become a model's ONNX inputs; recorded in the serving manifest so that the
    server, batch prediction, gates and the device runner all build the same feeds.

    At most two inputs: ``numeric`` (float32 ``[batch, len(numeric_columns)]``: float, int and
    bool features, bools as 0/1, NaN where a value is missing) and ``categorical`` (string
    ``[batch, len(categorical_columns)]``, ``missing_token`` where a value is missing). A model
    that takes one float matrix of every feature (every model whose features are numbers that are
    never missing) has the layout ``InputLayout.matrix(input_name, names)``.
    """

    numeric: str | None = None
    numeric_columns: list[str] = field(default_factory=list)
    categorical: str | None = None
    categorical_columns: list[str] = field(default_factory=list)
    missing_token: str = MISSING_CATEGORY
    #: one of UNKNOWN_CATEGORIES
    unknown_categories: str = "accept"

    @classmethod
    def matrix(cls, input_name: str, names: Sequence[str]) -> "InputLayout":
        """One float32 input holding every feature, in schema order (the models of before)."""
        return cls(numeric=input_name, numeric_columns=list(names))

    @property
    def input_names(self) -> list[str]:
        return [n for n in (self.numeric, self.categorical) if n]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "InputLayout":
        return cls(**dict(data))

    def feeds(self, frame: Any) -> dict[str, Any]:
        """The ONNX feeds of the rows of a pandas frame holding the raw feature columns."""
        import numpy as np

        out: dict[str, Any] = {}
        if self.numeric:
            columns = [frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in self.numeric_columns]
            out[self.numeric] = np.ascontiguousarray(np.stack(columns, axis=1) if columns else
                                                     np.zeros((len(frame), 0)), dtype=np.float32)
        if self.categorical:
            token = self.missing_token
            columns = [[token if _missing(v) else str(v) for v in frame[c].tolist()] for c in self.categorical_columns]
            out[self.categorical] = np.array(columns, dtype=object).T.reshape(len(frame), len(columns))
        return out


def raw_instances(frame: Any, names: Sequence[str]) -> list[dict]:
    """The rows of a frame as request instances (JSON-able): numbers, booleans and strings as
    they are, a missing value as None (JSON null)."""
    columns = [[None if _missing(v) else (v.item() if hasattr(v, "item") else v) for v in frame[name].tolist()]
               for name in names]
    return [dict(zip(names, values)) for values in zip(*columns)] if columns else [{} for _ in range(len(frame))]


def _missing(value: Any) -> bool:
    """None, NaN and pandas' NA / NaT."""
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, NaT
    except (TypeError, ValueError):  # pandas.NA refuses bool()
        return True


@dataclass
class InputSchema:
    """What one prediction request must carry: named features, in model order."""

    features: list[FeatureSpec]

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def all_numeric(self) -> bool:
        """True when every feature is a number that is never missing: one float32 matrix fits."""
        return all(f.numeric and not f.nullable for f in self.features)

    def to_dict(self) -> dict:
        return {"features": [{k: v for k, v in dataclasses.asdict(f).items() if v is not None} for f in self.features]}

    @classmethod
    def from_dict(cls, data: Mapping) -> "InputSchema":
        return cls([FeatureSpec(**f) for f in data["features"]])


@dataclass
class Dataset:
    """A loaded table: feature columns plus one target column.

    ``schema`` types each feature (``FeatureSpec``); a source that leaves it None gets one
    inferred from the frame's dtypes by :meth:`inferred_schema` (strings and pandas categoricals
    are ``category``, a column with missing values is ``nullable``).
    """

    name: str
    frame: Any  # pandas.DataFrame
    features: list[str]
    target: str
    task: str = "classification"
    classes: list[Any] | None = None
    description: str = ""
    schema: InputSchema | None = None
    #: a column that identifies a row across versions (diffs, lookups by key); None: content
    key: str | None = None
    #: the column that says when a row happened (time windows, dated arrival); None: none
    time: str | None = None

    def inferred_schema(self) -> InputSchema:
        """``schema`` if the source declared one, else one inferred from the frame's dtypes."""
        if self.schema is not None:
            return self.schema
        return InputSchema([infer_feature(name, self.frame[name]) for name in self.features])


def infer_feature(name: str, column: Any) -> FeatureSpec:
    """The FeatureSpec of one pandas column, from its dtype and its values."""
    import pandas as pd

    nullable = bool(column.isna().any())
    if pd.api.types.is_bool_dtype(column):
        dtype = "bool"
    elif pd.api.types.is_integer_dtype(column):
        dtype = "int"
    elif pd.api.types.is_float_dtype(column):
        dtype = "float"
    else:  # object, string, category: text values
        dtype = "category"
    categories = sorted(str(v) for v in column.dropna().unique()) if dtype == "category" else None
    return FeatureSpec(name, dtype, nullable, categories)


@dataclass
class ColumnInfo:
    """What a data source can say about one column without loading the table (plan time)."""

    name: str
    dtype: str  # one of FEATURE_TYPES, or "unknown"
    nullable: bool = True


@dataclass
class SourceSchema:
    """A cheap look at a source before anything runs: its columns, the target and features the
    recipe will get, and the row count when the source knows it without reading the rows."""

    columns: list[ColumnInfo]
    target: str | None = None
    features: list[str] | None = None
    rows: int | None = None
    #: the row key and time columns the loaded Dataset will name (None: none)
    key: str | None = None
    time: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass
class DataSplits:
    """Train / validation / test frames cut from one Dataset (stratified, seeded).

    ``features``: the preprocessing fitted on the train split (the ``features`` stage), or None
    when the features are numbers that are never missing and the model takes them as they are.
    """

    dataset: Dataset
    train: Any
    val: Any
    test: Any
    features: "FeatureTransform | None" = None

    def arrays(self, part: str):
        """(X float32, y) of one split: X the model's input rows (the fitted ``features`` transform
        of the raw columns, or the raw columns when they are numbers); y class indices (int64) in
        ``dataset.classes``, or the target's values (float32) for a regression."""
        import numpy as np

        frame = getattr(self, part)
        if self.features is not None:
            x = np.ascontiguousarray(self.features.transform(frame), dtype=np.float32)
        else:
            self._check_numeric()
            x = frame[self.dataset.features].to_numpy(dtype=np.float32)
        if self.dataset.task == "regression":
            return x, frame[self.dataset.target].to_numpy(dtype=np.float32)
        classes = self.dataset.classes or []
        index = {c: i for i, c in enumerate(classes)}
        y = np.asarray([index[v] for v in frame[self.dataset.target]], dtype=np.int64)
        return x, y

    def input_schema(self) -> InputSchema:
        """What a served request carries: the fitted transform's typed schema (categories known),
        or every feature as a float (a model of numbers takes them as floats)."""
        if self.features is not None:
            return self.features.schema
        return InputSchema([FeatureSpec(str(name), "float") for name in self.dataset.features])

    def input_layout(self, input_name: str) -> InputLayout:
        """How raw rows feed a model of these splits whose matrix input (if any) is ``input_name``."""
        if self.features is not None:
            return self.features.layout
        return InputLayout.matrix(input_name, self.input_schema().names)

    def _check_numeric(self) -> None:
        """A clear error instead of numpy's 'could not convert string to float: 'Biscoe''."""
        schema = self.dataset.inferred_schema()
        if schema.all_numeric:
            return
        from .errors import DataCheckError

        typed = [f"{f.name} ({f.dtype}{', missing values' if f.nullable else ''})"
                 for f in schema.features if not (f.numeric and not f.nullable)]
        raise DataCheckError(
            f"features: data '{self.dataset.name}' has features that are not numbers or have missing values: "
            f"{', '.join(typed[:8])}{' ...' if len(typed) > 8 else ''}; a model needs them encoded: keep the "
            "'features' stage (features: {type: tabular}, the default) in the recipe",
            [{"column": f.name, "check": "numeric_features", "rows": []} for f in schema.features
             if not (f.numeric and not f.nullable)],
        )


@dataclass
class CheckReport:
    """Result of one data check.

    ``failures``: one entry per failing (column, check): ``{column, check, count, rows}``, ``rows``
    a bounded sample of row labels (labels of the checked frame's index), ``column`` None for a
    table-wide failure. ``flagged``: **every** row the check flags, ``{row, reason, score,
    evidence}``: ``reason`` short and shared by rows flagged for the same cause ("exact duplicate"),
    ``score`` a number whose meaning the reason names (or None), ``evidence`` an optional per-row
    note ("same values as row 12"). Severity ``quarantine`` takes exactly these rows out; when
    ``flagged`` is empty the core takes the rows of ``failures`` instead, and a failure listing
    fewer rows than its ``count`` (a sample) or none (table-wide) stops the run, since it cannot be
    quarantined row by row. A report that flags rows has ``passed=False``.

    Reports land in run directories and logs: never put raw cell values in them (PII).
    """

    check: str
    passed: bool
    rows_checked: int
    failures: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    flagged: list[dict] = field(default_factory=list)


@dataclass
class TrainedModel:
    """A trained in-memory model: ``module`` maps the model's float32 input rows [batch, n] (the
    raw features, or their ``DataSplits.features`` encoding) to class logits, or for a regression
    to the predicted value [batch, 1] in the target's units. ``schema``: the raw features a
    request carries (``DataSplits.input_schema()``)."""

    module: Any  # torch.nn.Module, in eval mode, preprocessing included
    schema: InputSchema
    classes: list[Any]
    metrics: dict[str, float]
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the trial table
    #: other candidates of the same training (next-best trials), best first; a recipe serves
    #: them as ``this_run#2``, ``this_run#3`` ... next to ``this_run`` (the best)
    runners_up: list["TrainedModel"] = field(default_factory=list)
    task: str = "classification"


@dataclass
class ExportedModel:
    """A portable model file (ONNX) plus what a server needs to run it."""

    path: Path
    format: str
    schema: InputSchema
    classes: list[Any]
    input_name: str
    output_name: str
    metrics: dict[str, float] = field(default_factory=dict)  # e.g. max_abs_diff vs torch
    #: how raw rows feed the file (None: one float32 matrix ``input_name`` of every feature)
    inputs: InputLayout | None = None
    #: classification / ranking: ``output_name`` gives class probabilities; regression: the
    #: predicted value, float32 [batch, 1], in the target's units (``classes`` empty)
    task: str = "classification"

    @property
    def layout(self) -> InputLayout:
        return self.inputs or InputLayout.matrix(self.input_name, self.schema.names)


# ---------------------------------------------------------------------------------------------
# What a stage gets from the core
# ---------------------------------------------------------------------------------------------
class Progress(Protocol):
    def advance(self, steps: int = 1, note: str = "") -> None: ...


class StageContext(Protocol):
    """Handed to every component call. Implemented by the core (``run.py``)."""

    stage: str
    out_dir: Path  # this stage's folder in the run directory
    seed: int
    logger: logging.Logger

    def progress(self, total: int, description: str) -> Progress: ...

    def metric(self, name: str, value: float | int | str) -> None: ...

    def registered_model(self, ref: str) -> Any:
        """A registered model version (``NAME@ALIAS`` / ``NAME:ID``): ``ref`` (``NAME:ID``),
        ``onnx_bytes``, ``schema``, ``classes``, ``input_name``, ``output_name`` (class
        probabilities), ``metrics``. StageError if missing."""
        ...

    def registered_data(self, ref: str) -> Any:
        """A registered data version (``NAME@ALIAS``, ``NAME:ID``, or ``NAME@latest``: the newest):
        ``ref`` (``NAME:ID``), ``frame`` (pandas), ``schema``, ``meta``, ``created_at``.
        StageError if missing."""
        ...


# ---------------------------------------------------------------------------------------------
# Stage contracts
# ---------------------------------------------------------------------------------------------
class DataSource(Component):
    """Where the rows come from. ``load`` reads them; ``describe`` (optional, cheap: a file's
    header, a query's column list, no rows) lets the planner check at plan time that the
    features, target and checks a recipe names exist."""

    kind = "data_source"
    recipe_key = "data"

    def load(self, ctx: StageContext) -> Dataset:
        raise NotImplementedError

    def describe(self) -> SourceSchema | None:
        """The source's columns without loading it; None: cannot tell before loading."""
        return None

    @classmethod
    def planned_task(cls, config: Any) -> str | None:
        """The task (``TASKS``) the loaded data will have, known from the config alone; None:
        unknown before loading. Default: the config's ``task`` option, if it has one."""
        task = getattr(config, "task", None)
        return task if isinstance(task, str) else None


class DataCheck(Component):
    """Checks data and reports; the core enforces the recipe's ``checks[i].severity`` from the
    report (a check never stops the run itself):

    * ``fail``: a failed report stops the run, naming column, check and rows;
    * ``warn``: it is logged and the run goes on;
    * ``quarantine``: the flagged rows (``CheckReport.flagged``) leave the data and are stored,
      with their reason, in the versioned quarantine set ``<dataset>.quarantine`` beside the data
      version; ``checks[i].readmit: true`` keeps them in (still reported).

    A check implements one or both of:

    * ``check(dataset, ctx)``: in the checks stage, before the data is versioned. It must not
      modify ``dataset``;
    * ``check_splits(splits, ctx)``: right after the seeded train/val/test split (version stage),
      for checks that compare the parts: train/test leakage, valuation of training rows against
      validation. Rows it flags are labels of the split frames' index; quarantined ones leave the
      split that holds them (the data version keeps them: the quarantine set, the data version
      and the seed give the exact rows each part used).

    A check that changes the data (the PII policies ``drop``, ``hash``, ``redact``) also
    implements ``apply(dataset, report, ctx)``: the core calls it right after ``check`` and hands
    what it returns to the next checks and stages. It keeps every row and the target (rows leave
    only through quarantine), may rewrite values or drop feature columns, and returns a new
    Dataset (``dataclasses.replace``), never the input modified in place.

    ``severities``: the severities a check accepts, when not all (the planner refuses others):
    a PII detector refuses ``quarantine``, which would store the raw values it found.
    """

    kind = "data_check"
    recipe_key = "checks"
    #: the ``checks[i].severity`` values this check accepts; None: every one the core knows
    severities: ClassVar[tuple[str, ...] | None] = None

    def check(self, dataset: Dataset, ctx: StageContext) -> CheckReport:
        raise NotImplementedError

    def check_splits(self, splits: DataSplits, ctx: StageContext) -> CheckReport:
        raise NotImplementedError

    def apply(self, dataset: Dataset, report: CheckReport, ctx: StageContext) -> Dataset:
        """The dataset later checks and stages see (default: ``dataset`` unchanged)."""
        return dataset

    @classmethod
    def checks_dataset(cls) -> bool:
        """True when this check implements ``check`` (run in the checks stage)."""
        return cls.check is not DataCheck.check

    @classmethod
    def checks_splits(cls) -> bool:
        """True when this check implements ``check_splits`` (run right after the split)."""
        return cls.check_splits is not DataCheck.check_splits


@dataclass
class LabelSet:
    """What a labeler made of a dataset's labels: the new label column and how it came about.

    ``labels``: a pandas Series on the dataset frame's index, one label (a class of ``classes``)
    per row, missing where the row has none (no labeling function voted, nobody answered yet): such
    rows leave the training data. ``probabilities``: optional float array rows x ``classes`` (the
    label model's posterior, the learner's estimate), NaN rows where unknown. ``sources``:
    optional Series of who gave each label (``gold``, ``label_model``, ``annotator``,
    ``migration`` ...). ``report`` (coverage, conflicts, accuracies, learning curves) and
    ``lineage`` (the functions, the label model, the Label Studio files, the migration) are JSON-able
    and land in the stage's folder and the label version. ``queued``: rows waiting for people.
    ``comparison``: for a schema migration, class -> class the old and the new schema are judged
    in (what ``serve.label_mapping`` takes).
    """

    labels: Any
    classes: list[Any]
    probabilities: Any = None
    sources: Any = None
    report: dict = field(default_factory=dict)
    lineage: dict = field(default_factory=dict)
    queued: list = field(default_factory=list)
    comparison: dict = field(default_factory=dict)


class Labeler(Component):
    """Produces or changes the labels of the data version (recipe key ``label``), between the
    version stage and training.

    ``label(dataset, ctx)`` gets the stored rows (with the source's target column; labels the
    recipe hides for a simulation, ``label.hide``, are missing) and returns a :class:`LabelSet`
    (the core stores it as a label version with lineage, and training uses it) or, for a labeler
    that only rewrites the target, a Dataset. The context may carry, beside the usual:

    * ``ctx.parts``: a Series on the frame's index naming each row's split part (train/val/test):
      a labeler must not learn from test rows' labels;
    * ``ctx.annotator``: people (or, in a simulation, a stand-in answering from the hidden true
      labels) reached through Label Studio files: ``ctx.annotator.ask(frame, rows, classes,
      probabilities=None, tag="")`` writes the task JSON, and returns ``{row: label}`` from the
      export it reads back (empty when the answers come later: ``python -m framework labels
      import``); None when the recipe declares no annotator;
    * ``ctx.registered_labels(ref)``: a stored label version (``NAME@latest``, ``NAME:ID``) as a
      frame on the data's index (``label``, ``source``, ``p:CLASS`` columns) with its schema.
    """

    kind = "labeler"
    recipe_key = "label"

    def label(self, dataset: Dataset, ctx: StageContext) -> "LabelSet | Dataset":
        raise NotImplementedError


class FeatureTransform:
    """Preprocessing fitted on a train split: raw typed features in, the model's float32 rows out.

    What a ``Preprocessor`` returns and what travels with the model: the exporter puts
    :meth:`onnx_graph` in front of the model's own graph, so one ONNX file takes raw rows.

    * ``schema``: the raw features a request carries, typed (``category`` ones list the values
      seen in training: others are unknown), in request order;
    * ``layout``: the ONNX inputs :meth:`onnx_graph` takes (``InputLayout``);
    * ``output_names``: the columns of the encoded rows (``island=Biscoe``, ``bill_length_mm``,
      ``bill_length_mm is missing`` ...), what the model sees;
    * ``baseline``: per raw feature (schema order) the value of an average case: the training
      mean of a number, the most frequent value of a category or a bool. ``"explain": true``
      occludes a feature with it.
    """

    schema: InputSchema
    layout: InputLayout
    output_names: list[str]
    baseline: list[Any]

    def transform(self, frame: Any) -> Any:
        """float32 [rows, len(output_names)] of a frame holding the raw feature columns."""
        raise NotImplementedError

    def onnx_graph(self, output_name: str, opset: int) -> bytes:
        """A serialized ONNX model from the ``layout`` inputs (dynamic batch) to ``output_name``,
        float32 [batch, len(output_names)], computing what :meth:`transform` computes."""
        raise NotImplementedError


class Preprocessor(Component):
    """Fits the preprocessing of raw features on the train split only (recipe key ``features``):
    imputation, encoding, scaling. ``fit`` returns a FeatureTransform, or None when the features
    are numbers that are never missing (the model then takes them as they are, in one matrix)."""

    kind = "preprocessor"
    recipe_key = "features"

    def fit(self, splits: DataSplits, ctx: StageContext) -> FeatureTransform | None:
        raise NotImplementedError


class Model(Component):
    """A trainable architecture a trainer fits (``train.model: NAME``).

    ``build`` returns a module mapping float32 input rows [batch, n] to class logits
    [batch, classes] (standardization inside, so the exported model takes raw client values); for
    a regression (a model whose ``tasks`` include it) ``n_classes`` is 1 and the one output is the
    prediction (the trainer scales it to the target's units).
    The trainer samples ``hyperparameters`` from the recipe's ``train.search_space``; a model never
    sees the recipe otherwise. Torch is the only engine the built-in trainer knows; the core does not
    import it.
    """

    kind = "model"
    recipe_key = "train.model"
    #: hyperparameter -> default; None: the search space must set it
    hyperparameters: ClassVar[Mapping[str, Any]] = {}
    #: the search space a recipe gets when it names none
    default_search_space: ClassVar[Mapping[str, Any]] = {}
    #: False when the training loss couples rows (a pairwise loss): per-example differential
    #: privacy (DP-SGD) does not apply then
    per_example_loss: ClassVar[bool] = True
    #: what ``extra_metrics`` returns (larger is better), known without running it
    extra_metric_names: ClassVar[tuple[str, ...]] = ()
    #: the tasks (``TASKS``) this model can learn; the planner refuses data of another task
    tasks: ClassVar[tuple[str, ...]] = ("classification",)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The hyperparameters that have a default."""
        return {k: v for k, v in cls.hyperparameters.items() if v is not None}

    def check_data(self, n_features: int, n_classes: int, hp: Mapping[str, Any]) -> str | None:
        """Why this model cannot learn this data with these hyperparameters, or None."""
        return None

    def build(self, hp: Mapping[str, Any], n_features: int, n_classes: int, mean: Any = None, std: Any = None) -> Any:
        raise NotImplementedError

    def loss(self, logits: Any, target: Any, hp: Mapping[str, Any]) -> Any:
        """The training loss, the batch mean (default: cross-entropy on class indices; mean
        squared error on a float target, a regression's)."""
        import torch.nn.functional as F

        if target.is_floating_point():
            return F.mse_loss(logits.reshape(target.shape), target)
        return F.cross_entropy(logits, target)

    def extra_metrics(self, logits: Any, target: Any) -> dict[str, float]:
        """``extra_metric_names`` -> value on validation rows (a trainer may optimize ``val_NAME``)."""
        return {}


class Trainer(Component):
    kind = "trainer"
    recipe_key = "train"

    def fit(self, splits: DataSplits, ctx: StageContext) -> TrainedModel:
        raise NotImplementedError


class Compressor(Component):
    """One step of a compression chain (``compress: [...]`` in the recipe, run in order).

    ``level = "model"``: works on the trained model before export (distillation, pruning) and
    implements :meth:`compress`. ``level = "onnx"``: works on the exported model (quantization)
    and implements :meth:`compress_onnx`; the core runs these right after export, so in a chain
    every model-level step must come before the first ONNX-level one.
    """

    kind = "compressor"
    recipe_key = "compress"
    level: ClassVar[str] = "model"
    #: a step that works for regression models too says so
    tasks: ClassVar[tuple[str, ...] | None] = ("classification", "ranking")

    @classmethod
    def starts_from_registry(cls, config: Any) -> bool:
        """True when this step, first in a chain, needs no model trained by the run (a
        distillation from a registered teacher): a recipe may then leave out ``train``, and the
        step gets a TrainedModel with ``module=None`` carrying the teacher's schema and classes."""
        return False

    def compress(self, model: TrainedModel, splits: DataSplits, ctx: StageContext) -> TrainedModel:
        raise NotImplementedError

    def compress_onnx(self, model: ExportedModel, splits: DataSplits, ctx: StageContext) -> ExportedModel:
        """Write the compressed model into ``ctx.out_dir`` and return it (metrics: what it did)."""
        raise NotImplementedError


class Exporter(Component):
    kind = "exporter"
    recipe_key = "export"
    #: an exporter that writes regression models too says so
    tasks: ClassVar[tuple[str, ...] | None] = ("classification", "ranking")

    def export(self, model: TrainedModel, splits: DataSplits, ctx: StageContext) -> ExportedModel:
        raise NotImplementedError


#: ``batch.data``: the run's test split, the run's whole data version, or a registered data version
BATCH_DATA_RE = re.compile(r"^(test|all|[A-Za-z0-9_.-]{1,128}([@:][A-Za-z0-9_.-]{1,128})?)$")


#: ``batch.lookup.fallback``: a key that was not precomputed is predicted online, or gets a 404
LOOKUP_FALLBACKS = ("online", "none")


@dataclass
class LookupConfig:
    """Serving the precomputed answers by key (``POST /lookup``) from the running app."""

    #: the batch stage loads its prediction table into the served app (the serve stage must run)
    enabled: bool = False
    #: a key that was not precomputed: "online" (predicted from the request's instance) or "none" (404)
    fallback: str = "online"
    #: an answer computed longer ago than this many seconds is reported stale (0: never)
    max_age_s: float = 0.0
    #: while serving, re-run the batch stage once the table is older than ``max_age_s``
    recompute_stale: bool = False
    #: after loading, this many lookups of rows sampled from the run's whole data version (hit
    #: rate, staleness and latency go into the run summary); 0: none
    probe_requests: int = 0


@dataclass
class ScheduleConfig:
    """Re-running the batch stage while the app keeps serving (``python -m framework serve``, or
    ``serve.keep_serving: true``); each re-run stores a new table and loads it into the app."""

    #: re-run every this many seconds (0: not on a clock)
    every_s: float = 0.0
    #: re-run when ``batch.data`` (a registered ``NAME@latest``) resolves to a new data version
    on_new_data: bool = False
    #: how often to look for a new data version, seconds
    check_s: float = 60.0


@dataclass
class BatchConfig:
    """What every batch predictor's ``Config`` holds (subclass it): which rows the batch stage
    scores and how it keys them. The stage writes the predictions as a versioned table."""

    #: "test" (the run's test split), "all" (the run's whole data version) or a registered data
    #: version (``NAME@latest``, ``NAME@ALIAS``, ``NAME:ID``): any source, any version
    data: str = "test"
    #: the column whose value keys each row of the prediction table (None: the frame's index)
    key: Optional[str] = None
    #: score only the rows this filter keeps (the row-filter grammar of model card slices, e.g.
    #: "last_seen_days <= 7"); None: every row
    where: Optional[str] = None
    #: store the predictions as a prediction table (registry kind ``prediction``)
    table: bool = True
    lookup: LookupConfig = field(default_factory=LookupConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)


class BatchPredictor(Component):
    """Scores a frame of raw rows with the run's exported model (see PLUGINS.md)."""

    kind = "batch_predictor"
    recipe_key = "batch"
    Config: ClassVar[type] = BatchConfig

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        check_batch_config(config, key)

    def predict(self, model: ExportedModel, frame: Any, ctx: StageContext) -> Any:
        """One prediction per row of ``frame``: a Series (or a list) on the frame's index, or a
        DataFrame with ``prediction`` (and optionally ``computed_at``, UTC) on that index."""
        raise NotImplementedError


def check_batch_config(config: Any, key: str) -> None:
    """The shared part of a batch predictor's plan-time checks (RecipeError naming the key)."""
    from .errors import RecipeError

    data = getattr(config, "data", "test")
    if not isinstance(data, str) or not BATCH_DATA_RE.match(data):
        raise RecipeError(f"{key}.data: expected 'test', 'all' or a registered data version (NAME@latest, "
                          f"NAME:ID), got {data!r}")
    column = getattr(config, "key", None)
    if column is not None and (not isinstance(column, str) or not column.strip()):
        raise RecipeError(f"{key}.key: expected a column name, got {column!r}")
    schedule = getattr(config, "schedule", None)
    if schedule is not None:
        if not (float(schedule.every_s) >= 0):
            raise RecipeError(f"{key}.schedule.every_s: seconds >= 0 (0: not on a clock), got {schedule.every_s}")
        if not (float(schedule.check_s) > 0):
            raise RecipeError(f"{key}.schedule.check_s: seconds > 0, got {schedule.check_s}")
        if schedule.on_new_data and data in ("test", "all"):
            raise RecipeError(f"{key}.schedule.on_new_data: watches a registered data version; set {key}.data to "
                              "NAME@latest (the run's own data does not change while it serves)")
    lookup = getattr(config, "lookup", None)
    if lookup is not None:
        if lookup.fallback not in LOOKUP_FALLBACKS:
            raise RecipeError(f"{key}.lookup.fallback: expected one of {', '.join(LOOKUP_FALLBACKS)}, got {lookup.fallback!r}")
        if not (float(lookup.max_age_s) >= 0):
            raise RecipeError(f"{key}.lookup.max_age_s: seconds >= 0 (0: never stale), got {lookup.max_age_s}")
        if int(lookup.probe_requests) < 0:
            raise RecipeError(f"{key}.lookup.probe_requests: must be >= 0, got {lookup.probe_requests}")
        if lookup.recompute_stale and not float(lookup.max_age_s) > 0:
            raise RecipeError(f"{key}.lookup.recompute_stale: needs {key}.lookup.max_age_s > 0 (when a table is stale)")
        if lookup.enabled and not getattr(config, "table", True):
            raise RecipeError(f"{key}.lookup.enabled: answers by key come from the prediction table; set {key}.table: true")


# ---------------------------------------------------------------------------------------------
# Traffic strategies: pure Python, no Ray import, decisions in microseconds
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RouteRequest:
    """What a strategy sees of a request: its id and an optional sticky key (user id...)."""

    request_id: str
    key: str | None = None


@dataclass(frozen=True)
class Route:
    """Which arm answers the client, and which arms only shadow the request.

    With ``merge=True`` the primary and every shadow arm all answer, and the client gets
    ``strategy.merge(...)`` of their answers (interleaving of two rankers, for instance).
    """

    primary: str
    shadows: tuple[str, ...] = ()
    merge: bool = False


@dataclass(frozen=True)
class Outcome:
    """One arm's answer to one request (``error`` True when it failed)."""

    request_id: str
    arm: str
    latency_ms: float
    error: bool = False
    prediction: Any = None


@dataclass(frozen=True)
class Feedback:
    """Ground truth, reward or clicks for a past request, by request id.

    The host fills ``arm`` and ``prediction`` from what it served for that request, so a
    strategy can score accuracy per arm without remembering every request itself.
    """

    request_id: str
    arm: str
    label: Any = None
    reward: float | None = None
    clicks: tuple[Any, ...] = ()
    prediction: Any = None


class Verdict(str, enum.Enum):
    HOLD = "hold"
    PROMOTE = "promote"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Decision:
    """A strategy's verdict. ``arm``: for PROMOTE the arm that becomes the incumbent (its model
    version gets the ``prod`` alias), for ROLLBACK the arm traffic is taken away from.

    ``evidence``: what the verdict rests on, JSON-able, copied into the host's event: by
    convention ``method``, ``statistic`` (e.g. an e-value), ``p_value`` (always-valid),
    ``bound`` (a confidence sequence), ``samples`` (per arm), ``alpha`` and ``minimum_effect``."""

    verdict: Verdict
    reason: str = ""
    weights: Mapping[str, float] | None = None
    arm: str | None = None
    evidence: Mapping[str, Any] | None = None


class TrafficStrategy(Component):
    """Decides which model answers each request and, per window, promote / roll back / hold.

    ``arms`` maps an arm name (e.g. ``champion``) to the model version it serves. Pure Python, no
    Ray: the host calls every method in one event loop, one call at a time.

    The contract (checked by :class:`framework.testing.TrafficStrategyContract`):

    * ``choose(request)`` says which arm answers and which shadow, **without side effects**: it
      may be asked any number of times (offline evaluation, a snapshot on another replica);
      ``route(request)`` is what the host calls for a served request: after a verdict was applied
      it sends everything to the arm that verdict left in place, otherwise it asks ``choose`` and
      lets the strategy record the assignment (:meth:`routed`);
    * ``sticky = True`` when the same ``RouteRequest.key`` always reaches the same primary arm
      (while weights stay put);
    * ``incumbent()`` is the arm that answers everything after ``apply(ROLLBACK)``,
      ``candidate()`` the one after ``apply(PROMOTE)`` of a decision that names no arm; a PROMOTE
      naming ``Decision.arm`` sends everything to that arm. After either, every route is exactly
      ``Route(that_arm)`` and later decisions do not reverse it;
    * the constructor validates the config (``check_config``) and the arms (``arm_names``), so a
      subclass does not repeat it; ``self.routable`` is the arms that get traffic.
    """

    kind = "traffic_strategy"
    recipe_key = "strategy"
    #: True: the same ``RouteRequest.key`` always reaches the same primary arm
    sticky: ClassVar[bool] = False

    def __init__(self, config: Any, arms: Mapping[str, str], refs: Mapping[str, type] | None = None):
        super().__init__(config, refs)
        self.arms = dict(arms)
        self.routable: list[str] = list(type(self).arm_names(self.config, self.arms))
        #: the arm a PROMOTE / ROLLBACK left answering everything (None: the rollout is running)
        self.final: str | None = None

    @classmethod
    def arm_names(cls, config: Any, arms: Mapping[str, str]) -> Sequence[str]:
        """Validate at plan time that the declared arms fit this strategy; return the arms that
        get traffic, in declaration order. RecipeError naming ``serve.models`` otherwise."""
        if not arms:
            from .errors import RecipeError

            raise RecipeError(f"serve.models: strategy '{cls.name}' needs at least one arm; declare e.g. serve.models={{primary: this_run}}")
        return list(arms)

    def incumbent(self) -> str:
        """The arm that answers everything after a rollback (default: the first routable arm)."""
        return self.routable[0]

    def candidate(self) -> str:
        """The arm a PROMOTE without ``Decision.arm`` hands everything to (default: the last)."""
        return self.routable[-1]

    def choose(self, request: RouteRequest) -> Route:
        """Which arm answers ``request`` and which arms shadow it. No side effects."""
        raise NotImplementedError(f"strategy '{self.name}' implements no choose()")

    def route(self, request: RouteRequest) -> Route:
        """The served request's route: the applied verdict's arm, else ``choose``; either way
        recorded through :meth:`routed`, so a strategy keeps learning from pinned traffic."""
        route = Route(self.final) if self.final is not None else self.choose(request)
        self.routed(request, route)
        return route

    def routed(self, request: RouteRequest, route: Route) -> None:
        """``route`` was served for ``request``: count it, remember a ranking's teams ... (default:
        nothing). Offline evaluation asks ``choose`` for every logged request and calls this only
        for the ones whose logged arm is the arm chosen (the rows replay keeps), as serving would."""

    def reopen(self) -> None:
        """Undo an applied verdict: routing goes back to ``choose`` (an operator's reweight or
        HOLD may do this; a strategy's own later decisions never do)."""
        self.final = None

    def observe(self, outcome: Outcome) -> None:
        """Latency and errors of an answer; called off the client's path where possible."""

    def feedback(self, feedback: Feedback) -> None:
        """Ground truth or reward that arrived later for a request."""

    def decide(self) -> Decision:
        """Called by the host after every observed outcome and feedback; returns HOLD until a
        window is complete. PROMOTE / ROLLBACK are acted on by the host (registry aliases,
        events) and then passed back through :meth:`apply`."""
        return Decision(Verdict.HOLD, "no decision logic")

    def apply(self, decision: Decision) -> None:
        """Take a verdict into effect (the strategy's own, or an operator's through the admin
        endpoint): after PROMOTE ``decision.arm`` (else the heaviest of ``decision.weights``, else
        ``candidate()``) answers everything, after
        ROLLBACK ``incumbent()``. HOLD changes nothing. A subclass that overrides this calls
        ``super().apply(decision)``; ValueError refuses a verdict (an undeclared arm)."""
        if decision.verdict is Verdict.PROMOTE:
            weights = decision.weights or {}
            arm = decision.arm or (max(weights, key=weights.__getitem__) if weights else None) or self.candidate()
            if arm not in self.arms:
                raise ValueError(f"cannot promote '{arm}': not an arm of this strategy ({', '.join(self.arms)})")
            self.final = arm
        elif decision.verdict is Verdict.ROLLBACK:
            self.final = self.incumbent()

    def answering_arm(self) -> str | None:
        """The arm that answers everything since a verdict was applied, None while running."""
        return self.final

    def set_weights(self, weights: Mapping[str, float]) -> None:
        """Reweight traffic at runtime (admin endpoint). Strategies without weights refuse."""
        raise NotImplementedError(f"strategy '{self.name}' has no traffic weights to set")

    def merge(self, request: RouteRequest, answers: Mapping[str, Any]) -> Any:
        """Build the client's answer from every arm's answer when ``route`` asked to merge."""
        raise NotImplementedError(f"strategy '{self.name}' does not merge answers")

    def state(self) -> dict:
        """A JSON-able snapshot for reports and the admin endpoint."""
        return {}


# ---------------------------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------------------------
@dataclass
class ServedWindow:
    """What the server saw: one row per answered instance.

    ``frame`` columns: the input features, ``prediction``, ``model_version``, ``latency_ms``,
    ``request_id``, ``timestamp``.
    """

    frame: Any
    features: list[str]
    #: each served model version's answers on the reference (training) rows, in their order:
    #: version -> classes (or numbers for a regression). None: not computed (outside a run)
    reference_outputs: dict[str, list] | None = None
    #: files stored with the reference data version (read(name) -> bytes | None, write(name, data),
    #: ``ref``): what a monitor derives from the training rows once, reused by later runs. None
    #: outside a run
    reference_files: "ReferenceFiles | None" = None
    #: feedback that arrived for these answers: a frame of ``request_id``, ``label`` (None for a
    #: reward or clicks), ``time``; None: not available (no record log)
    feedback: Any = None
    #: each served model version's confidence in its answers on labeled reference rows it did
    #: not learn from (the validation split), and whether each was right: version ->
    #: {"confidence": [...], "correct": [...]} (classification only). None: not computed
    calibration: dict[str, dict] | None = None


class ReferenceFiles:
    """Files stored with the data version a run trained on (``ServedWindow.reference_files``).

    ``ref`` names the data version (``NAME:ID``) and the part of it (``train``, the window); a
    monitor keys what it stores by what it computed from (its columns, its settings)."""

    def __init__(self, ref: str, read: Any, write: Any):
        self.ref = ref
        self._read, self._write = read, write

    def read(self, name: str) -> bytes | None:
        return self._read(name)

    def write(self, name: str, data: bytes) -> str:
        """Store ``data``; returns where it was written."""
        return self._write(name, data)


@dataclass
class MonitorReport:
    monitor: str
    metrics: dict[str, Any] = field(default_factory=dict)
    alerts: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    #: points the HTML report plots: {"panel": "drift" | "accuracy" | ..., "group" (e.g. the model
    #: version), "series", "window" (its start, ISO time), "value", "flag" (e.g. drifted)}
    timeline: list[dict] = field(default_factory=list)


class Monitor(Component):
    """Looks at served traffic against a reference (the training data) and reports."""

    kind = "monitor"
    recipe_key = "monitor"

    def evaluate(self, served: ServedWindow, reference: DataSplits, ctx: StageContext) -> MonitorReport:
        raise NotImplementedError

    #: what its alerts are about, for the actions' ``on:`` (``drift``, ``accuracy_drop`` ...)
    alert_kind: ClassVar[str] = "alert"


# ---------------------------------------------------------------------------------------------
# Actions: what the recipe says to do when a monitor alerts
# ---------------------------------------------------------------------------------------------
#: the alert kinds an action's ``on:`` may name (``any``: every alert)
ALERT_KINDS = ("drift", "accuracy_drop", "alert", "any")


@dataclass
class Alert:
    """One monitor alert, as actions receive it: which monitor, what kind, the message and the
    evidence (the monitor's figures for the window: drifted columns, accuracies ...)."""

    monitor: str
    kind: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    time: float = 0.0


class ActionContext(Protocol):
    """What an action can do to the running system. Implemented by the core (``stages/act.py``)."""

    logger: logging.Logger
    out_dir: Path
    #: the running app's base URL (None: nothing is served)
    app_url: str | None

    def rollback(self, reason: str) -> dict:
        """Roll back the running strategy through the app's admin API: the strategy's event."""
        ...

    def retrain(self, alert: Alert, data: Mapping[str, Any], rollout: Any, rollout_config: Any) -> dict:
        """Rerun the recipe's data (``data``: keys overriding the recipe's data section) ▸ train
        ▸ export ▸ gate ▸ register on the newest data version, then canary the new model against
        ``prod`` with the traffic strategy class ``rollout`` (its ``rollout_config``): what happened."""
        ...


class Action(Component):
    """Acts on a monitor's alert: ``act(alert, ctx)`` returns the event's details (JSON-able).

    The core keys ``on:`` (alert kinds, default every one) and ``cooldown_s:`` (after acting, the
    same action ignores alerts for this long: one incident, one action) are the core's, not the
    action's options."""

    kind = "action"
    recipe_key = "actions"

    def act(self, alert: Alert, ctx: ActionContext) -> dict:
        raise NotImplementedError


#: Every component kind, in stage order, with the registration hook that supplies it.
COMPONENT_KINDS: dict[str, tuple[type[Component], str]] = {
    "data_source": (DataSource, "register_data_sources"),
    "data_check": (DataCheck, "register_data_checks"),
    "labeler": (Labeler, "register_labelers"),
    "preprocessor": (Preprocessor, "register_preprocessors"),
    "model": (Model, "register_models"),
    "trainer": (Trainer, "register_trainers"),
    "compressor": (Compressor, "register_compressors"),
    "exporter": (Exporter, "register_exporters"),
    "traffic_strategy": (TrafficStrategy, "register_traffic_strategies"),
    "batch_predictor": (BatchPredictor, "register_batch_predictors"),
    "monitor": (Monitor, "register_monitors"),
    "action": (Action, "register_actions"),
}


def iter_kinds() -> Iterable[tuple[str, type[Component], str]]:
    for kind, (base, hook) in COMPONENT_KINDS.items():
        yield kind, base, hook
