"""torch modules of :mod:`framework.testing.models`, at module level so they pickle by reference.

Imports torch at the top: import this module only inside functions.
"""
from __future__ import annotations

import torch
from torch import nn


class TinyClassifier(nn.Module):
    """(x - mean) / std ▸ Linear ▸ ReLU ▸ Linear: raw float32 features -> class logits."""

    def __init__(self, n_features: int, n_classes: int, hidden: int, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x):
        return self.net((x - self.mean) / self.std)
