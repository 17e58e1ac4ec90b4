"""Exporter ``onnx``: the trained torch module as one ONNX file that outputs class probabilities
(classification, ranking) or the predicted value (regression).

The module's graph takes ``features`` (float32 [batch, n], raw values: the module standardizes
itself) and returns ``probabilities`` (float32 [batch, n_classes], softmax of the logits; the
argmax is the index into ``classes``) or, for a regression, ``prediction`` (float32 [batch, 1], in
the target's units). When the run fitted preprocessing (``DataSplits.features``: typed features,
missing values, categories), its ONNX graph is merged in front (``onnx.compose.merge_models``):
the one file then takes the raw rows through the inputs of ``ExportedModel.inputs`` (a float
matrix of the numbers with NaN for missing, a string matrix of the categories), so the server,
batch prediction and a device run the very same preprocessing. Before it is handed on, the file
is checked with ``onnx.checker`` and run with onnxruntime against torch (on the transformed rows)
on the whole test split and on a batch of one: a difference above ``atol`` fails the stage.
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
#: a regression's output: the predicted value [batch, 1]
PREDICTION_NAME = "prediction"
FILE_NAME = "model.onnx"
#: the model's graph alone (before the preprocessing is merged in front), kept for comparisons
BARE_FILE_NAME = "model.bare.onnx"


def _with_softmax(module):
    """logits -> probabilities, so a server needs no post-processing beyond argmax."""
    import torch

    return torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()


def _head(module, task: str):
    """What the file computes: probabilities of the classes, or a regression's value as it is."""
    return module.eval() if task == "regression" else _with_softmax(module)


def output_name(task: str) -> str:
    return PREDICTION_NAME if task == "regression" else OUTPUT_NAME


def export_module(module, example, path: Path, opset: int = 17, dynamo: bool = False,
                  task: str = "classification") -> Path:
    """Write ``module`` (+ softmax unless a regression) to ``path`` with a dynamic batch dimension."""
    import numpy as np
    import torch

    wrapped = _head(module, task)
    out_name = output_name(task)
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
                input_names=[INPUT_NAME], output_names=[out_name],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,  # one self-contained file for the registry and the server
                verbose=False,
            )
        else:
            torch.onnx.export(
                wrapped, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[out_name],
                dynamic_axes={INPUT_NAME: {0: "batch"}, out_name: {0: "batch"}},
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


def verify_onnx(path: Path, module, x, atol: float, task: str = "classification", feeds: dict | None = None) -> dict:
    """Compare onnxruntime with torch on ``x`` (all rows, then a batch of one). ``feeds``: what
    the file takes for those rows when it is not ``x`` itself (raw typed rows that the merged
    preprocessing turns into ``x``).

    Returns ``max_abs_diff`` (probabilities; a regression's difference relative to the value,
    at least 1), ``ort_vs_torch_agreement`` (share of equal argmax; a regression: 1.0) and
    ``ort_probabilities`` (the file's outputs); raises :class:`StageError` when the difference
    exceeds ``atol``.
    """
    import numpy as np
    import torch

    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2 or len(x) == 0:
        raise StageError(f"export (onnx): verification needs a non-empty 2-D batch, got shape {x.shape}")
    with torch.no_grad():
        expected = _head(module, task)(torch.tensor(x)).numpy()
    feeds = feeds if feeds is not None else {INPUT_NAME: x}
    session = ort_session(path)
    name = output_name(task)
    got = session.run([name], feeds)[0]
    if got.shape != expected.shape:
        raise StageError(
            f"export (onnx): {path} returns shape {got.shape} for input {x.shape}, torch returns {expected.shape}"
        )
    single = session.run([name], {k: v[:1] for k, v in feeds.items()})[0]  # the dynamic batch really is dynamic
    scale = np.maximum(1.0, np.abs(expected)) if task == "regression" else 1.0
    diff = float(max(np.max(np.abs(got - expected) / scale), np.max(np.abs(single - expected[:1]) / scale[:1]
                                                                         if task == "regression" else np.abs(single - expected[:1]))))
    if not np.isfinite(diff) or diff > atol:
        raise StageError(
            f"export (onnx): onnxruntime and torch disagree: max |{'relative prediction' if task == 'regression' else 'probability'} "
            f"difference| = {diff:.3g} > atol {atol:g} over {len(x)} rows. The exported file {path} does not reproduce the model"
        )
    agreement = 1.0 if task == "regression" else float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))
    return {"max_abs_diff": diff, "ort_vs_torch_agreement": agreement, "ort_probabilities": got}


def merge_preprocessing(model_path: Path, transform, out_path: Path) -> Path:
    """One ONNX file: the fitted preprocessing's graph (raw typed inputs -> encoded rows) in
    front of the model's graph (``features`` -> output)."""
    import onnx
    import onnx.compose

    model = onnx.load(str(model_path))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    pre = onnx.load_from_string(transform.onnx_graph(ENCODED_NAME, opset))
    pre.ir_version = model.ir_version
    merged = onnx.compose.merge_models(pre, model, io_map=[(ENCODED_NAME, INPUT_NAME)],
                                       producer_name="framework.export_onnx", doc_string="preprocessing + model")
    # one entry per domain: merge_models keeps "" and "ai.onnx" spellings of the default one side
    # by side, which onnxruntime's quantization tools refuse
    versions: dict[str, int] = {}
    for entry in merged.opset_import:
        domain = "" if entry.domain in ("", "ai.onnx") else entry.domain
        versions[domain] = max(versions.get(domain, 0), entry.version)
    del merged.opset_import[:]
    merged.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out_path))
    return Path(out_path)


#: the preprocessing graph's output, merged into the model's ``features`` input
ENCODED_NAME = "encoded"


class OnnxExporter(Exporter):
    name = "onnx"
    summary = "ONNX file (raw rows -> probabilities or a regression's value; preprocessing merged in), verified against torch"
    tasks = ("classification", "regression", "ranking")

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
        task = getattr(model, "task", "classification")
        x_test, y_test = splits.arrays("test")
        if len(x_test) == 0:
            raise StageError("export (onnx): the test split is empty; nothing to verify the export with")
        transform = splits.features
        path = Path(ctx.out_dir) / FILE_NAME
        bare = Path(ctx.out_dir) / BARE_FILE_NAME if transform is not None else path
        example = x_test[: max(2, min(len(x_test), 8))]
        if len(example) < 2:  # a one-row test split: repeat it, dynamo needs two rows
            example = np.repeat(example, 2, axis=0)
        try:
            export_module(module, example, bare, opset=int(c.opset), dynamo=bool(c.dynamo), task=task)
            onnx.checker.check_model(str(bare))
            if transform is not None:
                merge_preprocessing(bare, transform, path)
        except StageError:
            raise
        except Exception as exc:
            raise StageError(f"export (onnx): exporting the model failed (opset {c.opset}, dynamo={c.dynamo}): {exc}") from exc

        # the file against torch on the same rows: raw typed rows in, when the preprocessing is merged
        feeds = transform.layout.feeds(splits.test) if transform is not None else None
        check = verify_onnx(path, module, x_test, float(c.atol), task, feeds)
        metrics = {
            "max_abs_diff": check["max_abs_diff"],
            "onnx_bytes": path.stat().st_size,
            "ort_vs_torch_agreement": check["ort_vs_torch_agreement"],
        }
        if task == "regression":
            from framework.metrics import regression_metrics

            metrics["onnx_test_r2"] = regression_metrics(y_test, check["ort_probabilities"])["r2"]
        else:
            metrics["onnx_test_accuracy"] = float(np.mean(check["ort_probabilities"].argmax(axis=1) == y_test))
        if transform is not None:
            metrics["onnx_bare_bytes"] = bare.stat().st_size
        for key, value in metrics.items():
            ctx.metric(key, value)
        ctx.logger.info(
            "onnx: %s (%d bytes), max |ort - torch| = %.2e, test %s %.4f",
            path, metrics["onnx_bytes"], metrics["max_abs_diff"], "r2" if task == "regression" else "accuracy",
            metrics.get("onnx_test_r2", metrics.get("onnx_test_accuracy")),
        )
        layout = transform.layout if transform is not None else None
        return ExportedModel(
            path=path,
            format="onnx",
            schema=model.schema,
            classes=list(model.classes),
            input_name=layout.input_names[0] if layout is not None else INPUT_NAME,
            output_name=output_name(task),
            metrics=metrics,
            inputs=layout,
            task=task,
        )


@hookimpl
def register_exporters():
    return [OnnxExporter]
