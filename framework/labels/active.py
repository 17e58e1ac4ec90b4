"""Active learning: which unlabeled rows people should label next.

Uncertainty sampling scores each unlabeled row by how unsure the current model is:

* ``entropy``: ``-sum p log p``;
* ``margin``: ``1 - (p_top - p_second)`` (a small margin between the two best classes is unsure);
* ``least_confidence``: ``1 - p_top``.

``diverse`` (the diversity-aware variant) takes the ``diversity_pool`` x batch most uncertain
rows, clusters them (k-means on standardised features, one cluster per row of the batch) and
picks the most uncertain row of each cluster, so a batch does not spend its labels on near
duplicates. ``random`` is the baseline: a uniform draw.

The learner that scores rows is small and fast (scikit-learn's logistic regression on
standardised features): it runs once per batch. The model the recipe trains afterwards is the
recipe's own (``train:``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

UNCERTAINTY = ("entropy", "margin", "least_confidence")
STRATEGIES = (*UNCERTAINTY, "random")


def uncertainty(probs: Any, measure: str) -> Any:
    """One score per row, larger = less sure."""
    import numpy as np

    p = np.clip(np.asarray(probs, dtype=float), 0.0, 1.0)
    if measure == "entropy":
        with np.errstate(divide="ignore", invalid="ignore"):
            return -np.nansum(np.where(p > 0, p * np.log(p), 0.0), axis=1)
    top2 = np.sort(p, axis=1)[:, ::-1]
    if measure == "margin":
        second = top2[:, 1] if p.shape[1] > 1 else 0.0
        return 1.0 - (top2[:, 0] - second)
    if measure == "least_confidence":
        return 1.0 - top2[:, 0]
    raise ValueError(f"uncertainty measure {measure!r}: use one of {', '.join(UNCERTAINTY)}")


def select(probs: Any, batch_size: int, strategy: str, rng: Any, features: Any = None, diverse: bool = False,
           diversity_pool: int = 5) -> Any:
    """Positions (into ``probs``' rows) of the next batch, most useful first."""
    import numpy as np

    n = len(probs)
    batch = min(batch_size, n)
    if batch <= 0:
        return np.zeros(0, dtype=np.int64)
    if strategy == "random":
        return rng.choice(n, size=batch, replace=False)
    scores = uncertainty(probs, strategy)
    scores = scores + rng.uniform(0, 1e-9, size=n)  # ties broken at random, not by position
    order = np.argsort(-scores)
    if not diverse or features is None or batch < 2:
        return order[:batch]
    from sklearn.cluster import KMeans

    pool = order[:min(n, batch * max(1, diversity_pool))]
    x = np.asarray(features, dtype=float)[pool]
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    clusters = KMeans(n_clusters=batch, n_init=1, random_state=int(rng.integers(2**31 - 1))).fit_predict(x)
    picked = []
    for c in range(batch):
        members = pool[clusters == c]
        if len(members):
            picked.append(members[np.argmax(scores[members])])
    chosen = set(picked)
    picked += [i for i in pool if i not in chosen][:batch - len(picked)]  # an empty cluster: fill by score
    return np.asarray(sorted(picked, key=lambda i: -scores[i]), dtype=np.int64)


def _one_thread() -> Any:
    """BLAS / OpenMP on one thread: these fits are tiny, and on a loaded machine a thread pool
    made one 70 times slower (measured: 0.9 s against 13 ms for 200 digits)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


class Learner:
    """Logistic regression on standardised features; ``predict_proba`` covers every class (a
    class not yet labeled gets probability 0)."""

    def __init__(self, n_classes: int, seed: int = 0, max_iter: int = 500):
        self.n_classes = n_classes
        self.seed = seed
        self.max_iter = max_iter
        self.model = None
        self.only: int | None = None

    def fit(self, x: Any, y: Any) -> "Learner":
        import numpy as np
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        y = np.asarray(y)
        if len(np.unique(y)) < 2:
            self.only, self.model = int(y[0]), None
            return self
        self.only = None
        self.model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=self.max_iter, random_state=self.seed))
        with _one_thread():
            self.model.fit(np.nan_to_num(np.asarray(x, dtype=float)), y)
        return self

    def predict_proba(self, x: Any) -> Any:
        import numpy as np

        out = np.zeros((len(x), self.n_classes))
        if self.model is None:
            out[:, self.only] = 1.0
            return out
        with _one_thread():
            out[:, self.model.classes_] = self.model.predict_proba(np.nan_to_num(np.asarray(x, dtype=float)))
        return out

    def accuracy(self, x: Any, y: Any) -> float:
        import numpy as np

        return float((self.predict_proba(x).argmax(axis=1) == np.asarray(y)).mean())


@dataclass
class Round:
    """One batch: the rows picked (positions in the pool), and the curve point after it."""

    batch: int
    picked: list
    labeled: int
    accuracy: float | None = None


@dataclass
class Loop:
    """Active learning over a pool: ``ask(positions) -> {position: class index}`` is the person
    (or the simulated one); every answered row joins the labeled set."""

    x: Any  # pool features, rows x features
    n_classes: int
    strategy: str = "entropy"
    batch_size: int = 20
    diverse: bool = False
    diversity_pool: int = 5
    seed: int = 0
    labels: dict = field(default_factory=dict)  # position -> class index (the seed labels first)
    rounds: list = field(default_factory=list)
    _fitted: Any = field(default=None, repr=False)  # (labels seen, learner): one fit per batch

    def next_batch(self) -> Any:
        """Positions of the next batch among the unlabeled rows (needs >= 1 label for uncertainty)."""
        import numpy as np

        rng = np.random.default_rng([self.seed, len(self.rounds)])
        unlabeled = np.asarray([i for i in range(len(self.x)) if i not in self.labels], dtype=np.int64)
        if len(unlabeled) == 0:
            return unlabeled
        if self.strategy == "random" or not self.labels:
            return unlabeled[select(np.zeros((len(unlabeled), 1)), self.batch_size, "random", rng)]
        learner = self.learner()
        probs = learner.predict_proba(self.x[unlabeled])
        return unlabeled[select(probs, self.batch_size, self.strategy, rng, self.x[unlabeled], self.diverse,
                                self.diversity_pool)]

    def learner(self) -> Learner:
        """The learner fitted on the labels so far (refitted only when they changed)."""
        import numpy as np

        if self._fitted is not None and self._fitted[0] == len(self.labels):
            return self._fitted[1]
        known = np.asarray(sorted(self.labels), dtype=np.int64)
        learner = Learner(self.n_classes, self.seed).fit(self.x[known], [self.labels[i] for i in known])
        self._fitted = (len(self.labels), learner)
        return learner

    def run(self, batches: int, ask: Callable[[Any], dict], evaluate: Callable[[Learner], float] | None = None) -> list:
        """``batches`` rounds: pick, ask, add; after each, ``evaluate(learner)`` for the curve."""
        if evaluate is not None and self.labels and not self.rounds:
            self.rounds.append(Round(0, [], len(self.labels), evaluate(self.learner())))
        for b in range(batches):
            picked = self.next_batch()
            if len(picked) == 0:
                break
            answers = ask(picked)
            self.labels.update({int(i): int(c) for i, c in answers.items() if c is not None})
            accuracy = evaluate(self.learner()) if evaluate is not None else None
            self.rounds.append(Round(b + 1, [int(i) for i in picked], len(self.labels), accuracy))
        return self.rounds


def labels_to_reach(curve: Sequence[tuple[int, float]], target: float) -> int | None:
    """The first label count at which the curve's accuracy reaches ``target`` (None: never)."""
    for labeled, accuracy in curve:
        if accuracy is not None and accuracy >= target:
            return labeled
    return None
