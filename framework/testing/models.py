"""Small real models for kits and plugin tests: a trained classifier and its ONNX export.

A kit whose component consumes a model (compressor, exporter, batch predictor) gets its input from
here unless the author's subclass supplies one. torch is imported inside the functions: importing
:mod:`framework.testing` stays cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..components import DataSplits, ExportedModel, FeatureSpec, InputSchema, TrainedModel

#: tensor names of the exported file, as the built-in ``onnx`` exporter names them
INPUT_NAME = "features"
OUTPUT_NAME = "probabilities"


def schema_of(splits: DataSplits) -> InputSchema:
    return InputSchema([FeatureSpec(name, "float") for name in splits.dataset.features])


def tiny_classifier(splits: DataSplits, epochs: int = 20, hidden: int = 16, seed: int = 0) -> TrainedModel:
    """A standardizing one-hidden-layer MLP trained full-batch in this process (a fraction of a
    second on a few hundred rows): raw float32 features [batch, n] -> class logits."""
    import numpy as np
    import torch

    from .torch_modules import TinyClassifier

    torch.manual_seed(seed)
    x, y = splits.arrays("train")
    classes = list(splits.dataset.classes or [])
    module = TinyClassifier(x.shape[1], len(classes), hidden, x.mean(axis=0), x.std(axis=0) + 1e-6)
    optimizer = torch.optim.Adam(module.parameters(), lr=0.02)
    xt, yt = torch.tensor(x), torch.tensor(y)
    for _ in range(epochs):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(xt), yt).backward()
        optimizer.step()
    module.eval()
    x_test, y_test = splits.arrays("test")
    with torch.no_grad():
        accuracy = float(np.mean(module(torch.tensor(x_test)).argmax(dim=1).numpy() == y_test))
    return TrainedModel(module=module, schema=schema_of(splits), classes=classes,
                        metrics={"test_accuracy": accuracy}, hyperparameters={"hidden": hidden, "epochs": epochs})


def export_probabilities(model: TrainedModel, example: Any, path: Path) -> ExportedModel:
    """``model.module`` followed by a softmax as one ONNX file (dynamic batch), as the built-in
    exporter writes it: ``features`` float32 [batch, n] -> ``probabilities`` [batch, classes]."""
    import warnings

    import numpy as np
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapped = torch.nn.Sequential(model.module, torch.nn.Softmax(dim=1)).eval()
    example = torch.tensor(np.array(example, dtype=np.float32))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter announces its deprecation
        torch.onnx.export(wrapped, (example,), str(path), dynamo=False, opset_version=17,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    return ExportedModel(path=path, format="onnx", schema=model.schema, classes=list(model.classes),
                         input_name=INPUT_NAME, output_name=OUTPUT_NAME)


def onnx_session(path_or_bytes: Any) -> Any:
    """A quiet one-thread CPU onnxruntime session."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = str(path_or_bytes) if isinstance(path_or_bytes, Path) else path_or_bytes
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def module_outputs(module: Any, x: Any) -> Any:
    """``module`` (in eval mode) on numpy rows, as a float32 numpy array."""
    import numpy as np
    import torch

    with torch.no_grad():
        return module.eval()(torch.tensor(np.ascontiguousarray(x, dtype=np.float32))).numpy()
