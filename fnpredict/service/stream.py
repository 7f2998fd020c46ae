"""``fnpredict stream``: observations in (one line per tick), JSON lines out.

Contract:

- **Input.** A line holds ``assets × channels`` comma-separated numbers (or a
  JSON object ``{"obs": ...}``); with ``csv=True`` the first line is a header
  ``timestamp,name_1,...,name_N`` naming the assets and every later line starts
  with a timestamp (echoed in the output). An empty cell, ``nan`` or ``null``
  is a missing value (NaN); ``inf`` and numbers that overflow float64 (1e400)
  are ±Inf, which the step treats as missing and flags.
- **Output.** Exactly one JSON line per input line, in order, each with
  ``line`` (1-based, counted across restarts): the step's output flattened by
  path (see :mod:`fnpredict.service.records`) or, for a line that cannot be
  stepped, ``input_error`` and ``kind``. ``step_ms`` is the only timing field.
- **Assets.** ``n_assets > 1`` advances every asset with one
  ``jax.jit(jax.vmap(step))`` call; asset ``i`` then gives the outputs of a
  single-asset stream fed column ``i`` (every asset uses the same key
  schedule), to the vmap tolerance of 1e-10.
- **Keys.** The step for line ``n`` gets ``jax.random.fold_in(key(seed), n)``,
  so a run is reproducible from the seed and the line number alone.
- **Stop and resume.** SIGTERM or SIGINT lets the current line finish, writes
  a final snapshot (atomic) and returns normally (exit status 0). The
  snapshot holds the predictor state and the number of lines consumed.
  ``resume=True`` restores it; with ``resume_input="replay"`` (default) the
  input is the same source read again from its start and the lines already
  consumed are skipped, so the concatenated output of the interrupted and the
  resumed runs equals the output of one uninterrupted run (bit for bit, up to
  ``step_ms``). With ``"continue"`` the input starts at the first line not yet
  consumed.
- **Snapshot file.** ``b"FNPSTRM1"``, a uint32 header length, a JSON header
  (format, lines consumed, assets, seed, asset names, payload sha256) and the
  payload, an :func:`fnpredict.save_snapshot` file of the (batched) state.
  Written to a temporary file, fsync'ed and renamed, like every snapshot.
"""

import hashlib
import json
import logging
import math
import os
import signal
import struct
import sys
import tempfile
import threading
import time

import jax
import jax.numpy as jnp
import numpy as np

import fnpredict as fp

from .metrics import StreamMetrics
from .records import FLAG_LEVELS, OutputFlattener, dumps, scalar_fields

logger = logging.getLogger("fnpredict.stream")

STREAM_MAGIC = b"FNPSTRM1"
STREAM_FORMAT = 1
_NAN_WORDS = {"nan", "+nan", "-nan", "null", "none", "na"}
_INF_WORDS = {"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


class InputError(ValueError):
    """A line that cannot be stepped; ``kind`` is one of ``INPUT_ERROR_KINDS``."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def _parse_number(cell: str, kinds: set) -> float:
    text = cell.strip().lower()
    if text == "" or text in _NAN_WORDS:
        kinds.add("nan")
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise InputError("non_numeric", f"not a number: {cell.strip()[:40]!r}") from None
    if math.isnan(value):
        kinds.add("nan")
    elif math.isinf(value):
        kinds.add("inf" if text in _INF_WORDS else "overflow")
    return value


def parse_line(line: str, width: int, timestamped: bool = False):
    """Parse one input line into ``width`` float64 values.

    Returns:
        ``(values, kinds, timestamp)``: the values ``(width,)``, the set of
        non-fatal input kinds met (``nan``, ``inf``, ``overflow``) and the
        timestamp field (``None`` unless ``timestamped``).

    Raises:
        InputError: ``empty``, ``json``, ``non_numeric`` or ``arity``.
    """
    text = line.strip()
    if not text:
        raise InputError("empty", "empty line")
    kinds: set = set()
    timestamp = None
    if text.startswith("{"):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError("json", f"bad JSON: {error}") from None
        if not isinstance(payload, dict) or "obs" not in payload:
            raise InputError("json", "a JSON line needs an 'obs' field")
        timestamp = payload.get("timestamp")
        raw = payload["obs"]
        raw = raw if isinstance(raw, list) else [raw]
        cells = ["nan" if v is None else str(v) for v in raw]
    else:
        cells = text.split(",")
        if timestamped:
            timestamp, cells = cells[0].strip(), cells[1:]
    if len(cells) != width:
        raise InputError("arity", f"expected {width} value(s) per line, got {len(cells)}")
    values = np.asarray([_parse_number(cell, kinds) for cell in cells], dtype=np.float64)
    return values, kinds, timestamp


class _Stop(Exception):
    """Raised by the signal handler while the loop waits for input."""


def save_stream_snapshot(path, states, meta: dict) -> None:
    """Write the stream's state and progress to ``path`` atomically."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, inner = tempfile.mkstemp(prefix=".stream-state-", dir=directory)
    os.close(fd)
    try:
        fp.save_snapshot(inner, states)
        with open(inner, "rb") as handle:
            payload = handle.read()
    finally:
        if os.path.exists(inner):
            os.unlink(inner)
    header = dict(meta, format=STREAM_FORMAT, payload_sha256=hashlib.sha256(payload).hexdigest(),
                  payload_bytes=len(payload))
    header_bytes = json.dumps(header, sort_keys=True).encode()
    fd, temp = tempfile.mkstemp(prefix=".stream-snapshot-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(STREAM_MAGIC + struct.pack("<I", len(header_bytes)) + header_bytes + payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def load_stream_snapshot(path, like):
    """Read a stream snapshot into the structure of ``like``; returns ``(states, header)``.

    Raises:
        fnpredict.SnapshotError: not a stream snapshot, truncated, corrupt, or
            a state that does not fit ``like``.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as error:
        raise fp.SnapshotError(f"cannot read stream snapshot {path!r}: {error}") from error
    head = len(STREAM_MAGIC) + 4
    if len(blob) < head or blob[: len(STREAM_MAGIC)] != STREAM_MAGIC:
        raise fp.SnapshotError(f"{path!r} is not an fnpredict stream snapshot (bad magic)")
    (length,) = struct.unpack("<I", blob[len(STREAM_MAGIC) : head])
    try:
        header = json.loads(blob[head : head + length].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise fp.SnapshotError(f"{path!r} has a corrupt header: {error}") from error
    payload = blob[head + length :]
    if header.get("format") != STREAM_FORMAT:
        raise fp.SnapshotError(f"{path!r}: stream snapshot format {header.get('format')!r}, expected {STREAM_FORMAT}")
    if len(payload) != header.get("payload_bytes") or hashlib.sha256(payload).hexdigest() != header.get(
        "payload_sha256"
    ):
        raise fp.SnapshotError(f"{path!r} is truncated or corrupt (payload length or checksum mismatch)")
    fd, inner = tempfile.mkstemp(prefix=".stream-state-", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        states = fp.load_snapshot(inner, like)
    finally:
        os.unlink(inner)
    return states, header


def _one(state, obs, base_key, index):
    return fp.step(state, obs, jax.random.fold_in(base_key, index))


# Module level, so every service in a process shares one compilation per shape.
_step_one = jax.jit(_one)
_step_many = jax.jit(jax.vmap(_one, in_axes=(0, 0, None, None)))


class StreamService:
    """The stream loop: parse, step (vmapped over assets), emit, snapshot, measure.

    Args:
        config: the predictor config (one asset).
        n_assets: assets per line.
        seed: PRNG seed of ``init`` and of the key schedule.
        hyperparams: ``fp.Hyperparams`` (default ones when ``None``).
        snapshot: snapshot path (written every ``snapshot_every`` lines, on
            a stop signal and at end of input); ``None``: no snapshot.
        snapshot_every: lines between periodic snapshots (0: none).
        resume: restore ``snapshot`` first (it must exist).
        resume_input: ``"replay"`` or ``"continue"`` (see the module doc).
        csv: the input is a CSV with a header and a timestamp column.
        metrics: a :class:`StreamMetrics` (default: a new one).
        out: where JSON lines go (default ``sys.stdout``).
        exported_step: with one asset and the persistent cache enabled, step
            with the program ``fnpredict warmup`` serialized for this config
            when there is one (:mod:`fnpredict.runtime.exported`: a restart
            then does not trace the step; the records are the same bit for
            bit). ``False``: always the jitted step.
    """

    def __init__(self, config, *, n_assets: int = 1, seed: int = 0, hyperparams=None, snapshot=None,
                 snapshot_every: int = 0, resume: bool = False, resume_input: str = "replay", csv: bool = False,
                 metrics: StreamMetrics | None = None, out=None, exported_step: bool = True):
        if n_assets < 1:
            raise ValueError(f"assets must be >= 1, got {n_assets}")
        if resume_input not in ("replay", "continue"):
            raise ValueError(f"resume_input must be 'replay' or 'continue', got {resume_input!r}")
        if resume and not snapshot:
            raise ValueError("--resume needs --snapshot PATH")
        if resume and not os.path.exists(snapshot):
            raise FileNotFoundError(f"no snapshot to resume from: {snapshot!r}")
        if snapshot and not resume and os.path.exists(snapshot):
            raise ValueError(f"snapshot {snapshot!r} exists: pass --resume to continue from it, or remove it")
        self.config = config
        self.n_assets = n_assets
        self.channels = config.n_channels
        self.seed = seed
        self.snapshot = snapshot
        self.snapshot_every = snapshot_every
        self.csv = csv
        self.out = out if out is not None else sys.stdout
        self.metrics = metrics if metrics is not None else StreamMetrics(n_assets)
        self.flattener = OutputFlattener(tuple(config.kernel_names))
        self.key = jax.random.key(seed)
        self.asset_names = [str(i) for i in range(n_assets)]
        self.lines_done = 0
        self.skip = 0
        key = self.key
        if n_assets == 1:
            self.states = fp.init(config, key, hyperparams)
        else:
            self.states = jax.vmap(lambda _: fp.init(config, key, hyperparams))(jnp.arange(n_assets))
        if resume:
            self.states, header = load_stream_snapshot(snapshot, self.states)
            if header.get("assets") != n_assets:
                raise ValueError(f"snapshot has {header.get('assets')} asset(s), the stream {n_assets}")
            self.lines_done = int(header["lines"])
            self.asset_names = list(header.get("asset_names") or self.asset_names)
            self.skip = self.lines_done if resume_input == "replay" else 0
            logger.info("resumed from %s at line %d", snapshot, self.lines_done)

        self._step = _step_one if n_assets == 1 else _step_many
        self.uses_exported_step = False
        if exported_step and n_assets == 1 and jax.config.jax_compilation_cache_dir:
            self._use_exported_step(jax.config.jax_compilation_cache_dir)
        self._flag_names = None
        self._previous_flags: dict[str, np.ndarray] = {}
        self._stop = False
        self._busy = False

    def _use_exported_step(self, folder) -> None:
        """Step with the serialized single-asset step in ``folder``, if one matches (else keep the jitted one)."""
        from ..runtime.exported import load_exported_step

        obs = jnp.zeros((self.channels,) if self.channels > 1 else (), self.config.jnp_dtype)
        exported = load_exported_step(folder, self.states, obs, self.key)
        if exported is None:
            return

        def step(states, obs, key, number):
            # The key schedule of _one, outside the program.
            return exported(states, obs, jax.random.fold_in(key, number))

        self._step = step
        self.uses_exported_step = True
        logger.info("stepping with the exported step from %s", folder)

    # -- signals -------------------------------------------------------------------------------------------------
    def _on_signal(self, signum, _frame):
        self._stop = True
        logger.warning("signal %d: stopping after the current line", signum)
        if not self._busy:
            raise _Stop

    def request_stop(self) -> None:
        """Stop after the current line (what SIGTERM does)."""
        self._stop = True

    # -- snapshot ------------------------------------------------------------------------------------------------
    def write_snapshot(self) -> None:
        if not self.snapshot:
            return
        save_stream_snapshot(self.snapshot, self.states, {
            "lines": self.lines_done, "assets": self.n_assets, "seed": self.seed,
            "asset_names": self.asset_names, "fnpredict": fp.__version__,
        })
        self.metrics.snapshot_written()

    # -- one line ------------------------------------------------------------------------------------------------
    def _emit(self, record: dict) -> None:
        self.out.write(dumps(record) + "\n")
        self.out.flush()

    def _flags(self, leaves) -> dict[str, int]:
        if self._flag_names is None:
            self._flag_names = {name: name.rsplit(".", 1)[-1] for name, _ in leaves
                                if name.rsplit(".", 1)[-1] in FLAG_LEVELS}
        counts = {}
        values = dict(leaves)
        for name, flag in self._flag_names.items():
            raised = np.asarray(values[name], dtype=bool).reshape(-1)
            counts[flag] = int(raised.sum())
            previous = self._previous_flags.get(flag, np.zeros_like(raised))
            rising = np.flatnonzero(raised & ~previous)
            if rising.size:
                level = getattr(logging, FLAG_LEVELS[flag].upper())
                names = ",".join(self.asset_names[i] for i in rising[:8]) + ("..." if rising.size > 8 else "")
                logger.log(level, "line %d: %s raised (asset %s)", self.lines_done + 1, flag, names)
            self._previous_flags[flag] = raised
        return counts

    def process(self, line: str) -> dict:
        """Parse and step one line; emit and return its record."""
        number = self.lines_done + 1
        try:
            values, kinds, timestamp = parse_line(line, self.n_assets * self.channels, self.csv)
        except InputError as error:
            self.metrics.line_read((error.kind,))
            record = {"line": number, "input_error": str(error), "kind": error.kind}
            self._emit(record)
            self.lines_done = number
            return record
        self.metrics.line_read(sorted(kinds))
        if self.n_assets == 1:
            obs = values if self.channels > 1 else values[0]
        else:
            obs = values.reshape(self.n_assets, self.channels) if self.channels > 1 else values
        started = time.perf_counter()
        self.states, output = self._step(self.states, obs, self.key, np.uint32(number))
        leaves = self.flattener.host_leaves(output)
        seconds = time.perf_counter() - started
        fields = scalar_fields(leaves) if self.n_assets == 1 else None
        self.metrics.observe_step(seconds, fields, self._flags(leaves))
        if self.n_assets == 1:
            record = self.flattener.record(leaves)
        else:
            record = {"assets": [dict(self.flattener.record(leaves, i), asset=self.asset_names[i])
                                 for i in range(self.n_assets)]}
        record["line"] = number
        record["step_ms"] = seconds * 1e3
        if kinds:
            record["input_warning"] = sorted(kinds)
        if timestamp is not None:
            record["timestamp"] = timestamp
        self._emit(record)
        self.lines_done = number
        return record

    def _header(self, line: str) -> None:
        names = [cell.strip() for cell in line.strip().split(",")][1:]
        if len(names) != self.n_assets * self.channels:
            raise ValueError(f"CSV header names {len(names)} column(s) after the timestamp; "
                             f"the stream expects {self.n_assets * self.channels} (--assets x --channels)")
        if self.channels == 1:
            self.asset_names = names

    # -- the loop ------------------------------------------------------------------------------------------------
    def run(self, lines) -> dict:
        """Consume ``lines`` (an iterable of str) until it ends or a stop is requested."""
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                handlers[signum] = signal.signal(signum, self._on_signal)
        iterator = iter(lines)
        read = 0
        stopped = False
        try:
            try:
                if self.csv:
                    header = next(iterator, None)
                    if header is not None:
                        self._header(header)
                while True:
                    self._busy = False
                    if self._stop:
                        stopped = True
                        break
                    line = next(iterator, None)
                    if line is None:
                        break
                    read += 1
                    if read <= self.skip:
                        continue
                    self._busy = True
                    self.process(line)
                    if self.snapshot_every and self.lines_done % self.snapshot_every == 0:
                        self.write_snapshot()
            except _Stop:
                stopped = True
            self._busy = True  # a second signal now must not interrupt the final snapshot
            self.write_snapshot()
        finally:
            for signum, previous in handlers.items():
                signal.signal(signum, previous)
            self.metrics.alive = False
        if read < self.skip:
            logger.warning("input ended after %d line(s), before the %d already consumed", read, self.skip)
        return {"lines": self.lines_done, "steps": self.metrics.step_count, "stopped_by_signal": stopped,
                "snapshot": self.snapshot,
                "assets": self.n_assets}


__all__ = ["StreamService", "parse_line", "InputError", "save_stream_snapshot", "load_stream_snapshot"]


def run_from_args(args, config, hyperparams=None) -> int:
    """``fnpredict stream``'s body (the CLI only wires arguments)."""
    logging.basicConfig(stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(getattr(logging, args.log_level.upper()))
    metrics = StreamMetrics(args.assets)
    service = StreamService(
        config, n_assets=args.assets, seed=args.seed, hyperparams=hyperparams, snapshot=args.snapshot,
        snapshot_every=args.snapshot_every, resume=args.resume, resume_input=args.resume_input, csv=args.csv,
        metrics=metrics,
    )
    if args.metrics_port:
        port = metrics.serve(args.metrics_port)
        logger.info("metrics on http://127.0.0.1:%d/metrics, health on /healthz", port)
    try:
        summary = service.run(sys.stdin)
    finally:
        metrics.close()
    if args.json:
        print(dumps({"summary": summary}), flush=True)
    return 0
