"""A real Prometheus server (Debian's ``prometheus``) scrapes a running stream and
its HTTP API returns the step-latency histogram (``make test-integration``)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import pytest

from test_stream import SMALL, _env, _free_port, _series


def _get(url: str):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


@pytest.mark.integration
def test_prometheus_scrapes_the_stream_latency_histogram():
    binary = shutil.which("prometheus")
    assert binary, "prometheus not installed (make test-integration installs Debian's package)"
    stream_port, prometheus_port = _free_port(), _free_port()
    folder = tempfile.mkdtemp(prefix="fnpredict-prometheus-")
    config = os.path.join(folder, "prometheus.yml")
    with open(config, "w") as handle:
        handle.write(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: fnpredict-stream\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{stream_port}']\n"
        )
    server = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(folder, 'data')}",
         f"--web.listen-address=127.0.0.1:{prometheus_port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stream = subprocess.Popen([sys.executable, "-m", "fnpredict", "stream", *SMALL, "--metrics-port",
                               str(stream_port)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, text=True, env=_env())
    done = threading.Event()

    def feed():
        for line in _series(60_000):
            if done.is_set():
                break
            stream.stdin.write(line + "\n")
            stream.stdin.flush()
            time.sleep(0.002)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    api = f"http://127.0.0.1:{prometheus_port}/api/v1/query?query="
    query = "histogram_quantile(0.99, sum by (le) (rate(fnpredict_stream_step_latency_seconds_bucket[15s])))"
    result, count = [], []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            time.sleep(2)
            try:
                count = _get(api + urllib.parse.quote("fnpredict_stream_step_latency_seconds_count"))["data"]["result"]
                result = _get(api + urllib.parse.quote(query))["data"]["result"]
            except OSError:
                continue  # Prometheus still starting
            if count and result and result[0]["value"][1] not in ("NaN", "+Inf"):
                break
        targets = _get(f"http://127.0.0.1:{prometheus_port}/api/v1/targets")["data"]["activeTargets"]
    finally:
        done.set()
        writer.join(timeout=30)
        stream.stdin.close()
        stream_code = stream.wait(timeout=120)
        server.terminate()
        server.wait(timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
    assert targets and targets[0]["health"] == "up", targets
    assert count and float(count[0]["value"][1]) > 0, count
    assert result, "the latency histogram query returned no data"
    p99 = float(result[0]["value"][1])
    print(f"\nPrometheus: {count[0]['value'][1]} steps scraped, p99 step latency (15 s rate) {p99 * 1e3:.2f} ms")
    assert 0 < p99 < 2.0  # the top finite bucket: a step never takes seconds
    assert stream_code == 0
