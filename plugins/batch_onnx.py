"""Batch predictor ``onnx``: the run's exported ONNX file over a table, in batches, in-process.

The rows are fed as the model takes them (``ExportedModel.layout.feeds``): one float matrix, or,
for a model with the preprocessing merged in, the raw typed rows (strings, missing values), the
very feeds the server builds from JSON, so batch answers are the served answers. Returns one
prediction per row (a class, or a regression's number) on the frame's index and writes
``predictions.csv`` into the stage folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from framework import BatchConfig, BatchPredictor, hookimpl
from framework.components import check_batch_config
from framework.errors import RecipeError


class OnnxBatchPredictor(BatchPredictor):
    name = "onnx"
    summary = "the exported ONNX file over a table in batches (raw typed rows as served), in-process"

    @dataclass
    class Config(BatchConfig):
        #: rows per onnxruntime call
        batch_size: int = 1024

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        check_batch_config(config, key)
        if int(config.batch_size) < 1:
            raise RecipeError(f"{key}.batch_size: must be >= 1, got {config.batch_size}")

    def predict(self, model, frame, ctx):
        import onnxruntime as ort
        import pandas as pd

        session = ort.InferenceSession(str(model.path), providers=["CPUExecutionProvider"])
        layout, size = model.layout, int(self.config.batch_size)
        regression = getattr(model, "task", "classification") == "regression"
        predictions: list = []
        for start in range(0, len(frame), size):
            out = session.run([model.output_name], layout.feeds(frame.iloc[start:start + size]))[0]
            predictions += [float(v) for v in out[:, 0]] if regression else [model.classes[i] for i in out.argmax(axis=1)]
        result = pd.Series(predictions, index=frame.index, name="prediction")
        result.to_csv(ctx.out_dir / "predictions.csv")
        ctx.metric("rows", len(result))
        return result


@hookimpl
def register_batch_predictors():
    return [OnnxBatchPredictor]
