"""Model ``ranker``: a scorer for feeds, trained to order relevant items above the others.

An MLP gives one score s per item; the module returns two-class logits [0, s], so softmax gives
P(relevant) = sigmoid(s) and the serving ``rank`` endpoint, which sorts by the positive class,
sorts by s. Training minimizes a pairwise logistic loss (RankNet) over every (relevant, other)
pair in a minibatch, log(1 + exp(-(s_relevant - s_other))), plus ``pointwise_weight`` times the
cross-entropy of the logits, which keeps P(relevant) meaningful (a pairwise loss alone does not
care where s = 0 falls). Its validation metric is ``val_auc``: the share of (relevant, other)
pairs ordered correctly, ties half.

Binary relevance only (2 classes; the second class is "relevant"). The pairwise loss couples rows,
so per-example differential privacy does not apply (``per_example_loss = False``).
"""
from __future__ import annotations

from typing import Any, Mapping

from framework import Model, hookimpl

from plugins.model_support import OPTIMIZER_HYPERPARAMETERS


def pairwise_logistic_loss(score, relevant):
    """Mean log(1 + exp(-(s_i - s_j))) over pairs with i relevant and j not (0 when no pair)."""
    import torch.nn.functional as F

    pos, neg = score[relevant], score[~relevant]
    if len(pos) == 0 or len(neg) == 0:
        return score.sum() * 0.0  # keeps the graph: a batch with one class only
    return F.softplus(-(pos[:, None] - neg[None, :])).mean()


def auc(score, relevant) -> float:
    """Share of (relevant, other) pairs with the relevant one scored higher (ties count half)."""
    pos, neg = score[relevant], score[~relevant]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).float() + 0.5 * (diff == 0).float()).mean())


class RankerModel(Model):
    name = "ranker"
    tasks = ("classification", "ranking")
    summary = "feed ranker: MLP scorer, pairwise logistic (RankNet) loss + pointwise term; val_auc"
    hyperparameters = {"hidden": None, "layers": 1, "dropout": 0.0, "pointwise_weight": 0.2,
                       **OPTIMIZER_HYPERPARAMETERS}
    default_search_space = {
        "hidden": {"choice": [16, 32, 64]},
        "lr": {"loguniform": [0.001, 0.03]},
        "dropout": {"uniform": [0.0, 0.3]},
    }
    per_example_loss = False
    extra_metric_names = ("auc",)

    def check_data(self, n_features, n_classes, hp):
        if n_classes != 2:
            return f"a ranker learns binary relevance (2 classes, the second = relevant); this data has {n_classes}"
        weight = float({**self.defaults(), **hp}["pointwise_weight"])
        if weight < 0:
            return f"pointwise_weight must be >= 0, got {weight}"
        return None

    def build(self, hp, n_features, n_classes, mean=None, std=None):
        from plugins.nets import Ranker

        hp = {**self.defaults(), **hp}
        return Ranker(n_features, hidden=hp["hidden"], layers=hp["layers"], dropout=hp["dropout"], mean=mean, std=std)

    def loss(self, logits, target, hp: Mapping[str, Any]):
        import torch.nn.functional as F

        score = logits[:, 1] - logits[:, 0]
        loss = pairwise_logistic_loss(score, target == 1)
        weight = float(hp.get("pointwise_weight", self.hyperparameters["pointwise_weight"]))
        return loss + weight * F.cross_entropy(logits, target) if weight > 0 else loss

    def extra_metrics(self, logits, target):
        return {"auc": auc(logits[:, 1] - logits[:, 0], target == 1)}


@hookimpl
def register_models():
    return [RankerModel]
