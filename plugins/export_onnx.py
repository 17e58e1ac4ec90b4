"""Exporter ``onnx``: the trained torch module as one ONNX file that outputs class probabilities.

The file takes ``features`` (float32 [batch, n_features], raw values: the module standardizes
itself) and returns ``probabilities`` (float32 [batch, n_classes], softmax of the logits); the
argmax is the index into ``classes``. Before it is handed on, the file is checked with
``onnx.checker`` and run with onnxruntime against torch on the whole test split and on a batch of
one: a difference above ``atol`` fails the stage.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framework import DataSplits, ExportedModel, Exporter, TrainedModel, hookimpl
from framework.errors import RecipeError, StageError

INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"
FILE_NAME = "model.onnx"


def _with_softmax(module):
    """logits -> probabilities, so a server needs no post-processing beyond argmax."""
    import torch

    return torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()


def export_module(module, example, path: Path, opset: int = 17, dynamo: bool = False) -> Path:
    """Write ``module`` (+ softmax) to ``path`` with a dynamic batch dimension."""
    import numpy as np
    import torch

    wrapped = _with_softmax(module)
    example = torch.tensor(np.asarray(example, dtype=np.float32))  # a copy: pandas arrays may be read-only
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_exporter():
        if dynamo:
            if example.shape[0] < 2:
                # torch.export specializes a dimension of size 1 to a constant
                raise ValueError("the dynamo exporter needs an example batch of at least 2 rows")
            torch.onnx.export(
                wrapped, (example,), str(path), dynamo=True, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,  # one self-contained file for the registry and the server
                verbose=False,
            )
        else:
            torch.onnx.export(
                wrapped, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                do_constant_folding=True,
            )
    return path


class _quiet_exporter:
    """Silence the exporters' chatter for one export; the verification below is what counts.

    The TorchScript exporter warns of its deprecation on every call; the dynamo one logs its opset
    18 -> 17 conversion and skipped torchvision ops, and torch.export emits FutureWarnings.
    """

    LOGGERS = ("torch.onnx", "torch.export", "onnxscript")

    def __enter__(self):
        import logging

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        self._levels = {n: logging.getLogger(n).level for n in self.LOGGERS}
        for n in self.LOGGERS:
            logging.getLogger(n).setLevel(logging.ERROR)

    def __exit__(self, *exc):
        import logging

        for n, level in self._levels.items():
            logging.getLogger(n).setLevel(level)
        self._warnings.__exit__(*exc)
        return False


def ort_session(path: Path):
    """A quiet single-threaded CPU onnxruntime session (verification, not throughput)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def verify_onnx(path: Path, module, x, atol: float) -> dict:
    """Compare onnxruntime with torch on ``x`` (all rows, then a batch of one).

    Returns ``max_abs_diff`` (probabilities), ``ort_vs_torch_agreement`` (share of equal argmax)
    and ``ort_probabilities``; raises :class:`StageError` when the difference exceeds ``atol``.
    """
    import numpy as np
    import torch

    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or len(x) == 0:
        raise StageError(f"export (onnx): verification needs a non-empty 2-D batch, got shape {x.shape}")
    with torch.no_grad():
        expected = _with_softmax(module)(torch.tensor(x)).numpy()
    session = ort_session(path)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if got.shape != expected.shape:
        raise StageError(
            f"export (onnx): {path} returns shape {got.shape} for input {x.shape}, torch returns {expected.shape}"
        )
    single = session.run([OUTPUT_NAME], {INPUT_NAME: x[:1]})[0]  # the dynamic batch really is dynamic
    diff = float(max(np.max(np.abs(got - expected)), np.max(np.abs(single - expected[:1]))))
    if not np.isfinite(diff) or diff > atol:
        raise StageError(
            f"export (onnx): onnxruntime and torch disagree: max |probability difference| = {diff:.3g} "
            f"> atol {atol:g} over {len(x)} rows. The exported file {path} does not reproduce the model"
        )
    agreement = float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
    return {"max_abs_diff": diff, "ort_vs_torch_agreement": agreement, "ort_probabilities": got}


class OnnxExporter(Exporter):
    name = "onnx"
    summary = "ONNX file (features -> probabilities), verified with onnxruntime against torch"

    @dataclass
    class Config:
        opset: int = 17
        #: maximal |onnxruntime - torch| probability difference on the test split
        atol: float = 1e-4
        #: the torch.export-based exporter (seconds) instead of the TorchScript one (fractions of one)
        dynamo: bool = False

    def __init__(self, config: Any = None, refs: Any = None):
        super().__init__(config, refs)
        if not 7 <= int(self.config.opset) <= 23:
            raise RecipeError(f"export.opset: {self.config.opset} is outside the supported range 7..23")
        if float(self.config.atol) < 0:
            raise RecipeError(f"export.atol: must be >= 0, got {self.config.atol}")

    def export(self, model: TrainedModel, splits: DataSplits, ctx) -> ExportedModel:
        import numpy as np
        import onnx

        c = self.config
        module = model.module.eval()
        x_test, y_test = splits.arrays("test")
        if len(x_test) == 0:
            raise StageError("export (onnx): the test split is empty; nothing to verify the export with")
        path = Path(ctx.out_dir) / FILE_NAME
        example = x_test[: max(2, min(len(x_test), 8))]
        if len(example) < 2:  # a one-row test split: repeat it, dynamo needs two rows
            example = np.repeat(example, 2, axis=0)
        try:
            export_module(module, example, path, opset=int(c.opset), dynamo=bool(c.dynamo))
            onnx.checker.check_model(str(path))
        except StageError:
            raise
        except Exception as exc:
            raise StageError(f"export (onnx): exporting the model failed (opset {c.opset}, dynamo={c.dynamo}): {exc}") from exc

        check = verify_onnx(path, module, x_test, float(c.atol))
        ort_pred = check["ort_probabilities"].argmax(axis=1)
        metrics = {
            "max_abs_diff": check["max_abs_diff"],
            "onnx_bytes": path.stat().st_size,
            "onnx_test_accuracy": float(np.mean(ort_pred == y_test)),
            "ort_vs_torch_agreement": check["ort_vs_torch_agreement"],
        }
        for key, value in metrics.items():
            ctx.metric(key, value)
        ctx.logger.info(
            "onnx: %s (%d bytes), max |ort - torch| = %.2e, test accuracy %.4f",
            path, metrics["onnx_bytes"], metrics["max_abs_diff"], metrics["onnx_test_accuracy"],
        )
        return ExportedModel(
            path=path,
            format="onnx",
            schema=model.schema,
            classes=list(model.classes),
            input_name=INPUT_NAME,
            output_name=OUTPUT_NAME,
            metrics=metrics,
        )


@hookimpl
def register_exporters():
    return [OnnxExporter]
