"""Prometheus metrics from step telemetry (host side, never traced).

Each :class:`StepOutput` the host receives is turned into gauges and counters
in a private registry, which ``serve`` exposes on 127.0.0.1 only.
"""

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from ..telemetry import SCALAR_FIELDS, StepOutput

_EVENT_FIELDS = ("regime_change_detected", "emergency_mode", "degraded_inference_mode",
                 "mode_collapse_warning", "observation_missing", "observation_rejected")


class TelemetryMetrics:
    """Gauges for the scalar telemetry and the weights, counters for events."""

    def __init__(self, kernel_names: tuple[str, ...], registry: CollectorRegistry | None = None):
        self.kernel_names = tuple(kernel_names)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.steps = Counter("fnpredict_steps", "steps processed", registry=self.registry)
        self.events = Counter("fnpredict_events", "telemetry events", ["event"], registry=self.registry)
        self.prediction = Gauge("fnpredict_prediction", "ensemble forecast of the next observation",
                                registry=self.registry)
        self.weights = Gauge("fnpredict_kernel_weight", "kernel weight", ["kernel"], registry=self.registry)
        self.kernel_predictions = Gauge("fnpredict_kernel_prediction", "kernel forecast", ["kernel"],
                                        registry=self.registry)
        self.scalars = {
            name: Gauge(f"fnpredict_{name}", f"telemetry field {name}", registry=self.registry)
            for name in SCALAR_FIELDS
        }

    def observe(self, output: StepOutput) -> dict:
        """Record one step's output; return it as a JSON-ready dict."""
        telemetry = output.telemetry
        record = {
            "prediction": float(np.asarray(output.prediction)),
            "kernel_predictions": {
                n: float(v) for n, v in zip(self.kernel_names, np.asarray(output.kernel_predictions))
            },
            "weights": {n: float(v) for n, v in zip(self.kernel_names, np.asarray(output.weights))},
        }
        self.steps.inc()
        self.prediction.set(record["prediction"])
        for name in self.kernel_names:
            self.weights.labels(kernel=name).set(record["weights"][name])
            self.kernel_predictions.labels(kernel=name).set(record["kernel_predictions"][name])
        for name in SCALAR_FIELDS:
            value = np.asarray(getattr(telemetry, name))
            if value.dtype == bool:
                python_value = bool(value)
            elif np.issubdtype(value.dtype, np.integer):
                python_value = int(value)
            else:
                python_value = float(value)
            record[name] = python_value
            self.scalars[name].set(float(value))
            if name in _EVENT_FIELDS and python_value:
                self.events.labels(event=name).inc()
        return record

    def serve(self, port: int) -> None:
        """Expose the registry over HTTP on 127.0.0.1:``port``."""
        start_http_server(port, addr="127.0.0.1", registry=self.registry)


__all__ = ["TelemetryMetrics"]
