"""A declarative framework for production ML systems: recipes in, running systems out."""
from .components import (  # noqa: F401  (the public contract surface)
    BatchPredictor,
    CheckReport,
    Component,
    Compressor,
    DataCheck,
    DataSource,
    DataSplits,
    Dataset,
    Decision,
    ExportedModel,
    Exporter,
    Feedback,
    FeatureSpec,
    InputSchema,
    Labeler,
    Model,
    Monitor,
    MonitorReport,
    Outcome,
    Route,
    RouteRequest,
    ServedWindow,
    StageContext,
    TrafficStrategy,
    TrainedModel,
    Trainer,
    Verdict,
)
from .errors import (  # noqa: F401
    DataCheckError,
    FrameworkError,
    PluginError,
    RecipeError,
    RequestError,
    ServingError,
    StageError,
    StoreError,
)
from .hookspecs import hookimpl  # noqa: F401

__version__ = "0.1.0"
