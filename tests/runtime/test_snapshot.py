"""Snapshots: bit-identical round trip, restore-and-continue equals an
uninterrupted run, and every kind of damage raises SnapshotError."""

import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.runtime import snapshot as snap

CONFIG = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=48, scales=(2.0, 3.0, 4.5, 6.75, 10.0),
                            levy_window=40)


@pytest.fixture(scope="module")
def series():
    return np.cumsum(np.random.default_rng(0).standard_normal(240) * 0.01) + 5.0


@pytest.fixture(scope="module")
def halfway(series):
    state = fp.init(CONFIG, jax.random.key(0))
    return fp.fit(state, series[:120], jax.random.key(1))


def _assert_identical(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_bit_identical(tmp_path, halfway):
    path = tmp_path / "state.fnp"
    fp.save_snapshot(path, halfway)
    restored = fp.load_snapshot(path, fp.init(CONFIG))
    _assert_identical(restored, halfway)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".snapshot-")], "temp file left behind"


def test_restore_then_continue_equals_uninterrupted(tmp_path, series, halfway):
    key = jax.random.key(9)
    uninterrupted, outputs = fp.predict(halfway, series[120:], key)
    path = tmp_path / "hot.fnp"
    fp.save_snapshot(path, halfway)
    restored = fp.load_snapshot(path, fp.init(CONFIG))
    continued, outputs_2 = fp.predict(restored, series[120:], key)
    _assert_identical(continued, uninterrupted)
    _assert_identical(outputs_2, outputs)


def _write(tmp_path, state, name="s.fnp"):
    path = tmp_path / name
    fp.save_snapshot(path, state)
    return path


def test_corruption_is_detected(tmp_path, halfway):
    path = _write(tmp_path, halfway)
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(fp.SnapshotError, match="checksum"):
        fp.load_snapshot(path, fp.init(CONFIG))


def test_truncation_is_detected(tmp_path, halfway):
    path = _write(tmp_path, halfway)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 100])
    with pytest.raises(fp.SnapshotError, match="truncated"):
        fp.load_snapshot(path, fp.init(CONFIG))
    path.write_bytes(blob[:10])
    with pytest.raises(fp.SnapshotError):
        fp.load_snapshot(path, fp.init(CONFIG))
    path.write_bytes(b"not a snapshot at all")
    with pytest.raises(fp.SnapshotError, match="magic"):
        fp.load_snapshot(path, fp.init(CONFIG))


def test_config_mismatch_is_detected(tmp_path, halfway):
    path = _write(tmp_path, halfway)
    other = CONFIG.replace(ttl_max=9)
    with pytest.raises(fp.SnapshotError, match="ttl_max"):
        fp.load_snapshot(path, fp.init(other))


def _rewrite_header(path, change):
    blob = path.read_bytes()
    (length,) = struct.unpack("<I", blob[8:12])
    header = json.loads(blob[12 : 12 + length])
    change(header)
    new = json.dumps(header, sort_keys=True).encode()
    path.write_bytes(blob[:8] + struct.pack("<I", len(new)) + new + blob[12 + length :])


def test_version_mismatch_is_detected(tmp_path, halfway):
    path = _write(tmp_path, halfway)
    _rewrite_header(path, lambda h: h["versions"].update(fnpredict="0.0.1"))
    with pytest.raises(fp.SnapshotError, match="0.0.1"):
        fp.load_snapshot(path, fp.init(CONFIG))
    restored = fp.load_snapshot(path, fp.init(CONFIG), allow_version_mismatch=True)
    _assert_identical(restored, halfway)
    _rewrite_header(path, lambda h: h.update(format=99))
    with pytest.raises(fp.SnapshotError, match="format"):
        fp.load_snapshot(path, fp.init(CONFIG))


def test_failed_write_keeps_the_previous_snapshot(tmp_path, halfway, monkeypatch):
    path = _write(tmp_path, halfway)
    before = path.read_bytes()
    later, _ = fp.step(halfway, jnp.asarray(5.0), jax.random.key(0))

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(snap.os, "replace", broken_replace)
    with pytest.raises(fp.SnapshotError, match="disk full"):
        fp.save_snapshot(path, later)
    assert path.read_bytes() == before
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".snapshot-")]


def test_wrong_arguments():
    with pytest.raises(TypeError):
        fp.save_snapshot("x.fnp", {"not": "a state"})
    with pytest.raises(fp.SnapshotError, match="cannot read"):
        fp.load_snapshot("/nonexistent/dir/x.fnp", fp.init(CONFIG))
