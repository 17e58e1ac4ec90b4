"""What the serving layer is given (ServedModel) and what it hands back (ServingApp). No Ray here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..components import InputLayout, InputSchema

#: columns of a served row after the feature columns (see ``fetch_records`` and ServedWindow)
#: (``request_id`` is the server's id; ``correlation_id`` the X-Request-Id the client sent, if any)
RECORD_FIELDS = ("prediction", "model_version", "arm", "latency_ms", "request_id", "timestamp", "correlation_id")


@dataclass
class ServedModel:
    """One arm of the served application: an ONNX model plus what the server needs to run it.

    ``output`` says what ``output_name`` holds: ``"probabilities"``, ``"logits"`` (the server
    applies a softmax) or ``"auto"`` (decided once at load time by probing the model).
    """

    arm: str
    version: str
    onnx_bytes: bytes
    schema: InputSchema
    classes: list
    input_name: str
    output_name: str
    output: str = "auto"
    #: each feature's training mean (schema order): the "average case" that ``"explain": true``
    #: compares against; None -> explanations are refused (409). Typed inputs: raw values
    baseline: list | None = None
    #: how raw rows feed the file (None: one float32 matrix ``input_name`` of every feature)
    inputs: InputLayout | None = None
    #: "regression": the answer is one number per row (no probabilities)
    task: str = "classification"

    @property
    def layout(self) -> InputLayout:
        return self.inputs or InputLayout.matrix(self.input_name, self.schema.names)

    @property
    def typed(self) -> bool:
        """Raw typed rows (categories, missing values) rather than one float matrix."""
        return self.inputs is not None

    @classmethod
    def from_registered(cls, arm: str, model: Any) -> "ServedModel":
        """Arm ``arm`` serving a registered version (a ``framework.registry.models.RegisteredModel``)."""
        return cls(arm=arm, version=model.ref, onnx_bytes=model.onnx_bytes, schema=model.schema, classes=model.classes,
                   input_name=model.input_name, output_name=model.output_name, baseline=model.baseline,
                   inputs=getattr(model, "inputs", None), task=getattr(model, "task", "classification"))

    def __repr__(self) -> str:  # never dump the model bytes into a log line
        return (
            f"ServedModel(arm={self.arm!r}, version={self.version!r}, onnx_bytes=<{len(self.onnx_bytes)} bytes>, "
            f"features={len(self.schema.features)}, classes={self.classes!r})"
        )


@dataclass
class ServingApp:
    """A deployed application: where to reach it and how it was deployed."""

    app_name: str
    host: str
    port: int
    route_prefix: str
    placement: str
    models: dict[str, str]  # arm -> model version
    admin_token: str | None = field(default=None, repr=False)
    #: "direct": ``port`` is an ingress replica's own port or the balancer in front of several;
    #: "proxy": ``port`` is Ray Serve's HTTP proxy (see ``serving/ingress_modes.py``)
    ingress: str = "proxy"
    #: required as "Authorization: Bearer ..." by predict, rank and feedback when set
    client_token: str | None = field(default=None, repr=False)
    #: where the durable record log of this deployment is (None: off)
    record_log: str | None = None

    @property
    def url(self) -> str:
        """Base URL, ending with '/': ``url + "predict"``, ``url + "healthz"`` ..."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else ("[::1]" if self.host == "::" else self.host)
        prefix = self.route_prefix.rstrip("/") + "/"
        return f"http://{host}:{self.port}{prefix}"

    @property
    def predict_url(self) -> str:
        return self.url + "predict"

    @property
    def rank_url(self) -> str:
        return self.url + "rank"

    @property
    def feedback_url(self) -> str:
        return self.url + "feedback"

    def admin_headers(self) -> dict[str, Any]:
        return {"X-Admin-Token": self.admin_token} if self.admin_token else {}

    def client_headers(self) -> dict[str, Any]:
        return {"Authorization": f"Bearer {self.client_token}"} if self.client_token else {}
