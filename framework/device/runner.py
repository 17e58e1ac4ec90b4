"""Run a device bundle's model: needs only numpy and onnxruntime.

    python runner.py BUNDLE_DIR input.json     (input.json: {"instances": [{feature: value}, ...]})

    from runner import Predictor
    labels, probabilities = Predictor(BUNDLE_DIR).predict(rows)

A model of typed inputs (schema.json has "inputs") takes raw rows as the server does: numbers,
true/false, categories as strings, null where a feature may be missing; the preprocessing is
inside model.onnx. A regression's labels are its predicted numbers (probabilities: None).
"""
import hashlib
import json
import math
import os
import sys

import numpy as np
import onnxruntime as ort

FLOAT32_MAX = float(np.finfo(np.float32).max)


class Predictor:
    """The bundle's model with the server's input checks. ``threads``: onnxruntime intra-op
    threads (1: as measured for the budget)."""

    def __init__(self, bundle_dir=None, threads=1, check_hashes=True):
        self.bundle_dir = os.path.abspath(bundle_dir or os.path.dirname(os.path.abspath(__file__)))
        if check_hashes:
            self._check_hashes()
        with open(os.path.join(self.bundle_dir, "schema.json")) as f:
            schema = json.load(f)
        self.input_name = schema["input_name"]
        self.output_name = schema["output_name"]
        self.classes = list(schema["classes"])
        self.regression = schema.get("task") == "regression"
        self.inputs = schema.get("inputs")  # typed raw rows; None: one float matrix
        features = schema["input_schema"]["features"]
        self.features = features
        self.names = [f["name"] for f in features]
        self.integer = {f["name"] for f in features if f.get("dtype") == "int"}
        self._name_set = set(self.names)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(os.path.join(self.bundle_dir, "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])

    def _check_hashes(self):
        path = os.path.join(self.bundle_dir, "manifest.json")
        if not os.path.exists(path):
            return
        with open(path) as f:
            manifest = json.load(f)
        for name, entry in manifest.get("files", {}).items():
            with open(os.path.join(self.bundle_dir, name), "rb") as f:
                if hashlib.sha256(f.read()).hexdigest() != entry["sha256"]:
                    raise RuntimeError(name + " does not match its sha256 in manifest.json")

    def features_of(self, rows):
        """float32 [n, n_features] from a list of {feature: number} objects or a 2-d array."""
        if isinstance(rows, dict):  # {"instances": [...]} as the server takes, or one instance
            rows = rows["instances"] if "instances" in rows else [rows]
        if isinstance(rows, np.ndarray):
            return self._array(rows)
        rows = list(rows)
        if not rows:
            raise ValueError("instances: empty: send at least one instance")
        if all(isinstance(r, dict) for r in rows):
            return self._array([self._row(r, "instances[%d]" % i) for i, r in enumerate(rows)], checked=True)
        if any(isinstance(r, dict) for r in rows):
            raise ValueError("instances: mix of objects and rows: send one kind")
        return self._array(rows)

    def _row(self, instance, at):
        values = []
        for name in self.names:
            if name not in instance:
                raise ValueError("%s.%s: missing feature" % (at, name))
            values.append(self._number(instance[name], "%s.%s" % (at, name), name))
        extra = [k for k in instance if k not in self._name_set]
        if extra:
            raise ValueError("%s.%s: unknown feature; expected only: %s" % (at, extra[0], ", ".join(self.names)))
        return values

    def _number(self, value, at, name):
        if type(value) not in (int, float):  # exact types: bool is not a number here
            raise ValueError("%s: expected a finite number, got %r" % (at, value))
        try:
            finite = math.isfinite(float(value)) and abs(float(value)) <= FLOAT32_MAX
        except OverflowError:
            finite = False
        if not finite:
            raise ValueError("%s: expected a finite number, got %r" % (at, value))
        if name in self.integer and not float(value).is_integer():
            raise ValueError("%s: expected an integer, got %r" % (at, value))
        return value

    def _array(self, rows, checked=False):
        try:
            with np.errstate(over="ignore"):
                x = np.asarray(rows, dtype=np.float32)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ValueError("instances: expected rows of %d numbers: %s" % (len(self.names), exc))
        if x.ndim == 1 and not checked:
            x = x.reshape(1, -1)
        if x.ndim != 2 or x.shape[1] != len(self.names):
            raise ValueError("instances: expected shape [n, %d], got %s" % (len(self.names), list(x.shape)))
        if len(x) == 0:
            raise ValueError("instances: empty: send at least one instance")
        bad = np.argwhere(~np.isfinite(x))
        if len(bad):
            i, j = bad[0]
            raise ValueError("instances[%d].%s: expected a finite number, got %r" % (i, self.names[j], float(x[i, j])))
        return np.ascontiguousarray(x)

    def typed_feeds(self, rows):
        """The model's feeds from raw rows: a float32 matrix of the numbers (NaN for null, bools
        as 0/1) and a string matrix of the categories (the missing token for null)."""
        if isinstance(rows, dict):
            rows = rows["instances"] if "instances" in rows else [rows]
        rows = list(rows)
        if not rows:
            raise ValueError("instances: empty: send at least one instance")
        layout = self.inputs
        numeric = {c: i for i, c in enumerate(layout["numeric_columns"])}
        categorical = {c: i for i, c in enumerate(layout["categorical_columns"])}
        refuse = layout.get("unknown_categories") == "refuse"
        numbers = np.empty((len(rows), len(numeric)), dtype=np.float32)
        strings = np.empty((len(rows), len(categorical)), dtype=object)
        for i, instance in enumerate(rows):
            at = "instances[%d]" % i
            if not isinstance(instance, dict):
                raise ValueError("%s: expected an object of feature: value" % at)
            for f in self.features:
                name, kind = f["name"], f.get("dtype", "float")
                where = "%s.%s" % (at, name)
                if name not in instance:
                    raise ValueError("%s: missing feature (send null for a missing value)" % where)
                value = instance[name]
                if value is None:
                    if not f.get("nullable"):
                        raise ValueError("%s: null is not allowed" % where)
                    if kind == "category":
                        strings[i, categorical[name]] = layout["missing_token"]
                    else:
                        numbers[i, numeric[name]] = np.nan
                elif kind == "category":
                    if not isinstance(value, str):
                        raise ValueError("%s: expected a string (a category), got %r" % (where, value))
                    if refuse and value not in (f.get("categories") or []):
                        raise ValueError("%s: unknown category %r" % (where, value))
                    strings[i, categorical[name]] = value
                elif kind == "bool":
                    if type(value) is not bool:
                        raise ValueError("%s: expected true or false, got %r" % (where, value))
                    numbers[i, numeric[name]] = 1.0 if value else 0.0
                else:
                    numbers[i, numeric[name]] = self._number(value, where, name)
            extra = [k for k in instance if k not in self._name_set]
            if extra:
                raise ValueError("%s.%s: unknown feature; expected only: %s" % (at, extra[0], ", ".join(self.names)))
        feeds = {}
        if layout.get("numeric"):
            feeds[layout["numeric"]] = numbers
        if layout.get("categorical"):
            feeds[layout["categorical"]] = strings
        return feeds

    def predict(self, rows):
        """(labels: list of class labels, probabilities: float32 array [n, n_classes]); a
        regression: (its predicted numbers, None)."""
        feeds = self.typed_feeds(rows) if self.inputs else {self.input_name: self.features_of(rows)}
        out = self.session.run([self.output_name], feeds)[0]
        if self.regression:
            return [float(v) for v in out[:, 0]], None
        labels = [self.classes[i] for i in out.argmax(axis=1)]
        return labels, out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        sys.stderr.write("usage: python runner.py BUNDLE_DIR input.json  (- reads standard input)\n")
        return 2
    bundle_dir, source = argv
    if source == "-":
        data = json.load(sys.stdin)
    else:
        with open(source) as f:
            data = json.load(f)
    predictor = Predictor(bundle_dir)
    try:
        labels, probabilities = predictor.predict(data)
    except ValueError as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    json.dump({"labels": labels, "probabilities": None if probabilities is None else probabilities.tolist(),
               "classes": predictor.classes}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
