"""Prometheus gauges from step outputs (host side, never traced).

Each :class:`StepOutput` the host receives is flattened generically (every
scalar leaf named by its path, see :mod:`fnpredict.service.records`) into
gauges of a private registry, so nested telemetry needs no field list here.
``serve`` exposes the registry on 127.0.0.1 only. The stream service has its
own, richer metrics (:mod:`fnpredict.service.metrics`).
"""

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ..service.records import OutputFlattener, scalar_fields

#: Boolean leaves counted as events when they are raised.
EVENT_FIELDS = ("regime_change_detected", "emergency_mode", "degraded_inference_mode",
                "mode_collapse_warning", "observation_missing", "observation_rejected")


class TelemetryMetrics:
    """Gauges for the scalar leaves and the weights, counters for events."""

    def __init__(self, kernel_names: tuple[str, ...], registry: CollectorRegistry | None = None):
        self.kernel_names = tuple(kernel_names)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.flattener = OutputFlattener(self.kernel_names)
        self.steps = Counter("fnpredict_steps", "steps processed", registry=self.registry)
        self.events = Counter("fnpredict_events", "telemetry events", ["event"], registry=self.registry)
        self.fields = Gauge("fnpredict_output", "scalar step output leaf, by path", ["field"],
                            registry=self.registry)
        self.weights = Gauge("fnpredict_kernel_weight", "kernel weight", ["kernel"], registry=self.registry)

    def observe(self, output) -> dict:
        """Record one step's output; return it as a JSON-ready dict."""
        leaves = self.flattener.host_leaves(output)
        record = self.flattener.record(leaves)
        self.steps.inc()
        for name, value in scalar_fields(leaves).items():
            self.fields.labels(field=name).set(value)
            if name.rsplit(".", 1)[-1] in EVENT_FIELDS and value:
                self.events.labels(event=name).inc()
        for kernel, weight in (record.get("weights") or {}).items():
            self.weights.labels(kernel=kernel).set(weight)
        return record

    def serve(self, port: int) -> None:
        """Expose the registry over HTTP on 127.0.0.1:``port``."""
        start_http_server(port, addr="127.0.0.1", registry=self.registry)


__all__ = ["TelemetryMetrics", "EVENT_FIELDS"]
