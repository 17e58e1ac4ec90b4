"""Model ``cnn``: a small convolutional network for images given as flat pixel rows
(``plugins.nets.ImageCNN``), e.g. scikit-learn's 8x8 digits.

Hyperparameters (``train.search_space``): conv_channels (a list: one conv block each, e.g.
[16, 32]), hidden, kernel_size (default 3), dropout, lr, weight_decay, and the image shape:
channels (default 1), height / width (default 0: a square image inferred from the feature count).
"""
from __future__ import annotations

from typing import Any, Mapping

from framework import Model, hookimpl

from plugins.model_support import OPTIMIZER_HYPERPARAMETERS


class CNNModel(Model):
    name = "cnn"
    summary = "small CNN for images as flat pixel rows (conv_channels, kernel_size, hidden, dropout; image shape)"
    hyperparameters = {"conv_channels": [16, 32], "hidden": 64, "kernel_size": 3, "dropout": 0.0,
                       "channels": 1, "height": 0, "width": 0, **OPTIMIZER_HYPERPARAMETERS}
    default_search_space = {
        "conv_channels": {"choice": [[8, 16], [16, 32]]},
        "hidden": {"choice": [32, 64]},
        "lr": {"loguniform": [0.001, 0.01]},
        "dropout": {"uniform": [0.0, 0.3]},
    }

    @staticmethod
    def shape(hp: Mapping[str, Any], n_features: int) -> tuple[int, int, int]:
        from plugins.nets import image_shape  # torch: only once data is there

        return image_shape(n_features, int(hp["channels"]), int(hp["height"]), int(hp["width"]))

    def check_data(self, n_features, n_classes, hp):
        hp = {**self.defaults(), **hp}
        channels = hp["conv_channels"]
        if not isinstance(channels, (list, tuple)) or not channels or not all(
                isinstance(c, int) and not isinstance(c, bool) and c >= 1 for c in channels):
            return f"conv_channels must be a non-empty list of positive integers, got {channels!r}"
        if int(hp["kernel_size"]) < 1 or int(hp["kernel_size"]) % 2 == 0:
            return f"kernel_size must be a positive odd integer (same padding), got {hp['kernel_size']}"
        try:
            self.shape(hp, n_features)
        except ValueError as exc:
            return str(exc)
        return None

    def build(self, hp, n_features, n_classes, mean=None, std=None):
        from plugins.nets import ImageCNN

        hp = {**self.defaults(), **hp}
        return ImageCNN(n_features, n_classes, conv_channels=hp["conv_channels"], hidden=hp["hidden"],
                        kernel_size=hp["kernel_size"], dropout=hp["dropout"], shape=self.shape(hp, n_features),
                        mean=mean, std=std)


@hookimpl
def register_models():
    return [CNNModel]
