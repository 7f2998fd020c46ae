"""Atomic, checksummed snapshots of a predictor state (hot start).

File layout (all little-endian)::

    b"FNPSNAP1"                    8-byte magic
    uint32 header_length
    header (UTF-8 JSON)            format, fnpredict/jax/equinox versions,
                                   config, payload sha256 and length
    payload                        equinox.tree_serialise_leaves of the state

Writing goes to a temporary file in the same directory, is fsync'ed, then
renamed over the target (``os.replace`` is atomic on POSIX), and the directory
is fsync'ed: a crash leaves either the old snapshot or the new one, never a
torn file. Reading checks the magic, the header, the length, the checksum, the
format version and the config before deserialising into ``like``.
"""

import hashlib
import io
import json
import os
import struct
import tempfile
from importlib.metadata import PackageNotFoundError, version

import equinox as eqx
import jax
import numpy as np

from ..state import PredictorState

MAGIC = b"FNPSNAP1"
FORMAT_VERSION = 2  # 2: components (kernels, rule, guards) as config values


class SnapshotError(Exception):
    """A snapshot could not be written or read back faithfully."""


def _versions() -> dict:
    def v(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return "unknown"

    return {"fnpredict": v("fnpredict"), "jax": jax.__version__, "equinox": v("equinox")}


def _leaf_signature(state) -> list:
    return [[list(np.shape(leaf)), str(np.asarray(leaf).dtype)] for leaf in jax.tree_util.tree_leaves(state)]


def save_snapshot(path: str | os.PathLike, state: PredictorState) -> None:
    """Write ``state`` to ``path`` atomically with a checksum and version stamp.

    Raises:
        TypeError: ``state`` is not a :class:`PredictorState`.
        SnapshotError: the file could not be written (the previous file, if
            any, is left intact).
    """
    if not isinstance(state, PredictorState):
        raise TypeError(f"state must be a PredictorState, got {type(state).__name__}")
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, jax.device_get(state))
    payload = buffer.getvalue()
    header = {
        "format": FORMAT_VERSION,
        "versions": _versions(),
        "config": state.config.describe(),
        "leaves": _leaf_signature(state),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "payload_bytes": len(payload),
    }
    header_bytes = json.dumps(header, sort_keys=True).encode()
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, temp_path = tempfile.mkstemp(prefix=".snapshot-", dir=directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(MAGIC)
                handle.write(struct.pack("<I", len(header_bytes)))
                handle.write(header_bytes)
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp_path, path)
        except BaseException:
            if os.path.exists(temp_path):
                os.unlink(temp_path)
            raise
        directory_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
    except OSError as error:
        raise SnapshotError(f"could not write snapshot {path!r}: {error}") from error


def read_header(path: str | os.PathLike) -> tuple[dict, bytes]:
    """Read and verify a snapshot's header and payload (no deserialisation)."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            blob = handle.read()
    except OSError as error:
        raise SnapshotError(f"cannot read snapshot {path!r}: {error}") from error
    if len(blob) < len(MAGIC) + 4 or blob[: len(MAGIC)] != MAGIC:
        raise SnapshotError(f"{path!r} is not an fnpredict snapshot (bad magic or truncated header)")
    (header_length,) = struct.unpack("<I", blob[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if len(blob) < start + header_length:
        raise SnapshotError(f"{path!r} is truncated inside its header")
    try:
        header = json.loads(blob[start : start + header_length].decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SnapshotError(f"{path!r} has a corrupt header: {error}") from error
    payload = blob[start + header_length :]
    if header.get("format") != FORMAT_VERSION:
        raise SnapshotError(
            f"{path!r} has snapshot format {header.get('format')!r}; this fnpredict reads format {FORMAT_VERSION}"
        )
    if len(payload) != header.get("payload_bytes"):
        raise SnapshotError(
            f"{path!r} is truncated: payload has {len(payload)} bytes, header says {header.get('payload_bytes')}"
        )
    if hashlib.sha256(payload).hexdigest() != header.get("payload_sha256"):
        raise SnapshotError(f"{path!r} is corrupt: payload checksum mismatch")
    return header, payload


def load_snapshot(
    path: str | os.PathLike, like: PredictorState, *, allow_version_mismatch: bool = False
) -> PredictorState:
    """Read a snapshot written by :func:`save_snapshot` into the structure of ``like``.

    Args:
        path: the snapshot file.
        like: a template state of the same config (e.g. ``fp.init(cfg)``).
        allow_version_mismatch: accept a snapshot written by another fnpredict
            version when the config and the state layout still match.

    Raises:
        SnapshotError: corruption, truncation, a different config, a different
            state layout or an incompatible format/version, with the reason.
    """
    if not isinstance(like, PredictorState):
        raise TypeError(f"like must be a PredictorState template, got {type(like).__name__}")
    header, payload = read_header(path)
    saved_version = header.get("versions", {}).get("fnpredict")
    running_version = _versions()["fnpredict"]
    if saved_version != running_version and not allow_version_mismatch:
        raise SnapshotError(
            f"snapshot {os.fspath(path)!r} was written by fnpredict {saved_version}, this is {running_version}; "
            "pass allow_version_mismatch=True to try anyway"
        )
    expected = like.config.describe()
    if header.get("config") != expected:
        diff = sorted(
            key for key in set(expected) | set(header.get("config", {}))
            if expected.get(key) != header.get("config", {}).get(key)
        )
        raise SnapshotError(f"snapshot {os.fspath(path)!r} was made with a different config (fields {diff})")
    if header.get("leaves") != _leaf_signature(like):
        saved = header.get("versions", {})
        raise SnapshotError(
            f"snapshot {os.fspath(path)!r} has a different state layout (made with {saved}, "
            f"running {_versions()}); it cannot be restored into this template"
        )
    try:
        return eqx.tree_deserialise_leaves(io.BytesIO(payload), like)
    except Exception as error:  # equinox raises assorted errors on malformed payloads
        raise SnapshotError(f"cannot deserialise snapshot {os.fspath(path)!r}: {error}") from error


__all__ = ["SnapshotError", "save_snapshot", "load_snapshot", "read_header"]
