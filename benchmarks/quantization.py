"""ONNX compression side by side: fp32, int8 dynamic, int8 static, fp16, and torch eager.

One MLP (30 -> 512 -> 512 -> 2, standardization inside, trained briefly on breast cancer so its
accuracy means something) is exported as the ``onnx`` exporter does; the ``int8_dynamic``,
``int8_static`` and ``fp16`` compressors (plugins/compress_onnx_quantize.py) make their files
from it. Every variant is then timed on ONE thread (onnxruntime intra/inter op = 1,
torch.set_num_threads(1)) at batch 1 and batch 64, in alternating rounds so that load from
elsewhere on a shared machine hits all of them alike. Accuracy is on the test split (86 rows:
one row is 1.16 points).

    python benchmarks/quantization.py [--runs 300] [--rounds 7] [--epochs 60]

Targets (issue): INT8 >= 3.5x smaller (4x is the ceiling: 4 bytes -> 1 per weight), <= 1 point
accuracy drop, never slower than fp32 onnxruntime (if it is, we keep fp32); and how much faster
fp32 onnxruntime is than torch eager at batch 1 on one thread.
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

BATCHES = (1, 64)
HIDDEN, LAYERS = 512, 2


def train(splits, epochs: int, seed: int = 0):
    """The trainer's module (plugins.model_mlp, trained by plugins.train_tune.fit_in_process), full-batch Adam, best validation epoch kept."""
    from plugins.train_tune import fit_in_process

    return fit_in_process({"hidden": HIDDEN, "layers": LAYERS, "lr": 1e-3, "dropout": 0.1}, splits, epochs, seed)


def torch_latencies(module, x, batch: int, runs: int, warmup: int = 10) -> list[float]:
    """Milliseconds per call of module + softmax (what the ONNX file computes), inference mode."""
    import torch

    wrapped = torch.nn.Sequential(module, torch.nn.Softmax(dim=1)).eval()
    xb = torch.tensor(np.ascontiguousarray(np.resize(x, (batch, x.shape[1])).astype(np.float32)))
    out = []
    with torch.inference_mode():
        for _ in range(warmup):
            wrapped(xb)
        for _ in range(runs):
            start = time.perf_counter()
            wrapped(xb)
            out.append((time.perf_counter() - start) * 1000.0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="timed calls per variant, batch size and round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds over all variants")
    parser.add_argument("--epochs", type=int, default=60)
    args = parser.parse_args(argv)

    import logging

    import torch

    from framework.testing.data import breast_cancer_splits

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before torch's first parallel work
        pass
    logging.basicConfig(level=logging.WARNING, format="%(message)s")

    splits = breast_cancer_splits()
    t0 = time.perf_counter()
    module = train(splits, args.epochs)
    train_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory(prefix="quant-bench-") as tmp:
        return _run(args, module, splits, Path(tmp), train_s)


def _run(args, module, splits, work: Path, train_s: float) -> int:
    import onnx
    import onnxruntime
    import torch

    from framework.components import ExportedModel, FeatureSpec, InputSchema
    from framework.context import RunStageContext
    from plugins.compress_onnx_quantize import Fp16, Int8Dynamic, Int8Static, latencies, session
    from plugins.export_onnx import INPUT_NAME, OUTPUT_NAME, export_module

    x_test, y_test = splits.arrays("test")
    fp32_path = export_module(module, x_test[:8], work / "fp32" / "model.onnx")
    schema = InputSchema([FeatureSpec(n) for n in splits.dataset.features])
    fp32 = ExportedModel(fp32_path, "onnx", schema, list(splits.dataset.classes), INPUT_NAME, OUTPUT_NAME)

    steps = [
        ("int8 dynamic", Int8Dynamic()),
        ("int8 static (qdq, minmax)", Int8Static()),
        ("int8 static (qoperator, minmax)", Int8Static(Int8Static.Config(format="qoperator"))),
        ("fp16 (weights)", Fp16()),
        ("fp16 (full)", Fp16(Fp16.Config(mode="full"))),
    ]
    files = {"fp32": fp32_path}
    compress_s = {}
    for label, step in steps:
        t0 = time.perf_counter()
        ctx = RunStageContext("compress", work / label.replace(" ", "_").replace("(", "").replace(")", "").replace(",", ""), seed=0)
        files[label] = step.compress_onnx(fp32, splits, ctx).path
        compress_s[label] = time.perf_counter() - t0

    # accuracy and size
    rows = {}
    for label, path in files.items():
        probabilities = session(path).run(None, {INPUT_NAME: x_test})[0]
        rows[label] = {"size": path.stat().st_size, "acc": float(np.mean(probabilities.argmax(1) == y_test))}
    buf = io.BytesIO()
    torch.save(module.state_dict(), buf)
    with torch.no_grad():
        torch_acc = float(np.mean(module(torch.tensor(x_test)).argmax(1).numpy() == y_test))
    rows["torch eager"] = {"size": len(buf.getvalue()), "acc": torch_acc}

    # latency: every variant in every round, alternating, so drift hits all alike
    sessions = {label: session(path) for label, path in files.items()}
    samples: dict[tuple[str, int], list[float]] = {}
    round_p50: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for batch in BATCHES:
            for label in rows:
                if label == "torch eager":
                    times = torch_latencies(module, x_test, batch, args.runs)
                else:
                    times = latencies(sessions[label], x_test, batch, args.runs)
                samples.setdefault((label, batch), []).extend(times)
                round_p50.setdefault((label, batch), []).append(statistics.median(times))
    p50 = {key: float(np.percentile(v, 50)) for key, v in samples.items()}

    def speedup(label: str, batch: int, reference: str = "fp32") -> str:
        """Pooled p50 ratio, and the spread of the per-round ratios (noise on a shared machine)."""
        per_round = [r / o for r, o in zip(round_p50[(reference, batch)], round_p50[(label, batch)])]
        return f"{p50[(reference, batch)] / p50[(label, batch)]:.2f}x ({min(per_round):.2f}–{max(per_round):.2f})"

    fp32_row = rows["fp32"]
    print()
    print(f"MLP 30 -> {HIDDEN} -> {HIDDEN} -> 2 on breast cancer ({len(x_test)} test rows), trained {args.epochs} epochs "
          f"in {train_s:.1f} s; onnxruntime {onnxruntime.__version__}, onnx {onnx.__version__}, torch {torch.__version__}; "
          f"one thread; p50 of {args.rounds} rounds x {args.runs} calls per variant and batch size "
          f"(speed-up: pooled p50 ratio, min–max over rounds in brackets)")
    print()
    print("| variant | size KB | size ratio vs fp32 | test accuracy | Δ accuracy (points) | p50 batch 1 (µs) | "
          "p50 batch 64 (µs) | speed-up vs fp32 ORT, batch 1 | speed-up vs fp32 ORT, batch 64 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        name = label if label in ("torch eager",) else f"ORT {label}"
        size_note = " (state_dict)" if label == "torch eager" else ""
        print(
            f"| {name} | {row['size'] / 1024:.1f}{size_note} | {fp32_row['size'] / row['size']:.2f}x | {row['acc']:.4f} | "
            f"{(row['acc'] - fp32_row['acc']) * 100:+.2f} | {p50[(label, 1)] * 1000:.1f} | {p50[(label, 64)] * 1000:.1f} | "
            f"{speedup(label, 1)} | {speedup(label, 64)} |"
        )
    print()
    print(f"ORT fp32 vs torch eager (one thread): {speedup('fp32', 1, 'torch eager')} at batch 1, "
          f"{speedup('fp32', 64, 'torch eager')} at batch 64 (> 1: ORT faster)")
    print("compressor wall time: " + ", ".join(f"{k} {v:.2f} s" for k, v in compress_s.items()))
    print()
    print("Targets:")
    for label in [s[0] for s in steps if s[0].startswith("int8")]:
        ratio = fp32_row["size"] / rows[label]["size"]
        drop = (fp32_row["acc"] - rows[label]["acc"]) * 100
        faster = {b: p50[("fp32", b)] / p50[(label, b)] for b in BATCHES}
        slower = [f"batch {b} ({faster[b]:.2f}x)" for b in BATCHES if faster[b] < 1.0]
        print(
            f"- {label}: {ratio:.2f}x smaller ({'meets' if ratio >= 3.5 else 'MISSES'} >= 3.5x), "
            f"accuracy drop {drop:.2f} points ({'meets' if drop <= 1.0 else 'MISSES'} <= 1), "
            + (f"SLOWER than fp32 ORT at {', '.join(slower)}: keep fp32 on this CPU" if slower
               else f"not slower than fp32 ORT ({faster[1]:.2f}x at batch 1, {faster[64]:.2f}x at batch 64)")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
