"""The batch predictor kit, on a small onnxruntime predictor defined here and on the built-in one."""
from __future__ import annotations

from dataclasses import dataclass

from framework import BatchPredictor, RecipeError
from framework.testing import BatchPredictorContract
from plugins.batch_onnx import OnnxBatchPredictor as BuiltinOnnxBatchPredictor


class OnnxBatchPredictor(BatchPredictor):
    """The exported model over a table in fixed-size batches; one predicted class per row."""

    name = "onnx_batches"
    summary = "onnxruntime over the table in batches"

    @dataclass
    class Config:
        batch_size: int = 64

    @classmethod
    def check_config(cls, config, key, refs=None):
        if config.batch_size < 1:
            raise RecipeError(f"{key}.batch_size: must be >= 1, got {config.batch_size}")

    def predict(self, model, frame, ctx):
        import numpy as np
        import onnxruntime as ort
        import pandas as pd

        session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
        x = frame[model.schema.names].to_numpy(dtype=np.float32)
        labels = []
        for start in range(0, len(x), self.config.batch_size):
            probabilities = session.run([model.output_name], {model.input_name: x[start:start + self.config.batch_size]})[0]
            labels.extend(model.classes[i] for i in probabilities.argmax(axis=1))
        predictions = pd.Series(labels, index=frame.index, name="prediction")
        predictions.to_csv(ctx.out_dir / "predictions.csv")
        return predictions


class TestOnnxBatchPredictorContract(BatchPredictorContract):
    predictor_cls = OnnxBatchPredictor

    def make_config(self):
        return OnnxBatchPredictor.Config(batch_size=16)  # the 86 test rows span several batches

    def invalid_config(self):
        return OnnxBatchPredictor.Config(batch_size=0)


class TestBuiltinOnnxBatchPredictorContract(BatchPredictorContract):
    predictor_cls = BuiltinOnnxBatchPredictor

    def make_config(self):
        return BuiltinOnnxBatchPredictor.Config(batch_size=16)

    def invalid_config(self):
        return BuiltinOnnxBatchPredictor.Config(batch_size=0)
