"""Turn a step's output PyTree into flat, JSON-ready records, generically.

The telemetry tree grows (nested component infos), so no field list is kept
here: every leaf of the output is named by its path (``telemetry.`` dropped,
nested levels joined by ``.``), scalars become Python numbers, ``(K,)`` leaves
become ``{kernel: value}`` dicts, other arrays nested lists. Per-level leaves
(``quantiles``, ``quantile_levels``, the interval layer's per-level
diagnostics) stay lists even when L = K; for the Prometheus gauges each
quantile is also a scalar field ``quantile_<level>``.
"""

import json
import math

import jax
import numpy as np

#: Host-side log levels of the step's flags (the seed's interpretation).
FLAG_LEVELS = {
    "degraded_inference_mode": "warning",
    "mode_collapse_warning": "error",
    "emergency_mode": "critical",
}


def _key_name(entry) -> str:
    for attribute in ("name", "key", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def leaf_names(output) -> list[str]:
    """The record name of every leaf of ``output``, in tree order."""
    paths, _ = jax.tree_util.tree_flatten_with_path(output)
    names = []
    for path, _leaf in paths:
        parts = [_key_name(entry) for entry in path]
        if len(parts) > 1 and parts[0] == "telemetry":
            parts = parts[1:]
        names.append(".".join(parts))
    return names


#: Leaves indexed by quantile level, never by kernel.
_PER_LEVEL = ("quantiles", "quantile_levels", "intervals.raw_quantiles", "intervals.offsets",
              "intervals.hits")


def _native(value, kernel_names, by_kernel=True):
    value = np.asarray(value)
    if value.ndim == 0:
        if value.dtype == np.bool_:
            return bool(value)
        if np.issubdtype(value.dtype, np.integer):
            return int(value)
        number = float(value)
        return number if math.isfinite(number) else None
    if by_kernel and value.ndim == 1 and value.shape[0] == len(kernel_names):
        return {name: _native(v, kernel_names) for name, v in zip(kernel_names, value)}
    return [_native(v, kernel_names, by_kernel) for v in value]


class OutputFlattener:
    """Flatten :class:`fnpredict.StepOutput` values (single or batched over assets).

    Args:
        kernel_names: the kernels of the config, in order (names the ``(K,)`` leaves).
    """

    def __init__(self, kernel_names: tuple[str, ...]):
        self.kernel_names = tuple(kernel_names)
        self._names = None

    def host_leaves(self, output) -> list[tuple[str, np.ndarray]]:
        """(name, host array) for every leaf; one device-to-host transfer."""
        leaves = jax.tree_util.tree_leaves(jax.device_get(output))
        if self._names is None:
            self._names = leaf_names(output)
        return list(zip(self._names, (np.asarray(leaf) for leaf in leaves)))

    def record(self, leaves, asset=None) -> dict:
        """One asset's record from ``host_leaves`` (``asset`` indexes the batch axis)."""
        return {
            name: _native(value if asset is None else value[asset], self.kernel_names, name not in _PER_LEVEL)
            for name, value in leaves
        }


def scalar_fields(leaves, asset=None) -> dict:
    """Numeric scalar leaves only (what a gauge can hold), by record name."""
    fields = {}
    levels = None
    for name, value in leaves:
        value = np.asarray(value if asset is None else value[asset])
        if value.ndim == 0:
            fields[name] = float(value)
        elif name == "quantile_levels":
            levels = value
    for name, value in leaves:
        if name == "quantiles" and levels is not None:
            value = np.asarray(value if asset is None else value[asset])
            for level, quantile in zip(levels, value):
                fields[f"quantile_{float(level):g}"] = float(quantile)
    return fields


def dumps(record: dict) -> str:
    """Deterministic JSON (sorted keys, non-finite numbers as null)."""
    return json.dumps(record, sort_keys=True, allow_nan=False, default=_default)


def _default(value):
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        item = value.item()
        return item if not isinstance(item, float) or math.isfinite(item) else None
    raise TypeError(type(value).__name__)


__all__ = ["OutputFlattener", "leaf_names", "scalar_fields", "dumps", "FLAG_LEVELS"]
