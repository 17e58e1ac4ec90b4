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


def cars_splits(seed: int = 42) -> DataSplits:
    """vega_datasets' cars (406 real cars of 1970-1982, read from the installed package): a typed
    table with a string column (``Make``, the first word of the name, misspellings included),
    missing numbers (``Horsepower``, ``Miles_per_Gallon``), an int (``Cylinders``) and a bool
    (``Heavy``: over 3500 lbs); target ``Origin``. 70/15/15 stratified."""
    import importlib.resources
    import json

    import pandas as pd
    from sklearn.model_selection import train_test_split

    from ..components import infer_feature, InputSchema

    records = json.loads((importlib.resources.files("vega_datasets") / "_data" / "cars.json").read_text(encoding="utf-8"))
    frame = pd.DataFrame.from_records(records)
    frame["Make"] = frame["Name"].str.split().str[0].str.lower()
    frame["Heavy"] = frame["Weight_in_lbs"] > 3500
    frame["Cylinders"] = frame["Cylinders"].astype("int64")
    features = ["Make", "Cylinders", "Displacement", "Horsepower", "Miles_per_Gallon", "Acceleration", "Heavy"]
    frame = frame[features + ["Origin"]]
    schema = InputSchema([infer_feature(f, frame[f]) for f in features])
    dataset = Dataset("cars", frame, features, "Origin", classes=sorted(frame["Origin"].unique()), schema=schema)
    train, rest = train_test_split(frame, test_size=0.3, stratify=frame["Origin"], random_state=seed)
    val, test = train_test_split(rest, test_size=0.5, stratify=rest["Origin"], random_state=seed)
    return DataSplits(dataset, train, val, test)
