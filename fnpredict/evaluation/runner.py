"""Run variants over series, one compiled program per distinct config and series length.

The traced part is :func:`run_population`: for one static config, a stacked
population of hyperparameters (axis 0) and a batch of series (axis 1, padded
to one length), ``vmap(vmap(init → scan))`` inside one ``jax.jit``, with the
per-step keys split inside the program (every variant and series sees the
same keys: common random numbers, so differences between variants are not
Monte Carlo noise). Only the outputs the metrics need leave the device.
Nothing is cached across processes except by JAX's own compilation cache.
"""

import dataclasses
import functools
import time

import jax
import numpy as np
from tqdm.auto import tqdm

from .. import engine
from ..config import PredictorConfig
from .series import EvalSeries
from .variants import Variant, group_by_config

__all__ = ["RunOutput", "run_population", "run_variants", "stack_hyperparams"]


@dataclasses.dataclass(frozen=True)
class RunOutput:
    """What one variant produced on one series (host numpy arrays).

    Attributes:
        prediction: ``(time,)`` forecast made at t of obs t+1.
        kernel_predictions: ``(time, K)``.
        regime_change_detected: ``(time,)`` the regime alarms.
        emergency_mode: ``(time,)`` circuit-breaker steps.
        quantiles: ``(time, L)`` calibrated quantiles made at t of obs t+1
            (L = 0 with intervals off).
        raw_quantiles: ``(time, L)`` the uncalibrated mixture's quantiles
            (``(time, 0)`` with intervals off).
    """

    prediction: np.ndarray
    kernel_predictions: np.ndarray
    regime_change_detected: np.ndarray
    emergency_mode: np.ndarray
    quantiles: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))
    raw_quantiles: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0)))


@functools.partial(jax.jit, static_argnums=0)
def run_population(config: PredictorConfig, hyperparams, data, key):
    """Scan ``config`` over every (hyperparameters, series) pair: one compiled program.

    Args:
        config: static config shared by the population.
        hyperparams: a :class:`~fnpredict.Hyperparams` with leaves stacked on axis 0 (V members).
        data: ``(S, time)`` series of equal length.
        key: the PRNG key; step t of every run gets ``jax.random.split(key, time)[t]``.

    Returns:
        ``(prediction (V, S, T), kernel_predictions (V, S, T, K), regime (V, S, T), emergency (V, S, T),
        quantiles (V, S, T, L), raw_quantiles (V, S, T, L))``.
    """
    keys = jax.random.split(key, data.shape[-1])

    def one(hp, series):
        _, out = engine.scan(engine.init(config, None, hp), series, keys)
        telemetry = out.telemetry
        raw = getattr(telemetry.intervals, "raw_quantiles", out.quantiles)
        return (out.prediction, out.kernel_predictions, telemetry.regime_change_detected, telemetry.emergency_mode,
                out.quantiles, raw)

    return jax.vmap(lambda hp: jax.vmap(lambda series: one(hp, series))(data))(hyperparams)


def stack_hyperparams(variants: list[Variant]):
    """One population from the variants' hyperparameters (numpy leaves: stacking compiles nothing)."""
    return jax.tree_util.tree_map(lambda *leaves: np.stack([np.asarray(x) for x in leaves]),
                                  *[v.hyperparams for v in variants])


def _batches(series: list[EvalSeries], pad: bool) -> list[list[EvalSeries]]:
    if pad:
        return [list(series)]
    buckets: dict[int, list[EvalSeries]] = {}
    for s in series:
        buckets.setdefault(s.values.shape[0], []).append(s)
    return list(buckets.values())


def _stack(batch: list[EvalSeries], dtype) -> np.ndarray:
    # Shorter series are padded at the end with NaN, which the predictor reads
    # as missing observations; the scan is causal, so the padding cannot change
    # any earlier output, and the padded steps are cut off the outputs.
    length = max(s.values.shape[0] for s in batch)
    data = np.full((len(batch), length), np.nan, dtype)
    for j, s in enumerate(batch):
        data[j, : s.values.shape[0]] = s.values
    return data


def run_variants(variants: list[Variant], series: list[EvalSeries], key: jax.Array,
                 progress: bool = True, pad: bool = True) -> tuple[dict, dict]:
    """Every variant on every series.

    Variants with equal configs are one population; the series are one batch,
    the shorter ones padded at the end with missing observations (``pad``;
    otherwise one batch per length): one compiled program per distinct config
    (``× #lengths`` without padding). Padding costs the steps it adds; an extra
    compilation costs about as much as ten thousand steps of the default config.

    Returns:
        ``(runs, seconds)``: ``runs[(label, series_name)]`` a :class:`RunOutput`;
        ``seconds[label]`` the wall time of its group (compile + run), shared by
        the group's variants.
    """
    runs, seconds = {}, {}
    groups = group_by_config(variants)
    bar = tqdm(total=len(variants), desc="variants", unit="variant", disable=not progress)
    try:
        for group in groups:
            config = group[0].config
            bar.set_postfix_str(",".join(v.label for v in group)[:60])
            started = time.perf_counter()
            population = stack_hyperparams(group)
            for batch in _batches(series, pad):
                data = _stack(batch, np.dtype(config.dtype))
                outputs = run_population(config, population, data, key)
                prediction, kernels, regime, emergency, quantiles, raw = (np.asarray(x) for x in outputs)
                for i, v in enumerate(group):
                    for j, s in enumerate(batch):
                        n = s.values.shape[0]
                        runs[(v.label, s.name)] = RunOutput(prediction[i, j, :n], kernels[i, j, :n],
                                                            regime[i, j, :n], emergency[i, j, :n],
                                                            quantiles[i, j, :n], raw[i, j, :n])
            elapsed = time.perf_counter() - started
            for v in group:
                seconds[v.label] = elapsed
            bar.update(len(group))
    finally:
        bar.close()
    return runs, seconds
