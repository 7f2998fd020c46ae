"""Prometheus metrics and ``GET /healthz`` of the stream service.

One private :class:`~prometheus_client.CollectorRegistry` per service (nothing
touches the global default registry), every label drawn from a fixed set
(input error kinds, flag names, telemetry field names of the config), so the
series count is bounded whatever the input or the number of assets. Served by
a small threaded HTTP server on 127.0.0.1 only:

- ``/metrics``: the Prometheus text format;
- ``/healthz``: ``200`` and a JSON body while the stream loop is alive
  (``503`` once it is shutting down).
"""

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

#: Why a line was not a clean observation. ``empty``, ``non_numeric``,
#: ``json`` and ``arity`` lines are not stepped (the output has ``input_error``);
#: ``nan``, ``inf`` and ``overflow`` (a finite-looking number such as 1e400
#: that overflows float64) are stepped as missing observations.
INPUT_ERROR_KINDS = ("empty", "non_numeric", "json", "arity", "nan", "inf", "overflow")

#: Step latency buckets in seconds: 50 µs to 2 s, about x2 apart (a step is
#: ~0.1-2 ms on one CPU core, a vmapped step over many assets longer).
LATENCY_BUCKETS = (5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 2e-2, 5e-2, 0.1, 0.2, 0.5, 1.0, 2.0)


class StreamMetrics:
    """The stream's metrics in a private registry.

    Args:
        n_assets: assets advanced per line (telemetry gauges only for one).
        registry: a registry to fill (default: a new private one).
    """

    def __init__(self, n_assets: int = 1, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        self.n_assets = n_assets
        r = self.registry
        self.step_latency = Histogram(
            "fnpredict_stream_step_latency_seconds", "wall time of one (vmapped) step, host to host",
            buckets=LATENCY_BUCKETS, registry=r)
        self.lines = Counter("fnpredict_stream_lines", "input lines read", registry=r)
        self.steps = Counter("fnpredict_stream_steps", "lines stepped (all assets at once)", registry=r)
        self.input_errors = Counter("fnpredict_stream_input_errors", "bad input lines by kind", ["kind"],
                                    registry=r)
        for kind in INPUT_ERROR_KINDS:
            self.input_errors.labels(kind=kind)
        self.flags = Counter("fnpredict_stream_flags", "assets raising a step flag (per step)", ["flag"],
                             registry=r)
        self.assets = Gauge("fnpredict_stream_assets", "assets advanced per line", registry=r)
        self.assets.set(n_assets)
        self.last_snapshot_time = math.nan
        self.snapshot_age = Gauge("fnpredict_stream_snapshot_age_seconds",
                                  "seconds since the last snapshot was written (NaN: none yet)", registry=r)
        self.snapshot_age.set_function(lambda: time.time() - self.last_snapshot_time)
        self.last_observation = Gauge("fnpredict_stream_last_observation_timestamp_seconds",
                                      "Unix time of the last line stepped", registry=r)
        self.last_observation.set(math.nan)
        self.telemetry = Gauge("fnpredict_stream_telemetry", "scalar step output by field (single asset only)",
                               ["field"], registry=r)
        self.started = time.time()
        self.line_count = 0
        self.step_count = 0
        self.alive = True
        self._server = None

    def observe_step(self, seconds: float, fields: dict[str, float] | None, flag_counts: dict[str, int]):
        self.step_latency.observe(seconds)
        self.steps.inc()
        self.step_count += 1
        self.last_observation.set(time.time())
        for flag, count in flag_counts.items():
            if count:
                self.flags.labels(flag=flag).inc(count)
        if fields is not None and self.n_assets == 1:
            for name, value in fields.items():
                self.telemetry.labels(field=name).set(value)

    def line_read(self, error_kinds=()) -> None:
        self.lines.inc()
        self.line_count += 1
        for kind in error_kinds:
            self.input_errors.labels(kind=kind).inc()

    def snapshot_written(self) -> None:
        self.last_snapshot_time = time.time()

    def health(self) -> dict:
        return {
            "status": "ok" if self.alive else "stopping",
            "uptime_s": time.time() - self.started,
            "lines": self.line_count,
            "steps": self.step_count,
            "assets": self.n_assets,
            "snapshot_age_s": None if math.isnan(self.last_snapshot_time) else time.time() - self.last_snapshot_time,
        }

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` and ``/healthz`` on ``host:port`` (0: any free port); returns the port."""
        metrics = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, status, kind = generate_latest(metrics.registry), 200, CONTENT_TYPE_LATEST
                elif path == "/healthz":
                    payload = metrics.health()
                    body = json.dumps(payload).encode()
                    status, kind = (200 if metrics.alive else 503), "application/json"
                else:
                    body, status, kind = b"not found\n", 404, "text/plain"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep stderr for the service's own log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        thread = threading.Thread(target=self._server.serve_forever, name="fnpredict-metrics", daemon=True)
        thread.start()
        return self._server.server_address[1]

    def close(self) -> None:
        self.alive = False
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


__all__ = ["StreamMetrics", "INPUT_ERROR_KINDS", "LATENCY_BUCKETS"]
