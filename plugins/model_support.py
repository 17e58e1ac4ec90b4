"""What the built-in model components (``model_mlp``, ``model_cnn``, ``model_ranker``) share.

Light (no torch): the model plugins import it at the top, and listing plugins or planning a recipe
imports them.
"""
from __future__ import annotations

from typing import Any

#: optimisation hyperparameters every built-in model takes (the trainer reads them)
OPTIMIZER_HYPERPARAMETERS: dict[str, Any] = {"lr": None, "weight_decay": 0.0}
