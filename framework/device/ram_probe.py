"""Child process of ``measure_ram``: the peak RAM a model adds over python + numpy + onnxruntime.

Run as ``python -I ram_probe.py MODEL ROW.npy INPUT_NAME RUNS``; prints one JSON line. Imports only
numpy and onnxruntime (never the framework), so the figure is what a device would see. A model of
typed inputs gets ``FEEDS.json`` instead of ``ROW.npy``: ``{input name: {"dtype", "values"}}``.
"""
import json
import resource
import sys


def peak_mb():
    try:  # Linux: this process image's own peak (VmHWM, kB); ru_maxrss keeps the parent's across fork+exec
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1e6 if sys.platform == "darwin" else rss * 1024 / 1e6  # bytes on macOS, KiB on Linux


def main(model_path, row_path, input_name, runs):
    import numpy as np
    import onnxruntime as ort

    baseline = peak_mb()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    if row_path.endswith(".json"):
        with open(row_path) as f:
            feed = {name: np.array(spec["values"], dtype=object if spec["dtype"] == "str" else np.float32)
                    for name, spec in json.load(f).items()}
    else:
        feed = {input_name: np.load(row_path)}
    for _ in range(runs):
        session.run(None, feed)
    peak = peak_mb()
    print(json.dumps({"baseline_ram_mb": baseline, "peak_ram_mb": peak, "ram_mb": max(peak - baseline, 0.0)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
