"""The stream service: stop/resume parity, bad input counted by kind, metrics and
health over HTTP, many assets in one vmapped step.

The long variants (10 restarts, 10⁵ lines) carry the ``integration`` marker and
run in ``make test-integration``; ``make test`` runs the same checks smaller.
"""

import hashlib
import io
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

import fnpredict as fp
from fnpredict.service.metrics import INPUT_ERROR_KINDS
from fnpredict.service.stream import InputError, StreamService, parse_line

SMALL = ["--kernels", "levy,signature", "--buffer-size", "64"]
CONFIG = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=64)
TIMING_FIELDS = ("step_ms",)


def _env(tmp_path_factory=None):
    env = dict(os.environ)
    # One compilation cache for all stream processes of the session (not the user's).
    env.setdefault("FNPREDICT_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "fnpredict-test-cache"))
    return env


def _series(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    prices = 4.0 + np.cumsum(rng.standard_normal(n) * 0.01)
    return [f"{v:.6f}" for v in prices]


def _stream_cmd(*extra):
    return [sys.executable, "-m", "fnpredict", "stream", *SMALL, *extra]


def _strip(line: str) -> str:
    record = json.loads(line)
    for name in TIMING_FIELDS:
        record.pop(name, None)
    return json.dumps(record, sort_keys=True)


def _digest(lines) -> str:
    return hashlib.sha256("\n".join(_strip(line) for line in lines).encode()).hexdigest()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- parsing ---------------------------------------------------------------------------------------------------------
def test_parse_line_kinds():
    assert parse_line("4.5", 1)[0].tolist() == [4.5]
    values, kinds, _ = parse_line("1,nan,inf,1e400,", 5)
    assert math.isnan(values[1]) and math.isinf(values[2]) and math.isinf(values[3]) and math.isnan(values[4])
    assert kinds == {"nan", "inf", "overflow"}
    assert parse_line('{"obs": [1, null], "timestamp": "t"}', 2)[2] == "t"
    assert parse_line("2026-01-02,1,2", 2, timestamped=True)[2] == "2026-01-02"
    for line, kind in (("", "empty"), ("  ", "empty"), ("abc", "non_numeric"), ("1,2", "arity"), ("{x", "json")):
        with pytest.raises(InputError) as info:
            parse_line(line, 1)
        assert info.value.kind == kind and kind in INPUT_ERROR_KINDS


# -- stop and resume -------------------------------------------------------------------------------------------------
def _run_until(cmd, input_path, stop_after: int | None, env, signum=signal.SIGTERM):
    """Run a stream on ``input_path``; signal it once ``stop_after`` lines came out."""
    with open(input_path) as stdin:
        process = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                   env=env)
        lines = []
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if stop_after is not None and len(lines) == stop_after:
                process.send_signal(signum)
        code = process.wait(timeout=300)
    return code, lines


def check_restarts(tmp_path, runs: int, n_lines: int = 2000, seed: int = 13, signals=(signal.SIGTERM,)):
    lines = _series(n_lines)
    rng = random.Random(seed)
    for i in rng.sample(range(n_lines), n_lines // 100):  # a little garbage, so error lines are resumed too
        lines[i] = rng.choice(["abc", "", "nan", "inf", "1e400"])
    input_path = tmp_path / "input.txt"
    input_path.write_text("\n".join(lines) + "\n")
    env = _env()
    code, reference = _run_until(_stream_cmd(), input_path, None, env)
    assert code == 0 and len(reference) == n_lines
    expected = _digest(reference)
    report = []
    for run in range(runs):
        snapshot = tmp_path / f"run{run}.fnps"
        stop_at = rng.randrange(1, n_lines)
        signum = signals[run % len(signals)]
        code, first = _run_until(_stream_cmd("--snapshot", str(snapshot)), input_path, stop_at, env, signum)
        assert code == 0, f"run {run}: exit {code} after signal {signum}"
        # The child may run ahead of our reading by a pipe buffer, even to the end of the input.
        assert stop_at <= len(first) <= n_lines, (stop_at, len(first))
        code, second = _run_until(_stream_cmd("--snapshot", str(snapshot), "--resume"), input_path, None, env)
        assert code == 0
        got = _digest(first + second)
        report.append((stop_at, len(first), got == expected))
        assert len(first) + len(second) == n_lines, report
        assert got == expected, f"run {run}: SIGTERM at line {stop_at} ({len(first)} written): output differs"
    print(f"\nstream restarts: {runs} runs, reference sha256 {expected[:16]}..., "
          f"(SIGTERM at, lines before stop, equal): {report}")


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_sigterm_or_ctrl_c_then_resume_equals_one_run(tmp_path):
    check_restarts(tmp_path, runs=2, n_lines=800, signals=(signal.SIGTERM, signal.SIGINT))


@pytest.mark.integration
def test_sigterm_then_resume_equals_one_run_ten_times(tmp_path):
    check_restarts(tmp_path, runs=10)


def test_existing_snapshot_needs_resume(tmp_path):
    snapshot = tmp_path / "s.fnps"
    snapshot.write_bytes(b"x")
    process = subprocess.run(_stream_cmd("--snapshot", str(snapshot)), input="4.0\n", capture_output=True,
                             text=True, env=_env(), timeout=300)
    assert process.returncode == 2 and "--resume" in process.stderr
    process = subprocess.run(_stream_cmd("--snapshot", str(snapshot), "--resume"), input="4.0\n",
                             capture_output=True, text=True, env=_env(), timeout=300)
    assert process.returncode != 0 and "not an fnpredict stream snapshot" in process.stderr


# -- load: garbage counted, metrics, health, memory --------------------------------------------------------------
def _scrape(port: int, path: str = "/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return response.status, response.read().decode()


def _metric(text: str, name: str, labels: str = "") -> float:
    for line in text.splitlines():
        if line.startswith(name + labels + " ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    raise KeyError(name + labels)


def _histogram_quantile(text: str, name: str, q: float) -> float:
    """Prometheus's ``histogram_quantile``: linear interpolation inside the bucket."""
    buckets = []
    for line in text.splitlines():
        if line.startswith(name + "_bucket{"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if bound == "+Inf" else float(bound), float(line.rsplit(" ", 1)[1])))
    buckets.sort()
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-300)
        lower, below = bound, count
    return math.inf


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


GARBAGE = ("abc", "", "nan", "NaN", "inf", "-inf", "1e400", "-1e400", "1.2.3")
GARBAGE_KIND = {"abc": "non_numeric", "": "empty", "nan": "nan", "NaN": "nan", "inf": "inf", "-inf": "inf",
                "1e400": "overflow", "-1e400": "overflow", "1.2.3": "non_numeric"}


def check_load(tmp_path, n_lines: int, rss_marks: tuple[int, int] | None = None):
    rng = random.Random(5)
    lines = _series(n_lines, seed=2)
    expected = dict.fromkeys(INPUT_ERROR_KINDS, 0)
    for i in rng.sample(range(n_lines), n_lines // 100):
        lines[i] = GARBAGE[i % len(GARBAGE)]
        expected[GARBAGE_KIND[lines[i]]] += 1
    port = _free_port()
    snapshot = tmp_path / "load.fnps"
    process = subprocess.Popen(_stream_cmd("--metrics-port", str(port), "--snapshot", str(snapshot),
                                           "--snapshot-every", str(n_lines // 10)), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=_env())

    def feed():
        for line in lines:
            process.stdin.write(line + "\n")
        process.stdin.flush()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    count, rss, bad_json = 0, {}, 0
    for line in process.stdout:
        count += 1
        try:
            json.loads(line)
        except json.JSONDecodeError:
            bad_json += 1
        if rss_marks and count in rss_marks:
            rss[count] = _rss_kib(process.pid)
        if count == n_lines:
            break
    writer.join()
    status, health = _scrape(port, "/healthz")
    assert status == 200 and json.loads(health)["lines"] == n_lines
    _, text = _scrape(port)
    process.stdin.close()
    assert process.wait(timeout=120) == 0
    assert count == n_lines and bad_json == 0
    counted = {kind: _metric(text, "fnpredict_stream_input_errors_total", f'{{kind="{kind}"}}')
               for kind in INPUT_ERROR_KINDS}
    assert counted == {k: float(v) for k, v in expected.items()}, (counted, expected)
    assert _metric(text, "fnpredict_stream_lines_total") == n_lines
    assert 0 <= _metric(text, "fnpredict_stream_snapshot_age_seconds") < 600  # written every n/10 lines
    assert abs(_metric(text, "fnpredict_stream_last_observation_timestamp_seconds") - time.time()) < 600
    stepped = n_lines - sum(expected[k] for k in ("empty", "non_numeric", "json", "arity"))
    assert _metric(text, "fnpredict_stream_step_latency_seconds_count") == stepped
    p99 = _histogram_quantile(text, "fnpredict_stream_step_latency_seconds", 0.99)
    growth = None
    if rss_marks:
        growth = rss[rss_marks[1]] / rss[rss_marks[0]] - 1
    print(f"\nstream load: {n_lines} lines, garbage by kind {counted}, p99 step latency {p99 * 1e3:.2f} ms "
          f"(from the histogram), RSS {rss} KiB, growth {growth}")
    if rss_marks:
        assert growth <= 0.10, f"resident memory grew {growth:.1%} between lines {rss_marks}"


def test_load_with_garbage_counted_by_kind(tmp_path):
    check_load(tmp_path, 3000)


@pytest.mark.integration
def test_load_hundred_thousand_lines(tmp_path):
    check_load(tmp_path, 100_000, rss_marks=(10_000, 100_000))


# -- many assets -----------------------------------------------------------------------------------------------------
def check_assets(n_assets: int, n_lines: int = 100):
    rng = np.random.default_rng(3)
    data = 4.0 + np.cumsum(rng.standard_normal((n_lines, n_assets)) * 0.01, axis=0)
    data[10, 5] = np.nan
    names = [f"A{i}" for i in range(n_assets)]
    rows = ["timestamp," + ",".join(names)] + [
        f"2026-01-{1 + t // 24:02d}T{t % 24:02d}:00," + ",".join(f"{v:.17g}" for v in data[t]) for t in range(n_lines)
    ]
    process = subprocess.run(_stream_cmd("--assets", str(n_assets), "--csv"), input="\n".join(rows) + "\n",
                             capture_output=True, text=True, env=_env(), timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    batched = [json.loads(line) for line in process.stdout.splitlines()]
    assert len(batched) == n_lines and batched[0]["timestamp"].startswith("2026-01-01")
    assert [a["asset"] for a in batched[0]["assets"]] == names
    worst = 0.0
    for i in range(n_assets):
        out = io.StringIO()
        StreamService(CONFIG, out=out).run(f"{v:.17g}\n" for v in data[:, i])
        single = [json.loads(line) for line in out.getvalue().splitlines()]
        for t in range(n_lines):
            got = batched[t]["assets"][i]
            for field in ("prediction", "weights", "kernel_predictions", "quantiles"):
                a, b = single[t][field], got[field]
                a = list(a.values()) if isinstance(a, dict) else (a if isinstance(a, list) else [a])
                b = list(b.values()) if isinstance(b, dict) else (b if isinstance(b, list) else [b])
                for x, y in zip(a, b):
                    assert (x is None) == (y is None)
                    if x is not None:
                        worst = max(worst, abs(x - y))
            assert single[t]["observation_missing"] == got["observation_missing"]
    print(f"\n--assets {n_assets}: max |batched - single| over prediction, weights, kernel predictions = {worst:.3g}")
    # vmap vs single call is not bitwise in XLA; 1e-10 is the parity bound of DESIGN §5.
    assert worst <= 1e-10


def test_assets_vmapped_equal_single_asset_runs():
    check_assets(8)


@pytest.mark.integration
def test_sixty_four_assets_equal_sixty_four_single_runs():
    check_assets(64)


def test_flags_go_to_the_log_at_their_levels(caplog):
    import logging

    out = io.StringIO()
    service = StreamService(CONFIG, out=out)
    with caplog.at_level(logging.INFO, logger="fnpredict.stream"):
        # A long run of missing values drives the staleness guard to degraded mode.
        service.run(["4.0\n"] * 5 + ["nan\n"] * 40)
    degraded = [r for r in caplog.records if "degraded_inference_mode" in r.getMessage()]
    assert degraded and all(r.levelno == logging.WARNING for r in degraded)
    assert service.metrics.flags.labels(flag="degraded_inference_mode")._value.get() > 0


def test_telemetry_metrics_flatten_generically():
    import jax
    from prometheus_client import generate_latest

    from fnpredict.runtime.metrics import TelemetryMetrics

    state = fp.init(CONFIG, jax.random.key(0))
    metrics = TelemetryMetrics(CONFIG.kernels)
    for value in (4.0, float("nan"), 4.01):
        state, out = fp.step(state, value, jax.random.key(1))
        record = metrics.observe(out)
    text = generate_latest(metrics.registry).decode()
    assert set(record["weights"]) == set(CONFIG.kernels)
    assert 'fnpredict_output{field="prediction"}' in text
    # The quantiles: a list per level in the record, one gauge per level.
    assert len(record["quantiles"]) == len(CONFIG.quantile_levels) and record["quantile_levels"][0] == 0.01
    assert all(a <= b for a, b in zip(record["quantiles"], record["quantiles"][1:]))
    assert 'fnpredict_output{field="quantile_0.01"}' in text and 'fnpredict_output{field="quantile_0.99"}' in text
    assert 'fnpredict_events_total{event="observation_missing"} 1.0' in text


def test_exported_step_gives_the_same_records(tmp_path):
    # With the step `fnpredict warmup` serialized, a single-asset stream steps
    # with it (a restart then does not trace the step): every record equal,
    # bit for bit, to the jitted step's (up to step_ms).
    import jax
    import jax.numpy as jnp

    from fnpredict.runtime.exported import save_exported_step

    lines = [f"{v}\n" for v in _series(60, seed=4)] + ["nan\n", "junk\n", "4.01\n"]
    reference = io.StringIO()
    StreamService(CONFIG, out=reference, exported_step=False).run(lines)
    like = StreamService(CONFIG, out=io.StringIO(), exported_step=False)
    save_exported_step(tmp_path, like.states, jnp.zeros((), jnp.float64), jax.random.key(0))
    out = io.StringIO()
    service = StreamService(CONFIG, out=out, exported_step=False)
    service._use_exported_step(tmp_path)
    assert service.uses_exported_step
    service.run(lines)
    assert [_strip(line) for line in out.getvalue().splitlines()] == [
        _strip(line) for line in reference.getvalue().splitlines()]
