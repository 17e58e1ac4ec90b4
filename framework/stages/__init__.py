"""What each stage of a run does with its plugin components and the core services (registry,
serving, device). One module per stage family; ``framework.pipeline.STAGES`` names each stage's
runner (``data:run_checks`` is ``framework.stages.data.run_checks``) and ``run.py`` calls them in
that order with ``(plan, stage, state, ctx, components)``."""
from .state import RunState

__all__ = ["RunState"]
