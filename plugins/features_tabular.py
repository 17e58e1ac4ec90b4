"""Preprocessor ``tabular``: imputation, missing indicators, one-hot encoding with an unknown
bucket and scaling, fitted with scikit-learn on the train split only, exported as ONNX.

Raw rows reach the model through two inputs (``framework.InputLayout``):

* ``numeric`` float32 [batch, k]: float, int and bool features (bools as 0/1), NaN where missing.
  Each column is imputed with its training median (or mean), scaled with the training mean and
  spread (``StandardScaler``), and a nullable column gets a 0/1 "is missing" indicator column;
* ``categorical`` string [batch, m]: category features, ``__missing__`` where missing. Each is
  one-hot encoded (``OneHotEncoder(handle_unknown="ignore")``): a value not seen in training is
  all zeros, the unknown bucket; a missing value is its own category when training had some.

``transform`` (numpy, what the trainer sees) and ``onnx_graph`` (what is served) compute the same
float32 numbers: the numeric part is the same three float32 operations (where, subtract, divide)
in both; the categorical part is scikit-learn's encoder and its skl2onnx conversion. When every
feature is a number that is never missing, ``fit`` returns None: the model takes the raw matrix
as it always did (its own standardization inside), and the exported graph stays as it was.

scikit-learn, skl2onnx and onnx are imported inside the methods: the core imports every plugin
at start-up.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from framework import FeatureSpec, FeatureTransform, InputLayout, InputSchema, Preprocessor, hookimpl
from framework.components import UNKNOWN_CATEGORIES
from framework.errors import RecipeError, StageError

NUMERIC_INPUT = "numeric"
CATEGORICAL_INPUT = "categorical"
IMPUTE = ("median", "mean")


class TabularTransform(FeatureTransform):
    """The fitted preprocessing (plain numpy arrays and a fitted OneHotEncoder; pickles)."""

    def __init__(self, schema: InputSchema, layout: InputLayout, fill: Any, mean: Any, scale: Any,
                 indicators: list[int], encoder: Any, baseline: list):
        import numpy as np

        self.schema = schema
        self.layout = layout
        self.fill = np.asarray(fill, dtype=np.float32)  # per numeric column: what a missing value becomes
        self.mean = np.asarray(mean, dtype=np.float32)
        self.scale = np.asarray(scale, dtype=np.float32)
        self.indicators = list(indicators)  # numeric columns (indices) that get an "is missing" column
        self.encoder = encoder
        self.baseline = baseline
        names = [*layout.numeric_columns, *(f"{layout.numeric_columns[i]} is missing" for i in self.indicators)]
        if encoder is not None:
            for column, values in zip(layout.categorical_columns, encoder.categories_):
                names += [f"{column}={v}" for v in values]
        self.output_names = names

    def transform(self, frame: Any) -> Any:
        import numpy as np

        feeds = self.layout.feeds(frame)
        parts = []
        if self.layout.numeric:
            x = feeds[self.layout.numeric]
            missing = np.isnan(x)
            parts.append((np.where(missing, self.fill, x) - self.mean) / self.scale)
            if self.indicators:
                parts.append(missing[:, self.indicators].astype(np.float32))
        if self.layout.categorical:
            parts.append(self.encoder.transform(feeds[self.layout.categorical]).astype(np.float32))
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def onnx_graph(self, output_name: str, opset: int) -> bytes:
        import numpy as np
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        nodes, initializers, inputs, parts = [], [], [], []
        opsets = {"": int(opset)}
        if self.layout.numeric:
            k = len(self.layout.numeric_columns)
            inputs.append(helper.make_tensor_value_info(self.layout.numeric, TensorProto.FLOAT, ["batch", k]))
            for name, value in (("pre_fill", self.fill), ("pre_mean", self.mean), ("pre_scale", self.scale)):
                initializers.append(numpy_helper.from_array(value.reshape(1, k), name))
            nodes += [
                helper.make_node("IsNaN", [self.layout.numeric], ["pre_missing"]),
                helper.make_node("Where", ["pre_missing", "pre_fill", self.layout.numeric], ["pre_imputed"]),
                helper.make_node("Sub", ["pre_imputed", "pre_mean"], ["pre_centered"]),
                helper.make_node("Div", ["pre_centered", "pre_scale"], ["pre_scaled"]),
            ]
            parts.append("pre_scaled")
            if self.indicators:
                initializers.append(numpy_helper.from_array(np.asarray(self.indicators, dtype=np.int64), "pre_indicator_columns"))
                nodes += [
                    helper.make_node("Gather", ["pre_missing", "pre_indicator_columns"], ["pre_missing_some"], axis=1),
                    helper.make_node("Cast", ["pre_missing_some"], ["pre_indicators"], to=TensorProto.FLOAT),
                ]
                parts.append("pre_indicators")
        if self.layout.categorical:
            encoded = self._encoder_graph(opset)
            m = len(self.layout.categorical_columns)
            inputs.append(helper.make_tensor_value_info(self.layout.categorical, TensorProto.STRING, ["batch", m]))
            nodes += list(encoded.graph.node)
            initializers += list(encoded.graph.initializer)
            for entry in encoded.opset_import:
                if entry.domain:
                    opsets[entry.domain] = entry.version
            parts.append(encoded.graph.output[0].name)
        nodes.append(helper.make_node("Concat", parts, [output_name], axis=1))
        output = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", len(self.output_names)])
        graph = helper.make_graph(nodes, "preprocessing", inputs, [output], initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                                  producer_name="framework.features_tabular")
        onnx.checker.check_model(model)
        return model.SerializeToString()

    def _encoder_graph(self, opset: int) -> Any:
        """The OneHotEncoder as skl2onnx converts it, every name but the input prefixed."""
        import onnx.compose
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import StringTensorType

        m = len(self.layout.categorical_columns)
        converted = to_onnx(self.encoder, initial_types=[(self.layout.categorical, StringTensorType([None, m]))],
                            target_opset={"": int(opset), "ai.onnx.ml": 1})
        return onnx.compose.add_prefix(converted, "pre_onehot_", rename_inputs=False)


class TabularPreprocessor(Preprocessor):
    name = "tabular"
    summary = "imputation (+ missing indicators), one-hot categories with an unknown bucket, scaling; scikit-learn, inside the ONNX file"

    @dataclass
    class Config:
        #: what a missing number becomes: the training "median" or "mean" of its column
        impute: str = "median"
        #: a 0/1 "is missing" column for every nullable number
        missing_indicators: bool = True
        #: standardize numbers with the training mean and spread
        scale: bool = True
        #: "accept": a category not seen in training is the unknown bucket; "refuse": a request
        #: carrying one gets a 4xx naming the field and the known values
        unknown_categories: str = "accept"

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        if config.impute not in IMPUTE:
            raise RecipeError(f"{key}.impute: use {' or '.join(IMPUTE)}; got '{config.impute}'")
        if config.unknown_categories not in UNKNOWN_CATEGORIES:
            raise RecipeError(f"{key}.unknown_categories: use {' or '.join(UNKNOWN_CATEGORIES)}; "
                              f"got '{config.unknown_categories}'")

    def fit(self, splits, ctx) -> TabularTransform | None:
        import numpy as np

        dataset = splits.dataset
        schema = dataset.inferred_schema()
        if schema.all_numeric:
            return None
        c = self.config
        numeric = [f for f in schema.features if f.dtype != "category"]
        categorical = [f for f in schema.features if f.dtype == "category"]
        layout = InputLayout(
            numeric=NUMERIC_INPUT if numeric else None, numeric_columns=[f.name for f in numeric],
            categorical=CATEGORICAL_INPUT if categorical else None, categorical_columns=[f.name for f in categorical],
            unknown_categories=c.unknown_categories,
        )
        train = splits.train
        if len(train) == 0:
            raise StageError("features (tabular): the train split is empty; nothing to fit the preprocessing on")
        # fitted on exactly the arrays a server feeds: one code path from raw values to feeds
        feeds = layout.feeds(train)
        baseline: dict[str, Any] = {}
        fill = mean = scale = np.zeros(0, dtype=np.float32)
        indicators: list[int] = []
        if numeric:
            x = feeds[NUMERIC_INPUT].astype(np.float64)
            present = ~np.isnan(x)
            with np.errstate(invalid="ignore"), _quiet_all_nan():
                center = np.nanmedian(x, axis=0) if c.impute == "median" else np.nanmean(x, axis=0)
                means = np.nanmean(x, axis=0)
            fill = np.where(np.isfinite(center), center, 0.0)  # a column never seen: 0
            imputed = np.where(present, x, fill)
            if c.scale:
                from sklearn.preprocessing import StandardScaler

                scaler = StandardScaler().fit(imputed)
                mean, scale = scaler.mean_, scaler.scale_  # a constant column gets scale 1
            else:
                mean, scale = np.zeros(len(numeric)), np.ones(len(numeric))
            if c.missing_indicators:
                indicators = [i for i, f in enumerate(numeric) if f.nullable]
            for i, f in enumerate(numeric):
                values = x[present[:, i], i]
                if f.dtype == "bool":
                    baseline[f.name] = bool(values.mean() >= 0.5) if len(values) else False
                else:
                    baseline[f.name] = float(means[i]) if np.isfinite(means[i]) else 0.0
        encoder = None
        typed: dict[str, FeatureSpec] = {f.name: FeatureSpec(f.name, f.dtype, f.nullable, f.categories) for f in numeric}
        if categorical:
            from sklearn.preprocessing import OneHotEncoder

            strings = feeds[CATEGORICAL_INPUT]
            encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False, dtype=np.float32).fit(strings)
            for j, f in enumerate(categorical):
                seen = [str(v) for v in encoder.categories_[j] if v != layout.missing_token]
                typed[f.name] = FeatureSpec(f.name, "category", f.nullable, seen)
                values, counts = np.unique(strings[:, j][strings[:, j] != layout.missing_token], return_counts=True)
                baseline[f.name] = str(values[counts.argmax()]) if len(values) else layout.missing_token
        raw = InputSchema([typed[f.name] for f in schema.features])
        transform = TabularTransform(raw, layout, fill, mean, scale, indicators, encoder,
                                     [baseline[f.name] for f in schema.features])
        ctx.logger.info("features (tabular): %d numeric (%d with missing-value indicators), %d categorical -> %d columns",
                        len(numeric), len(indicators), len(categorical), len(transform.output_names))
        return transform


class _quiet_all_nan:
    """nanmedian / nanmean warn about an all-missing column; it is handled (filled with 0)."""

    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


@hookimpl
def register_preprocessors():
    return [TabularPreprocessor]
