"""Label models: combine the votes of labeling functions into probabilistic labels.

* :func:`majority_vote`: each row's most voted class (ties split evenly; optional weights);
* :class:`DawidSkene`: the generative model of Dawid & Skene (1979), fitted by EM without gold
  labels. Each function j has a confusion matrix ``theta[j][c, v] = P(vote v | true class c)``
  over its outputs *including abstaining* (labeling functions are mostly one-class: what tells
  their accuracy is when they vote, not only what), the functions are independent given the true
  class, and the posterior over the true class of each row is the probabilistic label. EM starts
  from the majority vote (which fixes which class is which), and a Dirichlet prior that favours
  a correct vote keeps rarely voting functions from collapsing.

Why not Snorkel: its last release (0.10.0) does resolve with ``constraints.txt``, but brings
tensorboard, werkzeug, absl-py, markdown, munkres and pillow for one model. Its ``LabelModel`` ran
here (numpy 2, pandas 3, torch 2.13) on the simulated votes of ``tests/unit/test_labels_core.py``
(one-class functions of known accuracy, 3 seeds): 78-82% of the covered rows labeled right against
83-84% for this model, in 3.6-37 s (500 epochs, a loaded 2-core machine) against 0.04-0.4 s. This
is the standard model in ~100 lines, tested on those simulations.

Rows no function voted on get no label (all NaN probabilities): they leave the training data,
as Snorkel's ``filter_unlabeled_dataframe`` does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from .functions import ABSTAIN

LABEL_MODELS = ("majority", "generative")


def majority_vote(matrix: Any, n_classes: int, weights: Sequence[float] | None = None) -> Any:
    """Probabilities rows x classes: each row's (weighted) votes, normalised; ties are split
    evenly; a row without a vote is all NaN."""
    import numpy as np

    n, m = matrix.shape
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=float)
    counts = np.zeros((n, n_classes))
    for j in range(m):
        voted = matrix[:, j] != ABSTAIN
        np.add.at(counts, (np.flatnonzero(voted), matrix[voted, j]), w[j])
    top = counts.max(axis=1, keepdims=True)
    winners = (counts == top) & (top > 0)
    probs = winners / np.maximum(winners.sum(axis=1, keepdims=True), 1)
    probs[top[:, 0] <= 0] = np.nan
    return probs


@dataclass
class DawidSkene:
    """The Dawid-Skene label model, fitted by EM on the label matrix alone (no gold)."""

    n_classes: int
    max_iter: int = 200
    tol: float = 1e-6
    #: pseudo-counts of the Dirichlet prior: ``prior_correct`` on a correct vote, ``prior_other``
    #: on every other outcome (abstain or a wrong class)
    prior_correct: float = 2.0
    prior_other: float = 1.0
    #: class priors are learned; ``class_balance`` fixes them instead (a list summing to 1)
    class_balance: Sequence[float] | None = None
    theta: Any = None  # functions x classes x (1 + classes): outcome 0 is abstain
    prior: Any = None
    iterations: int = 0
    log_likelihood: list = field(default_factory=list)

    def fit(self, matrix: Any) -> "DawidSkene":
        import numpy as np

        k = self.n_classes
        covered = (matrix != ABSTAIN).any(axis=1)
        lm = matrix[covered]
        outcomes = self._outcomes(lm)  # functions x rows x (1+k) one-hot
        posterior = majority_vote(lm, k)
        previous = -np.inf
        for it in range(self.max_iter):
            self._m_step(outcomes, posterior)
            posterior, ll = self._e_step(outcomes)
            self.log_likelihood.append(float(ll))
            self.iterations = it + 1
            if abs(ll - previous) < self.tol * max(1.0, abs(ll)):
                break
            previous = ll
        return self

    def _outcomes(self, matrix: Any) -> Any:
        import numpy as np

        n, m = matrix.shape
        onehot = np.zeros((m, n, 1 + self.n_classes))
        for j in range(m):
            onehot[j, np.arange(n), matrix[:, j] + 1] = 1.0  # ABSTAIN (-1) -> outcome 0
        return onehot

    def _m_step(self, outcomes: Any, posterior: Any) -> None:
        import numpy as np

        k = self.n_classes
        pseudo = np.full((k, 1 + k), self.prior_other)
        pseudo[np.arange(k), np.arange(k) + 1] = self.prior_correct
        # counts[j, c, v] = sum_i posterior[i, c] * outcome[j, i, v]
        counts = np.einsum("ic,jiv->jcv", posterior, outcomes) + pseudo
        self.theta = counts / counts.sum(axis=2, keepdims=True)
        if self.class_balance is not None:
            self.prior = np.asarray(self.class_balance, dtype=float)
        else:
            self.prior = (posterior.sum(axis=0) + 1.0) / (posterior.shape[0] + k)

    def _e_step(self, outcomes: Any) -> tuple[Any, float]:
        import numpy as np

        log_theta = np.log(self.theta)  # j, c, v
        # log p(row i, class c) = log prior_c + sum_j log theta[j, c, vote_ij]
        joint = np.log(self.prior)[None, :] + np.einsum("jiv,jcv->ic", outcomes, log_theta)
        top = joint.max(axis=1, keepdims=True)
        norm = top + np.log(np.exp(joint - top).sum(axis=1, keepdims=True))
        return np.exp(joint - norm), float(norm.sum())

    def predict_proba(self, matrix: Any) -> Any:
        """Posterior over classes per row; rows without any vote are all NaN."""
        import numpy as np

        if self.theta is None:
            raise RuntimeError("DawidSkene: fit() first")
        probs = np.full((len(matrix), self.n_classes), np.nan)
        covered = (matrix != ABSTAIN).any(axis=1)
        if covered.any():
            probs[covered], _ = self._e_step(self._outcomes(matrix[covered]))
        return probs

    def accuracies(self) -> list[float]:
        """Each function's learned accuracy: P(vote is the true class | it voted)."""
        import numpy as np

        k = self.n_classes
        out = []
        for j in range(self.theta.shape[0]):
            voted = (self.prior * (1.0 - self.theta[j, :, 0])).sum()
            right = (self.prior * self.theta[j, np.arange(k), np.arange(k) + 1]).sum()
            out.append(float(right / voted) if voted > 0 else float("nan"))
        return out


def combine(matrix: Any, n_classes: int, model: str = "generative", seed: int = 0, **options: Any) -> tuple[Any, dict]:
    """(probabilities rows x classes, what the model learned) for ``model`` in LABEL_MODELS."""
    if model == "majority":
        return majority_vote(matrix, n_classes), {"model": "majority"}
    if model != "generative":
        raise ValueError(f"label model {model!r}: use one of {', '.join(LABEL_MODELS)}")
    fitted = DawidSkene(n_classes, **options).fit(matrix)
    return fitted.predict_proba(matrix), {
        "model": "generative (Dawid-Skene EM)",
        "iterations": fitted.iterations,
        "learned_accuracy": fitted.accuracies(),
        "class_prior": [float(p) for p in fitted.prior],
    }
