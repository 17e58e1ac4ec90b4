"""Model ``mlp``: a tabular multi-layer perceptron (``plugins.nets.TabularMLP``).

Hyperparameters (``train.search_space``): hidden (width), lr, dropout, weight_decay (default 0),
layers (default 1). Importing this module is cheap: torch comes in with ``build``.
"""
from __future__ import annotations

from typing import Any, Mapping

from framework import Model, hookimpl

from plugins.model_support import OPTIMIZER_HYPERPARAMETERS


def build_mlp(hp: Mapping[str, Any], n_features: int, n_classes: int, mean=None, std=None):
    """The MLP for hyperparameters ``hp`` (defaults filled in); identity standardization when
    ``mean``/``std`` are left out (a state_dict load restores them)."""
    from plugins.nets import TabularMLP

    hp = {**MLPModel.defaults(), **hp}
    return TabularMLP(n_features, n_classes, hidden=hp["hidden"], layers=hp["layers"], dropout=hp["dropout"],
                      mean=mean, std=std)


class MLPModel(Model):
    name = "mlp"
    summary = "tabular MLP (standardization inside), classification or regression: hidden, layers, dropout; Adam lr, weight_decay"
    tasks = ("classification", "regression")
    hyperparameters = {"hidden": None, "dropout": 0.0, "layers": 1, **OPTIMIZER_HYPERPARAMETERS}
    default_search_space = {
        "hidden": {"choice": [16, 32, 64]},
        "lr": {"loguniform": [0.001, 0.03]},
        "dropout": {"uniform": [0.0, 0.3]},
    }

    def build(self, hp, n_features, n_classes, mean=None, std=None):
        return build_mlp(hp, n_features, n_classes, mean, std)


@hookimpl
def register_models():
    return [MLPModel]
