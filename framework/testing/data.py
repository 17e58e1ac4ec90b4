"""Small real datasets as DataSplits, for plugin tests (ours and third parties')."""
from __future__ import annotations

from ..components import DataSplits, Dataset


def breast_cancer_splits(seed: int = 42) -> DataSplits:
    """scikit-learn's breast cancer table, 70/15/15 stratified; string class labels
    ("malignant", "benign") so a plugin's class mapping is exercised."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    raw = load_breast_cancer(as_frame=True)
    classes = [str(c) for c in raw.target_names]
    frame = raw.frame.rename(columns={"target": "diagnosis"})
    frame["diagnosis"] = [classes[i] for i in frame["diagnosis"]]
    dataset = Dataset("breast_cancer", frame, [str(c) for c in raw.feature_names], "diagnosis", classes=classes)
    train, rest = train_test_split(frame, test_size=0.3, stratify=frame["diagnosis"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["diagnosis"], random_state=seed)
    return DataSplits(dataset, train, val, test)


def digits_splits(seed: int = 42) -> DataSplits:
    """scikit-learn's 8x8 digits (1797 images as 64 pixel columns, 10 classes), 70/15/15 stratified."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    raw = load_digits(as_frame=True)
    frame = raw.frame
    features = [str(c) for c in raw.feature_names]
    dataset = Dataset("digits", frame, features, "target", classes=list(range(10)))
    train, rest = train_test_split(frame, test_size=0.3, stratify=frame["target"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["target"], random_state=seed)
    return DataSplits(dataset, train, val, test)
