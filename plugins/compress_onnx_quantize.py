"""Compressors ``int8_dynamic``, ``int8_static`` and ``fp16``: smaller ONNX files, same contract.

All three work on the exported file (``level = "onnx"``) with onnxruntime's own tools and keep
the serving contract: input ``features`` float32 [batch, n], output ``probabilities`` float32.

- ``int8_dynamic``: weights stored as int8, activations quantized at run time (no data needed).
- ``int8_static``: weights and activations int8, activation ranges calibrated on training rows.
- ``fp16``: float16 weights; with ``mode: full`` also float16 arithmetic.

Each result is checked with ``onnx.checker``, run with onnxruntime on the test split next to the
input model, and timed against it on one thread: the returned metrics say how much smaller, how
accurate and how fast it is, and ``slower_than_input`` says so when it does not pay off on this
CPU (small models often lose: quantizing activations costs more than the int8 matmul saves).

Importing this module is cheap: onnx and onnxruntime are imported inside functions.
"""
from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

from framework import Compressor, DataSplits, ExportedModel, hookimpl
from framework.errors import RecipeError, StageError

FILE_NAME = "model.onnx"
#: batch sizes ``measure`` times: one request, and a micro-batch as the serving batcher builds it
LATENCY_BATCHES = (1, 64)
#: a compressed model counts as slower when its p50 is this much above the input's; below it,
#: the difference is timer noise on a shared CPU
SLOWER_TOLERANCE = 1.05
#: ops left in float by static quantization: rounding probabilities to 1/256 steps changes the
#: served output (and can tie the argmax) while saving nothing worth having
FLOAT_OUTPUT_OPS = ("Softmax", "Sigmoid", "LogSoftmax")

WEIGHT_TYPES = ("qint8", "quint8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
QUANT_FORMATS = ("qdq", "qoperator")
FP16_MODES = ("weights", "full")


# ---------------------------------------------------------------------------------------------
# Measuring a model (also used by benchmarks/quantization.py)
# ---------------------------------------------------------------------------------------------
def session(onnx_path_or_bytes: Any):
    """A quiet onnxruntime CPU session on ONE thread (intra and inter op), from a path or bytes."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    source = onnx_path_or_bytes if isinstance(onnx_path_or_bytes, (bytes, bytearray)) else str(onnx_path_or_bytes)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _size(onnx_path_or_bytes: Any) -> int:
    if isinstance(onnx_path_or_bytes, (bytes, bytearray)):
        return len(onnx_path_or_bytes)
    return Path(onnx_path_or_bytes).stat().st_size


def _batch(x, size: int):
    """``size`` rows of ``x`` (repeated when ``x`` has fewer), contiguous float32; a dict of feeds
    (a model of typed inputs): ``size`` rows of each."""
    import numpy as np

    if isinstance(x, dict):
        return {name: np.resize(a, (size, a.shape[1])) if a.dtype == object else _batch(a, size) for name, a in x.items()}
    return np.ascontiguousarray(np.resize(np.asarray(x, dtype=np.float32), (size, x.shape[1])))


def latencies(sess, x, batch: int, runs: int = 200, warmup: int = 10) -> list[float]:
    """Wall-clock milliseconds of ``runs`` calls of ``sess`` on a batch of ``batch`` rows (``x``:
    the rows of its one input, or a dict of feeds)."""
    feed = _batch(x, batch) if isinstance(x, dict) else {sess.get_inputs()[0].name: _batch(x, batch)}
    for _ in range(warmup):  # first runs allocate buffers and fill caches
        sess.run(None, feed)
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        sess.run(None, feed)
        out.append((time.perf_counter() - start) * 1000.0)
    return out


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))


def measure(onnx_path_or_bytes: Any, x, y, runs: int = 200) -> dict:
    """Accuracy on (x, y), file size, and one-thread latency p50/p95 at batch 1 and batch 64.

    Keys: ``size_bytes``, ``accuracy``, ``latency_b1_p50_ms``, ``latency_b1_p95_ms``,
    ``latency_b64_p50_ms``, ``latency_b64_p95_ms``.
    """
    import numpy as np

    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    sess = session(onnx_path_or_bytes)
    probabilities = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    result = {
        "size_bytes": _size(onnx_path_or_bytes),
        "accuracy": float(np.mean(probabilities.argmax(axis=1) == np.asarray(y))),
    }
    for batch in LATENCY_BATCHES:
        times = latencies(sess, x, batch, runs)
        result[f"latency_b{batch}_p50_ms"] = _percentile(times, 50)
        result[f"latency_b{batch}_p95_ms"] = _percentile(times, 95)
    return result


def compare_speed(input_onnx: Any, output_onnx: Any, x, runs: int = 30, rounds: int = 10) -> dict:
    """p50 latency of two models, timed in many short alternating rounds so that load from
    elsewhere on the machine hits both alike. Returns per batch ``input_latency_b*_p50_ms``,
    ``latency_b*_p50_ms``, ``speedup_b*`` (input / output, > 1: the output is faster) and
    ``slower_than_input`` (slower at batch 1 or batch 64, beyond ``SLOWER_TOLERANCE``)."""
    sessions = {"input": session(input_onnx), "output": session(output_onnx)}
    samples: dict[tuple[str, int], list[float]] = {}
    for index in range(rounds):
        for batch in LATENCY_BATCHES:
            for which, sess in sessions.items():
                times = latencies(sess, x, batch, runs, warmup=10 if index == 0 else 2)
                samples.setdefault((which, batch), []).extend(times)
    result: dict[str, Any] = {}
    slower = False
    for batch in LATENCY_BATCHES:
        before = _percentile(samples[("input", batch)], 50)
        after = _percentile(samples[("output", batch)], 50)
        result[f"input_latency_b{batch}_p50_ms"] = before
        result[f"latency_b{batch}_p50_ms"] = after
        result[f"speedup_b{batch}"] = before / after if after > 0 else float("inf")
        slower = slower or after > before * SLOWER_TOLERANCE
    result["slower_than_input"] = slower
    return result


# ---------------------------------------------------------------------------------------------
# Quiet onnxruntime's quantization tools
# ---------------------------------------------------------------------------------------------
class _quiet_quantizer:
    """The quantization tools log through the root logger (``logging.warning``: "consider
    pre-processing") and their own module loggers, and the histogram calibrators print to
    stdout; a stage's log keeps only errors from them.

    ``logging.warning`` on an unconfigured root logger would also install a stderr handler for
    the whole process (``basicConfig``): a NullHandler stands in while the tools run.
    """

    def _keep(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname

    def __enter__(self):
        root = logging.getLogger()
        self._null = logging.NullHandler() if not root.handlers else None
        if self._null:
            root.addHandler(self._null)
        root.addFilter(self._keep)
        self._logger = logging.getLogger("onnxruntime")
        self._level = self._logger.level
        self._logger.setLevel(logging.ERROR)
        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()
        return self

    def __exit__(self, *exc):
        self._stdout.__exit__(*exc)
        root = logging.getLogger()
        root.removeFilter(self._keep)
        if self._null:
            root.removeHandler(self._null)
        self._logger.setLevel(self._level)
        return False


def _preprocess(src: Path, dst: Path) -> Path:
    """Shape inference + graph optimization, as onnxruntime recommends before quantizing."""
    from onnxruntime.quantization import quant_pre_process

    quant_pre_process(str(src), str(dst))
    return dst


# ---------------------------------------------------------------------------------------------
# The compressors
# ---------------------------------------------------------------------------------------------
def _choice(value: Any, allowed: tuple[str, ...], key: str, field: str) -> None:
    if str(value).lower() not in allowed:
        raise RecipeError(f"{key}.{field}: '{value}' is not one of {', '.join(allowed)}")


class _OnnxCompressor(Compressor):
    """Shared run of every ONNX-level compressor: convert, check, evaluate, time, report."""

    level: ClassVar[str] = "onnx"
    #: a regression's values are compared as numbers (r2, max difference) instead of classes
    tasks: ClassVar[tuple[str, ...] | None] = ("classification", "regression", "ranking")

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        """Raise RecipeError naming ``key.<field>`` for a bad value (the planner passes
        ``compress[i]``)."""

    def _convert(self, src: Path, tmp: Path, splits: DataSplits, ctx) -> Path:
        """Write the compressed model under ``tmp`` and return its path."""
        raise NotImplementedError

    def compress_onnx(self, model: ExportedModel, splits: DataSplits, ctx) -> ExportedModel:
        import numpy as np
        import onnx

        where = f"compress ({self.name})"
        if model.format != "onnx":
            raise StageError(f"{where}: needs an ONNX model, got format '{model.format}'")
        x_test, y_test = splits.arrays("test")
        if len(x_test) == 0:
            raise StageError(f"{where}: the test split is empty; nothing to check the compressed model with")
        # read first: the output may land on the same path (two ONNX steps in one stage folder)
        original = Path(model.path).read_bytes()
        out = Path(ctx.out_dir) / FILE_NAME
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{self.name}-") as tmp_dir:
            tmp = Path(tmp_dir)
            src = tmp / "input.onnx"
            src.write_bytes(original)
            try:
                with _quiet_quantizer():
                    self._layout = model.inputs  # calibration and range checks see raw rows as the model does
                    converted = self._convert(src, tmp, splits, ctx)
                onnx.checker.check_model(str(converted))
            except (StageError, RecipeError):
                raise
            except Exception as exc:
                raise StageError(f"{where}: converting {model.path} failed: {type(exc).__name__}: {exc}") from exc
            compressed = converted.read_bytes()
        out.write_bytes(compressed)

        try:
            after = session(compressed)
            before = session(original)
        except Exception as exc:
            raise StageError(f"{where}: onnxruntime cannot load the compressed model {out}: {exc}") from exc
        # the raw test rows as the model takes them: one float matrix, or typed feeds
        feeds = model.layout.feeds(splits.test)
        p_before = before.run([model.output_name], feeds)[0]
        p_after = after.run([model.output_name], feeds)[0]
        if p_after.shape != p_before.shape or p_after.dtype != p_before.dtype:
            raise StageError(
                f"{where}: the compressed model returns {p_after.dtype} {p_after.shape}, "
                f"the input model {p_before.dtype} {p_before.shape}: the serving contract changed"
            )
        if not np.all(np.isfinite(p_after)):
            raise StageError(f"{where}: the compressed model returns non-finite probabilities on the test split")
        metrics: dict[str, Any] = {
            "compression": self.name,
            "size_bytes": len(compressed),
            "input_size_bytes": len(original),
            "size_ratio": len(original) / len(compressed),
        }
        if model.task == "regression":  # numbers: r2 before / after; agreement within 1% of the value
            from framework.metrics import regression_metrics

            r2_before, r2_after = regression_metrics(y_test, p_before)["r2"], regression_metrics(y_test, p_after)["r2"]
            close = np.abs(p_after - p_before) <= 0.01 * np.maximum(1.0, np.abs(p_before))
            acc_after, acc_before = r2_after, r2_before
            metrics.update(test_r2=r2_after, input_test_r2=r2_before, r2_delta=r2_after - r2_before,
                           agreement=float(np.mean(close)), max_abs_diff=float(np.max(np.abs(p_after - p_before))))
        else:
            pred_before, pred_after = p_before.argmax(axis=1), p_after.argmax(axis=1)
            acc_before = float(np.mean(pred_before == y_test))
            acc_after = float(np.mean(pred_after == y_test))
            metrics.update(test_accuracy=acc_after, input_test_accuracy=acc_before, accuracy_delta=acc_after - acc_before,
                           agreement=float(np.mean(pred_after == pred_before)),
                           max_abs_diff=float(np.max(np.abs(p_after - p_before))))
        metrics.update(compare_speed(original, compressed, feeds if model.inputs is not None else x_test))
        for key, value in metrics.items():
            ctx.metric(f"{self.name}_{key}", value)
        ctx.logger.info(
            "%s: %s, %d -> %d bytes (x%.2f), test %s %.4f (%+.4f), agreement %.4f, "
            "speed-up x%.2f at batch 1, x%.2f at batch 64",
            self.name, out, len(original), len(compressed), metrics["size_ratio"],
            "r2" if model.task == "regression" else "accuracy", acc_after, acc_after - acc_before,
            metrics["agreement"], metrics["speedup_b1"], metrics["speedup_b64"],
        )
        if metrics["slower_than_input"]:
            ctx.logger.warning(
                "%s: the compressed model is SLOWER than its input on this CPU (speed-up x%.2f at batch 1, "
                "x%.2f at batch 64, one thread): it only saves size here",
                self.name, metrics["speedup_b1"], metrics["speedup_b64"],
            )
        return ExportedModel(
            path=out,
            format="onnx",
            schema=model.schema,
            classes=list(model.classes),
            input_name=model.input_name,
            output_name=model.output_name,
            metrics=metrics,
            inputs=model.inputs,
            task=model.task,
        )


@dataclass
class Int8DynamicConfig:
    #: one scale per output channel instead of per tensor (more accurate, a little slower)
    per_channel: bool = False
    #: qint8 | quint8
    weight_type: str = "qint8"
    #: run onnxruntime's quant_pre_process (shape inference + optimization) first
    preprocess: bool = True


class Int8Dynamic(_OnnxCompressor):
    name = "int8_dynamic"
    Config = Int8DynamicConfig
    summary = "ONNX Runtime dynamic INT8: int8 weights, activations quantized at run time"

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        _choice(config.weight_type, WEIGHT_TYPES, key, "weight_type")

    def _convert(self, src: Path, tmp: Path, splits: DataSplits, ctx) -> Path:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        c = self.config
        if c.preprocess:
            src = _preprocess(src, tmp / "preprocessed.onnx")
        out = tmp / FILE_NAME
        # Gemm (torch Linear) is not an integer op: the quantizer rewrites it to MatMul + Add
        quantize_dynamic(
            str(src), str(out),
            per_channel=bool(c.per_channel),
            weight_type=QuantType.QUInt8 if c.weight_type.lower() == "quint8" else QuantType.QInt8,
        )
        return out


@dataclass
class Int8StaticConfig:
    #: training rows (drawn with the run's seed) the activation ranges are calibrated on
    calibration_rows: int = 200
    #: minmax | entropy | percentile
    calibration_method: str = "minmax"
    per_channel: bool = False
    #: qdq (QuantizeLinear/DequantizeLinear pairs, ORT's recommended CPU format) | qoperator
    format: str = "qdq"
    preprocess: bool = True


class Int8Static(_OnnxCompressor):
    name = "int8_static"
    Config = Int8StaticConfig
    summary = "ONNX Runtime static INT8, activation ranges calibrated on training rows"

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        if int(config.calibration_rows) < 1:
            raise RecipeError(f"{key}.calibration_rows: must be >= 1, got {config.calibration_rows}")
        _choice(config.calibration_method, CALIBRATION_METHODS, key, "calibration_method")
        _choice(config.format, QUANT_FORMATS, key, "format")

    def calibration_rows(self, splits: DataSplits, seed: int, layout=None):
        """``calibration_rows`` training rows without replacement, seeded (all when fewer); with a
        typed ``layout``, those rows' raw feeds (a dict) as the model takes them."""
        import numpy as np

        n_train = len(splits.train)
        if n_train == 0:
            raise StageError(f"compress ({self.name}): the train split is empty; nothing to calibrate on")
        n = min(int(self.config.calibration_rows), n_train)
        rows = np.sort(np.random.default_rng(seed).choice(n_train, size=n, replace=False))
        if layout is not None:
            return layout.feeds(splits.train.iloc[rows])
        x, _ = splits.arrays("train")
        return np.ascontiguousarray(x[rows])

    def _convert(self, src: Path, tmp: Path, splits: DataSplits, ctx) -> Path:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

        c = self.config
        if c.preprocess:
            src = _preprocess(src, tmp / "preprocessed.onnx")
        rows = self.calibration_rows(splits, int(ctx.seed), getattr(self, "_layout", None))
        input_name = onnx.load(str(src)).graph.input[0].name
        fmt = QuantFormat.QDQ if c.format.lower() == "qdq" else QuantFormat.QOperator
        ops = set(QDQRegistry if fmt == QuantFormat.QDQ else QLinearOpsRegistry) | {"Gemm", "MatMul"}
        out = tmp / FILE_NAME
        quantize_static(
            str(src), str(out),
            _Rows(input_name, rows),
            quant_format=fmt,
            op_types_to_quantize=sorted(ops - set(FLOAT_OUTPUT_OPS)),
            per_channel=bool(c.per_channel),
            # uint8 activations + int8 weights: onnxruntime's advice for x86 CPUs
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method={
                "minmax": CalibrationMethod.MinMax,
                "entropy": CalibrationMethod.Entropy,
                "percentile": CalibrationMethod.Percentile,
            }[c.calibration_method.lower()],
        )
        return out


class _Rows:
    """CalibrationDataReader over an array, in batches of equal size (at most 64 rows).

    Batches rather than single rows: one session run per batch. Equal sizes: the entropy and
    percentile calibrators stack the batches' activations into one array.
    """

    MAX_BATCH = 64

    def __init__(self, input_name: str, rows):
        self.input_name = input_name
        self.rows = rows  # an array of the one input, or a dict of feeds (typed inputs)
        self.n = len(next(iter(rows.values()))) if isinstance(rows, dict) else len(rows)
        self.batch = max(b for b in range(1, min(self.MAX_BATCH, self.n) + 1) if self.n % b == 0)
        self.start = 0

    def get_next(self):
        if self.start >= self.n:
            return None
        part = slice(self.start, self.start + self.batch)
        self.start += self.batch
        if isinstance(self.rows, dict):
            return {name: a[part] for name, a in self.rows.items()}
        return {self.input_name: self.rows[part]}

    def rewind(self):
        self.start = 0


@dataclass
class Fp16Config:
    #: weights: float16 storage, float32 arithmetic (onnxruntime casts the weights back once, at
    #: load: half the size, fp32 speed); full: float16 arithmetic too, raw features included,
    #: which only pays off on hardware with native fp16 (x86 CPUs without it get slower)
    mode: str = "weights"


class Fp16(_OnnxCompressor):
    name = "fp16"
    Config = Fp16Config
    summary = "float16 weights (and optionally arithmetic), float32 input and output kept"

    @classmethod
    def check_config(cls, config: Any, key: str, refs: Mapping[str, type] | None = None) -> None:
        _choice(config.mode, FP16_MODES, key, "mode")

    def _convert(self, src: Path, tmp: Path, splits: DataSplits, ctx) -> Path:
        import numpy as np
        import onnx

        model = onnx.load(str(src))
        if self.config.mode.lower() == "full":
            # the raw features go through float16 too: refuse data they would overflow
            layout = getattr(self, "_layout", None)
            if layout is not None and layout.numeric:  # typed inputs: the raw numbers enter the graph
                largest = max(float(np.nanmax(np.abs(layout.feeds(getattr(splits, part))[layout.numeric]), initial=0.0))
                              for part in ("train", "test"))
            else:
                largest = max(float(np.max(np.abs(splits.arrays(part)[0]), initial=0.0)) for part in ("train", "test"))
            if largest > FP16_SAFE_INPUT:
                raise StageError(
                    f"compress (fp16): mode 'full' computes in float16, but features reach |x| = {largest:g} "
                    f"(float16 overflows at 65504). Use mode 'weights' (float16 storage, float32 arithmetic)"
                )
            model = _fp16_full(model)
        else:
            model = _fp16_weights(model)
        out = tmp / FILE_NAME
        onnx.save(model, str(out))
        return out


#: largest raw feature magnitude ``fp16`` mode ``full`` accepts: float16's maximum is 65504, and
#: serving traffic may exceed what the training data showed
FP16_SAFE_INPUT = 10_000.0
#: float initializers below this many elements stay float32 (the standardization's mean and std,
#: small biases): halving them saves next to nothing and costs a node each
FP16_MIN_ELEMENTS = 256


def _fp16_weights(model):
    """Every large float32 initializer stored as float16 and cast back to float32 by a node.

    onnxruntime folds ``Cast(constant)`` at session creation, so the arithmetic is exactly the
    fp32 graph's on weights rounded to fp16.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < FP16_MIN_ELEMENTS:
            continue
        name, values = init.name, numpy_helper.to_array(init)
        if np.max(np.abs(values)) > np.finfo(np.float16).max:
            continue  # would overflow to inf: keep it float32
        stored = f"{name}__fp16"
        init.CopyFrom(numpy_helper.from_array(values.astype(np.float16), stored))
        casts.append(helper.make_node("Cast", [stored], [name], name=f"{name}__to_fp32", to=onnx.TensorProto.FLOAT))
    # the casts feed other nodes: they go first to keep the graph topologically sorted
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def _fp16_full(model):
    """float16 arithmetic everywhere, float32 input and output (Casts at both ends)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(model, keep_io_types=True)
    _topological_sort(model.graph)  # the converter appends its input Casts after their users
    return model


def _topological_sort(graph) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise StageError("compress (fp16): the converted graph has a cycle or a dangling input")
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if n not in ready]
    nodes = [type(n)() for n in ordered]
    for copy, node in zip(nodes, ordered):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(nodes)


@hookimpl
def register_compressors():
    return [Int8Dynamic, Int8Static, Fp16]
