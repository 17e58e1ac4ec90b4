"""Every built-in model passes the kit plugin authors subclass (framework.testing)."""
from __future__ import annotations

from framework.testing import ModelContract
from plugins.model_cnn import CNNModel
from plugins.model_mlp import MLPModel
from plugins.model_ranker import RankerModel


class TestMLPContract(ModelContract):
    model_cls = MLPModel


class TestMLPTwoLayersContract(ModelContract):
    model_cls = MLPModel
    n_features = 30
    n_classes = 2

    def make_hyperparameters(self):
        return {**super().make_hyperparameters(), "layers": 2, "dropout": 0.2}


class TestCNNContract(ModelContract):
    model_cls = CNNModel
    n_features = 64  # 8x8 images, as scikit-learn's digits
    n_classes = 10


class TestRankerContract(ModelContract):
    model_cls = RankerModel
    n_classes = 2  # relevant or not
