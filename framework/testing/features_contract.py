"""Conformance kit for preprocessors (recipe key ``features``).

    from framework.testing import PreprocessorContract

    class TestMyPreprocessorContract(PreprocessorContract):
        preprocessor_cls = MyPreprocessor

It fits on :func:`framework.testing.data.cars_splits` (real cars: a string column, missing
numbers, an int and a bool; override ``make_splits``) and checks what the core relies on: the
transform's schema, layout and encoded columns agree; ``transform`` gives finite float32 rows; its
ONNX graph gives the same numbers from the raw feeds (``InputLayout.feeds``), also for a missing
value and a category never seen in training; it is fitted on the train split only; and a table of
numbers that are never missing is left to the model (None) or passes through the same checks.
"""
from __future__ import annotations

from typing import Any, ClassVar

from ..components import DataSplits, FeatureTransform, InputLayout, Preprocessor
from .component_contract import ComponentContract

__all__ = ["PreprocessorContract"]


class PreprocessorContract(ComponentContract):
    """Subclass, set ``preprocessor_cls``; ``make_splits()`` (a typed table) and ``atol`` if needed."""

    kind = "preprocessor"
    component_attr = "preprocessor_cls"
    preprocessor_cls: ClassVar[type[Preprocessor]]
    #: |onnxruntime - transform| tolerance on the encoded rows
    atol: ClassVar[float] = 1e-5

    def make_splits(self) -> DataSplits:
        from .data import cars_splits

        return cars_splits()

    def fitted(self, tmp_path, splits: DataSplits | None = None) -> tuple[Any, DataSplits]:
        splits = splits or self.make_splits()
        transform = self.new_component().fit(splits, self.make_context(tmp_path))
        return transform, splits

    def onnx_rows(self, transform: FeatureTransform, frame: Any) -> Any:
        import onnxruntime as ort

        session = ort.InferenceSession(transform.onnx_graph("encoded", 17), providers=["CPUExecutionProvider"])
        return session.run(["encoded"], transform.layout.feeds(frame))[0]

    def test_fit_returns_a_transform_whose_parts_agree(self, tmp_path):
        transform, splits = self.fitted(tmp_path)
        assert isinstance(transform, FeatureTransform), f"fit() returned {type(transform).__name__} for a typed table"
        assert transform.schema.names == list(splits.dataset.features), "the schema must list the features in order"
        layout = transform.layout
        assert isinstance(layout, InputLayout)
        fed = list(layout.numeric_columns) + list(layout.categorical_columns)
        assert sorted(fed) == sorted(transform.schema.names) and len(fed) == len(set(fed)), \
            f"the layout feeds {fed}: every feature exactly once"
        for spec in transform.schema.features:
            assert (spec.name in layout.categorical_columns) == (spec.dtype == "category"), \
                f"{spec.name} ({spec.dtype}) is in the wrong input"
            if spec.dtype == "category":
                assert spec.categories, f"{spec.name}: a category lists the values seen in training"
        assert len(transform.baseline) == len(transform.schema.features)
        x = transform.transform(splits.test)
        assert x.dtype.name == "float32" and x.shape == (len(splits.test), len(transform.output_names))
        assert (x == x).all() and abs(x).max() < 1e6, "transform() must give finite rows (missing values imputed)"

    def test_onnx_graph_computes_what_transform_computes(self, tmp_path):
        import numpy as np

        transform, splits = self.fitted(tmp_path)
        for part in ("train", "test"):
            frame = getattr(splits, part)
            got, want = self.onnx_rows(transform, frame), transform.transform(frame)
            assert got.shape == want.shape and np.abs(got - want).max() <= self.atol, f"ONNX and transform differ on {part}"
        one = splits.test.head(1)
        assert np.abs(self.onnx_rows(transform, one) - transform.transform(one)).max() <= self.atol, "a batch of one"

    def test_missing_values_and_unseen_categories_are_handled(self, tmp_path):
        import numpy as np

        transform, splits = self.fitted(tmp_path)
        frame = splits.test.head(4).copy()
        for spec in transform.schema.features:
            if spec.nullable:
                frame[spec.name] = frame[spec.name].astype(object)
                frame.loc[frame.index[0], spec.name] = None
            if spec.dtype == "category":
                frame[spec.name] = frame[spec.name].astype(object)
                frame.loc[frame.index[1], spec.name] = "a value never seen in training"
        want = transform.transform(frame)
        assert np.isfinite(want).all(), "a missing value or an unseen category gave non-finite rows"
        assert np.abs(self.onnx_rows(transform, frame) - want).max() <= self.atol

    def test_fitted_on_the_train_split_only(self, tmp_path):
        import numpy as np

        transform, splits = self.fitted(tmp_path)
        other = DataSplits(splits.dataset, splits.train, splits.train.head(0), splits.train.head(0))
        refit, _ = self.fitted(tmp_path / "again", other)
        assert np.array_equal(transform.transform(splits.test), refit.transform(splits.test)), \
            "the fitted preprocessing depends on rows outside the train split"

    def test_numbers_never_missing_are_left_to_the_model_or_encoded_alike(self, tmp_path):
        import numpy as np

        from .data import breast_cancer_splits

        splits = breast_cancer_splits()
        transform = self.new_component().fit(splits, self.make_context(tmp_path))
        if transform is None:
            return  # the model takes the raw float matrix, as before
        got = self.onnx_rows(transform, splits.test)
        assert np.abs(got - transform.transform(splits.test)).max() <= self.atol
