"""Operational metrics of an ingress replica, in Prometheus' text format (``GET /metrics``).

Made with the ``prometheus-client`` library (a dependency of Ray already; pinned in
``constraints.txt``), never a hand-written exposition format. Each replica has its own
``CollectorRegistry`` (two replicas in one process, as in tests, do not mix their counts):

* ``framework_requests_total{endpoint, model_version, arm, replica}``: answered requests
  (predict, rank); ``rate()`` of it is the throughput;
* ``framework_instances_total{...}``: the rows those requests carried;
* ``framework_request_latency_seconds{...}``: a histogram of the time from the request's arrival
  in the replica to its answer (percentiles with ``histogram_quantile``);
* ``framework_errors_total{endpoint, status, model_version, arm, replica}``: answers with a 4xx or
  5xx status; ``model_version``/``arm`` are set when the failure is an arm's (a 503), empty when
  the request failed before a model was chosen (a malformed body);
* ``framework_model_info{arm, model_version, replica}`` = 1 for each served arm;
* the replica process's CPU seconds and memory (``process_cpu_seconds_total``,
  ``process_resident_memory_bytes`` ..., prometheus-client's ``ProcessCollector``, Linux).

The request path pays a dictionary lookup, two counter increments and one histogram observation
(the labelled children are made once per endpoint and arm); ``benchmarks/monitoring.py`` measures
p50 with and without.
"""
from __future__ import annotations

from typing import Any, Mapping

#: seconds; the ingress answers in well under a millisecond to tens of milliseconds
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServingMetrics:
    """The metrics of one replica; ``served`` and ``error`` are called on the request path."""

    enabled = True

    def __init__(self, versions: Mapping[str, str], replica: str = "", endpoints: Any = ()):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

        self.versions = dict(versions)
        self.replica = str(replica)
        self.endpoints = frozenset(endpoints)
        self.registry = CollectorRegistry(auto_describe=True)
        served = ("endpoint", "model_version", "arm", "replica")
        self._requests = Counter("framework_requests", "Answered requests", served, registry=self.registry)
        self._instances = Counter("framework_instances", "Rows (instances) in answered requests", served,
                                  registry=self.registry)
        self._latency = Histogram("framework_request_latency_seconds", "Time from arrival in the replica to the answer",
                                  served, buckets=LATENCY_BUCKETS, registry=self.registry)
        self._errors = Counter("framework_errors", "Requests answered with a 4xx or 5xx status",
                               ("endpoint", "status", "model_version", "arm", "replica"), registry=self.registry)
        info = Gauge("framework_model_info", "1 for each served arm and its model version",
                     ("arm", "model_version", "replica"), registry=self.registry)
        for arm, version in self.versions.items():
            info.labels(arm, version, self.replica).set(1)
        ProcessCollector(registry=self.registry)
        self._children: dict[tuple[str, str], tuple[Any, Any, Any]] = {}

    def _served_children(self, endpoint: str, arm: str) -> tuple[Any, Any, Any]:
        labels = (endpoint, self.versions.get(arm, ""), arm, self.replica)
        children = (self._requests.labels(*labels), self._instances.labels(*labels), self._latency.labels(*labels))
        self._children[(endpoint, arm)] = children
        return children

    def served(self, endpoint: str, arm: str, latency_ms: float, instances: int) -> None:
        """One answered request (request path: keep it tiny)."""
        children = self._children.get((endpoint, arm)) or self._served_children(endpoint, arm)
        children[0].inc()
        children[1].inc(instances)
        children[2].observe(latency_ms / 1000.0)

    def error(self, path: str, status: int, arm: str | None = None) -> None:
        """An answer with a 4xx / 5xx status. Unknown paths count as ``other`` (bounded labels)."""
        endpoint = path.strip("/") if path in self.endpoints else "other"
        arm = arm if arm in self.versions else ""
        self._errors.labels(endpoint, str(int(status)), self.versions.get(arm, ""), arm, self.replica).inc()

    def exposition(self) -> bytes:
        """Everything, in Prometheus' text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class MetricsOff:
    """``serve.metrics: false``: the same calls, doing nothing; ``/metrics`` answers 404."""

    enabled = False

    def served(self, endpoint: str, arm: str, latency_ms: float, instances: int) -> None:
        pass

    def error(self, path: str, status: int, arm: str | None = None) -> None:
        pass


def replica_name() -> str:
    """This Serve replica's id ("" outside a replica: tests, benchmarks)."""
    try:
        from ray import serve

        return str(serve.get_replica_context().replica_id.unique_id)
    except Exception:
        return ""
