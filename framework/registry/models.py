"""Reading a registered model version as what the other layers need: ONNX bytes, input schema,
classes, tensor names and the training means explanations compare against.

Registered model versions hold ``model.onnx`` and ``serving.json`` (written by the register
stage); only those two files are read: nothing here unpickles anything.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..components import InputLayout, InputSchema
from ..errors import StoreError

SERVING_MANIFEST = "serving.json"
MODEL_FILE = "model.onnx"


@dataclass
class RegisteredModel:
    """One registered model version, ready to run: ``ref`` is ``NAME:ID``."""

    ref: str
    name: str
    id: str
    onnx_bytes: bytes
    schema: InputSchema
    classes: list
    input_name: str
    output_name: str
    #: each feature's training mean (schema order), or None for versions registered without it;
    #: a model of typed inputs: the raw value of an average case (mean, most frequent category)
    baseline: list | None = None
    metrics: dict | None = None
    #: how raw rows feed the file (None: one float32 matrix ``input_name`` of every feature)
    inputs: InputLayout | None = None
    #: "classification" / "ranking" (class probabilities) or "regression" (one value per row)
    task: str = "classification"

    @property
    def layout(self) -> InputLayout:
        return self.inputs or InputLayout.matrix(self.input_name, self.schema.names)

    def __repr__(self) -> str:  # never dump the model bytes into a log line
        return f"RegisteredModel({self.ref}, onnx_bytes=<{len(self.onnx_bytes)} bytes>, classes={self.classes!r})"


def serving_manifest(registry: Any, ref: str) -> tuple[Any, dict]:
    """(version, its serving manifest) of a registered model ``NAME@ALIAS`` / ``NAME:ID``."""
    version = registry.get(ref, kind="model")
    try:
        manifest = json.loads(registry.read_file(version, SERVING_MANIFEST))
    except ValueError as exc:
        raise StoreError(f"model {version.ref}: {SERVING_MANIFEST} is not valid JSON: {exc}") from None
    return version, manifest


def load_registered_model(registry: Any, ref: str, with_bytes: bool = True) -> RegisteredModel:
    """A registered model version (hash-checked on read); ``with_bytes=False`` skips the ONNX file."""
    version, manifest = serving_manifest(registry, ref)
    return RegisteredModel(
        ref=version.ref,
        name=version.name,
        id=version.id,
        onnx_bytes=registry.read_file(version, MODEL_FILE) if with_bytes else b"",
        schema=InputSchema.from_dict(manifest["schema"]),
        classes=list(manifest["classes"]),
        input_name=manifest["input_name"],
        output_name=manifest["output_name"],
        baseline=manifest.get("baseline"),
        metrics=dict(version.metrics),
        inputs=InputLayout.from_dict(manifest["inputs"]) if manifest.get("inputs") else None,
        task=manifest.get("task", "classification"),
    )
