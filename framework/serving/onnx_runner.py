"""One ONNX model in-process: an onnxruntime session built from bytes, returning probabilities
(or a regression's values)."""
from __future__ import annotations

import numpy as np

from ..errors import ServingError
from .types import ServedModel

_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64}


def make_session(onnx_bytes: bytes):
    """A single-threaded CPU session: replicas share 2 cores, so ORT's own pools would oversubscribe."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, sess_options=opts, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """Runs one ServedModel; ``predict(x float32 [n, f]) -> probabilities float32 [n, classes]``.

    A model of typed inputs takes its feeds (``{input name: array}``, see ``InputLayout``)
    instead of ``x``; a regression returns its values, float32 [n, 1]."""

    def __init__(self, model: ServedModel):
        where = f"serve.models.{model.arm} (version {model.version})"
        try:
            self.session = make_session(model.onnx_bytes)
        except Exception as exc:
            raise ServingError(f"{where}: onnxruntime cannot load the model: {exc}") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.regression = getattr(model, "task", "classification") == "regression"
        self.outputs = [model.output_name]
        self.n_features = len(model.schema.features)
        self.n_classes = 1 if self.regression else len(model.classes)
        self.classes = np.asarray([_plain(c) for c in model.classes], dtype=object)
        self.layout = getattr(model, "inputs", None)
        if model.output_name not in outputs:
            raise ServingError(f"{where}: the ONNX model has no output '{model.output_name}' (outputs: {outputs})")
        if self.layout is not None:  # typed raw rows: a float and / or a string input
            wanted = {self.layout.numeric: "tensor(float)", self.layout.categorical: "tensor(string)"}
            for name, kind in wanted.items():
                if name is not None and (name not in inputs or inputs[name].type != kind):
                    found = {i: v.type for i, v in inputs.items()}
                    raise ServingError(f"{where}: the ONNX model has no {kind} input '{name}' (inputs: {found})")
            self.batch_one = False
            self.input_name = model.input_name
            self.softmax = self._decide_softmax(model.output, where)
            return
        if model.input_name not in inputs:
            raise ServingError(f"{where}: the ONNX model has no input '{model.input_name}' (inputs: {list(inputs)})")
        if model.output_name not in outputs:
            raise ServingError(f"{where}: the ONNX model has no output '{model.output_name}' (outputs: {outputs})")
        spec = inputs[model.input_name]
        self.dtype = _ORT_DTYPES.get(spec.type)
        if self.dtype is None:
            raise ServingError(f"{where}: input '{model.input_name}' is {spec.type}; only float tensors are served")
        # A model exported with a fixed batch of 1 is run row by row instead of failing on batches.
        self.batch_one = bool(spec.shape) and spec.shape[0] == 1
        self.input_name = model.input_name
        self.softmax = self._decide_softmax(model.output, where)

    def raw(self, x: np.ndarray | dict) -> np.ndarray:
        if type(x) is dict:  # a model of typed inputs: its feeds as they are
            return self.session.run(self.outputs, x)[0]
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        if self.batch_one and len(x) > 1:
            return np.concatenate([self.session.run(self.outputs, {self.input_name: x[i : i + 1]})[0] for i in range(len(x))])
        return self.session.run(self.outputs, {self.input_name: x})[0]

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.raw(x)
        if self.softmax:
            out = out - out.max(axis=1, keepdims=True)
            np.exp(out, out=out)
            out /= out.sum(axis=1, keepdims=True)
        return out

    def labels(self, probabilities: np.ndarray) -> list:
        if self.regression:  # the predicted values, as JSON numbers
            return probabilities[:, 0].astype(np.float64).tolist()
        return self.classes[probabilities.argmax(axis=1)].tolist()

    def _probe(self) -> np.ndarray | dict:
        """Four rows of the model's input: random numbers, missing categories."""
        if self.layout is None:
            return np.random.default_rng(0).normal(size=(4, self.n_features)).astype(np.float32)
        feeds = {}
        if self.layout.numeric:
            feeds[self.layout.numeric] = np.random.default_rng(0).normal(
                size=(4, len(self.layout.numeric_columns))).astype(np.float32)
        if self.layout.categorical:
            feeds[self.layout.categorical] = np.full((4, len(self.layout.categorical_columns)),
                                                     self.layout.missing_token, dtype=object)
        return feeds

    def _decide_softmax(self, output: str, where: str) -> bool:
        try:
            out = np.asarray(self.raw(self._probe()))
        except Exception as exc:
            raise ServingError(
                f"{where}: a probe batch of 4 rows of the schema's {self.n_features} features failed: {exc}"
            ) from None
        if out.ndim != 2 or out.shape != (4, self.n_classes):
            raise ServingError(
                f"{where}: output '{self.outputs[0]}' has shape {list(out.shape[1:])} per batch, expected "
                f"[{self.n_classes}] ({'one value per row: a regression' if self.regression else 'one score per class'})"
            )
        if self.regression:
            return False
        if output == "probabilities":
            return False
        if output == "logits":
            return True
        if output != "auto":
            raise ServingError(f"{where}: output must be 'probabilities', 'logits' or 'auto', got {output!r}")
        # Decided once here, never per request: rows of non-negative scores summing to 1 are
        # probabilities; anything else is treated as logits.
        is_prob = bool((out >= 0).all() and (out <= 1).all() and np.allclose(out.sum(axis=1), 1.0, atol=1e-4))
        return not is_prob


def _plain(value):
    """numpy scalars -> Python values, so labels serialise to JSON."""
    return value.item() if hasattr(value, "item") else value
