"""The torch modules behind the built-in model components (``model_mlp``, ``model_cnn``,
``model_ranker``), and the evaluation every trainer and compressor shares.

This module imports torch at the top: only import it inside functions (the model components do
in ``build``), so that listing plugins or planning a recipe never pays for torch. The classes live
at module level so that pickling a module (Ray) finds them by reference.

Every module maps raw float32 features ``[batch, n]`` to class logits ``[batch, classes]`` and
standardizes its input itself (training mean/std held as buffers): whatever is exported from it
takes the raw values a client sends.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn


class Standardize(nn.Module):
    """(x - mean) / std with the training split's statistics stored as buffers."""

    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).clone())
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).clone())

    def forward(self, x):
        return (x - self.mean) / self.std


def _stats(n_features: int, mean, std):
    return (torch.zeros(n_features) if mean is None else mean, torch.ones(n_features) if std is None else std)


def _widths(hidden: int | Sequence[int], layers: int) -> list[int]:
    """One width repeated ``layers`` times, or per-layer widths as given."""
    return [int(h) for h in hidden] if isinstance(hidden, (list, tuple)) else [int(hidden)] * int(layers)


def _dense_stack(n_in: int, widths: Sequence[int], dropout: float, n_out: int) -> list[nn.Module]:
    """Linear ▸ ReLU ▸ Dropout per hidden width, then Linear(n_out)."""
    blocks: list[nn.Module] = []
    for size in widths:
        blocks += [nn.Linear(n_in, int(size)), nn.ReLU(), nn.Dropout(float(dropout))]
        n_in = int(size)
    return blocks + [nn.Linear(n_in, int(n_out))]


class TabularMLP(nn.Module):
    """Raw float32 features [batch, n] -> class logits [batch, classes].

    ``hidden`` is one width for every hidden layer, or a list of per-layer widths (what structured
    pruning leaves behind)."""

    def __init__(self, n_features: int, n_classes: int, hidden: int | Sequence[int], layers: int = 1,
                 dropout: float = 0.0, mean=None, std=None):
        super().__init__()
        self.standardize = Standardize(*_stats(n_features, mean, std))
        self.body = nn.Sequential(*_dense_stack(n_features, _widths(hidden, layers), dropout, n_classes))

    def forward(self, x):
        return self.body(self.standardize(x))


class RegressionOutput(nn.Module):
    """A model's one output, learnt in standardized target units, in the target's units: the
    training target's mean and spread are buffers, so the exported file answers in those units."""

    def __init__(self, body: nn.Module, target_mean: float = 0.0, target_std: float = 1.0):
        super().__init__()
        self.body = body
        self.register_buffer("target_mean", torch.tensor([float(target_mean)], dtype=torch.float32))
        self.register_buffer("target_std", torch.tensor([float(target_std)], dtype=torch.float32))

    def forward(self, x):
        return self.body(x) * self.target_std + self.target_mean


def image_shape(n_features: int, channels: int = 1, height: int = 0, width: int = 0) -> tuple[int, int, int]:
    """(channels, height, width) of flat pixel rows; height/width 0 = a square image inferred from
    ``n_features``. ValueError when the numbers do not multiply to ``n_features``."""
    if height <= 0 and width <= 0:
        side = math.isqrt(n_features // max(1, channels))
        height = width = side
    elif height <= 0:
        height = n_features // max(1, channels * width)
    elif width <= 0:
        width = n_features // max(1, channels * height)
    if channels * height * width != n_features:
        raise ValueError(
            f"{n_features} features are not {channels} channel(s) x {height} x {width} pixels; "
            "set channels / height / width to the image's shape"
        )
    return channels, height, width


class ImageCNN(nn.Module):
    """Flat pixel rows [batch, C*H*W] -> class logits: a small convolutional network.

    ``standardize`` (per-pixel training mean/std) ▸ ``body``: Unflatten to [C, H, W], then per
    conv block Conv2d (same padding) ▸ ReLU ▸ MaxPool2d(2) while the image is at least 2x2, then
    Flatten ▸ Linear(hidden) ▸ ReLU ▸ Dropout ▸ Linear(classes). ``conv_channels`` lists the output
    channels of each conv block (structured pruning may shrink them)."""

    def __init__(self, n_features: int, n_classes: int, conv_channels: Sequence[int], hidden: int | Sequence[int],
                 kernel_size: int = 3, dropout: float = 0.0, shape: Sequence[int] = (), mean=None, std=None):
        super().__init__()
        channels, height, width = tuple(int(v) for v in shape) if shape else image_shape(n_features)
        self.standardize = Standardize(*_stats(n_features, mean, std))
        k = int(kernel_size)
        blocks: list[nn.Module] = [nn.Unflatten(1, (channels, height, width))]
        in_ch = channels
        for out_ch in conv_channels:
            blocks += [nn.Conv2d(in_ch, int(out_ch), k, padding=k // 2), nn.ReLU()]
            if height >= 2 and width >= 2:
                blocks.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
            in_ch = int(out_ch)
        blocks.append(nn.Flatten())
        blocks += _dense_stack(in_ch * height * width, _widths(hidden, 1), dropout, n_classes)
        self.body = nn.Sequential(*blocks)

    def forward(self, x):
        return self.body(self.standardize(x))


class ScoreAsLogits(nn.Module):
    """One relevance score s per row as two-class logits [0, s]: softmax gives P(relevant) =
    sigmoid(s), so the serving ``rank`` endpoint (sort by the positive class) sorts by s."""

    def forward(self, score):
        return torch.cat([torch.zeros_like(score), score], dim=1)


class Ranker(nn.Module):
    """Raw features -> [0, s]: an MLP scorer trained with a pairwise ranking loss (see model_ranker)."""

    def __init__(self, n_features: int, hidden: int | Sequence[int], layers: int = 1, dropout: float = 0.0,
                 mean=None, std=None):
        super().__init__()
        self.standardize = Standardize(*_stats(n_features, mean, std))
        self.body = nn.Sequential(*_dense_stack(n_features, _widths(hidden, layers), dropout, 1))
        self.as_logits = ScoreAsLogits()

    def forward(self, x):
        return self.as_logits(self.body(self.standardize(x)))


def training_stats(x) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std of training rows as float32 for ``Standardize``; a constant column
    gets std 1 (no division by 0)."""
    std = x.std(axis=0)
    return x.mean(axis=0).astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32)


def train_epoch(module, optimizer, n_rows: int, batch_size: int, generator, batch_loss) -> None:
    """One epoch of seeded shuffled minibatches: ``batch_loss(idx)`` gives the loss of the rows
    ``idx`` (a LongTensor), which is backpropagated and stepped."""
    module.train()
    order = torch.randperm(n_rows, generator=generator)
    for start in range(0, n_rows, int(batch_size)):
        idx = order[start:start + int(batch_size)]
        optimizer.zero_grad()
        batch_loss(idx).backward()
        optimizer.step()


def evaluate(module, x, y) -> tuple[float, float, np.ndarray]:
    """(accuracy, mean cross-entropy, predicted class indices) of ``module`` on numpy arrays."""
    module.eval()
    with torch.no_grad():
        logits = module(torch.tensor(x))  # a copy: pandas may hand out read-only arrays
        target = torch.tensor(y)
        loss = float(nn.functional.cross_entropy(logits, target))
        pred = logits.argmax(dim=1)
        acc = float((pred == target).float().mean())
    return acc, loss, pred.numpy()


def evaluate_regression(module, x, y) -> dict[str, float]:
    """mse, mae and r2 of a regression module's predictions on numpy rows (target units)."""
    from framework.metrics import regression_metrics

    module.eval()
    with torch.no_grad():
        pred = module(torch.tensor(x)).numpy().reshape(-1)
    return regression_metrics(np.asarray(y, dtype=np.float64), pred)


def evaluate_splits(module, splits, classes: Sequence) -> dict:
    """val/test accuracy, test macro F1 and val/test loss of ``module`` on a DataSplits, as the
    trainer reports them (what a compressor compares before and after)."""
    from sklearn.metrics import f1_score

    x_val, y_val = splits.arrays("val")
    x_test, y_test = splits.arrays("test")
    val_acc, val_loss, _ = evaluate(module, x_val, y_val)
    test_acc, test_loss, pred = evaluate(module, x_test, y_test)
    f1 = float(f1_score(y_test, pred, average="macro", labels=list(range(len(classes))), zero_division=0))
    return {"val_accuracy": val_acc, "val_loss": val_loss, "test_accuracy": test_acc,
            "test_f1_macro": f1, "test_loss": test_loss}


def count_parameters(module) -> int:
    """Number of parameters (weights and biases) of a torch module."""
    return int(sum(p.numel() for p in module.parameters()))


def logits_of(module, x) -> np.ndarray:
    """``module``'s logits on numpy rows, as float32 numpy."""
    module.eval()
    with torch.no_grad():
        return module(torch.tensor(np.asarray(x, dtype=np.float32))).numpy().astype(np.float32)
