"""Static configuration and dynamic hyperparameters.

Two kinds of value, two places (see STYLE.md):

* :class:`PredictorConfig` fixes shapes and code paths. It is a frozen,
  hashable dataclass, validated when built, and lives in the state as a static
  field: changing it recompiles.
* :class:`Hyperparams` holds every continuous, tunable number as a float array
  leaf. A tuner may change it without recompiling, and a population of
  hyperparameters is one ``Hyperparams`` with stacked leaves (one ``vmap``).
"""

import dataclasses
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

KERNEL_NAMES: tuple[str, ...] = ("levy", "dgm", "imex", "signature")
WAVELETS: tuple[str, ...] = ("gaus1", "mexh")
JKO_MODES: tuple[str, ...] = ("faithful", "proximal")


def _default_scales() -> tuple[float, ...]:
    # Seven half-octave scales from 1 to 8 samples. With the cell-integrated
    # gaus1 filters (sia/wtmm.py) scale 1 still resolves single increments, and
    # stopping at 8 (1/16 of the default 128-sample buffer) keeps a 10-sigma
    # jump dominant over the Brownian maxima at every scale. Measured with the
    # default holder_threshold 0.1 on 900 Brownian buffers sliding over a
    # 10-sigma jump, and on the bundled S&P 500: this range trips within 5
    # steps of the jump on 92% of paths, on 1/900 jump-free buffers and on
    # 2.2% of S&P 128-day windows; 2..16 scored 75%, 16/900 and 5.2%.
    return tuple(float(s) for s in np.round(np.geomspace(1.0, 8.0, 7), 6))


def _fail(field: str, message: str):
    raise ValueError(f"PredictorConfig.{field}: {message}")


@dataclasses.dataclass(frozen=True)
class PredictorConfig:
    """Everything that fixes shapes, dtypes or code paths.

    Attributes:
        buffer_size: length N of the sliding observation window (>= 32).
        n_channels: d, the number of channels of an observation; channel 0 is
            the target, all channels feed the signature path.
        kernels: which kernels are on, a non-empty subset of
            ``("levy", "dgm", "imex", "signature")`` in that order; K follows.
        dtype: ``"float64"`` (default) or ``"float32"``.
        wavelet: ``"gaus1"`` or ``"mexh"`` for the CWT.
        scales: CWT scales in samples, strictly increasing, >= 1.
        q_moments: WTMM moments q (non-zero, strictly increasing, at least 3).
        holder_min_count: observations the buffer must hold before the Hölder
            exponent may trip the circuit breaker (default: the whole buffer).
        cusum_window: length of the rolling error window for the kurtosis.
        ttl_max: consecutive missing observations before degraded mode.
        ttl_recovery: consecutive valid observations that clear degraded mode
            (hysteresis).
        jko_mode: ``"faithful"`` (the seed's Sinkhorn projection, an
            exponentiated-gradient step) or ``"proximal"`` (a real entropic
            Wasserstein-proximal step).
        sinkhorn_iterations: fixed Sinkhorn iteration count (a fixed count
            keeps ``vmap`` lanes in lock step).
        levy_paths: Monte Carlo sample count of kernel A.
        levy_window: number of recent increments kernel A estimates from
            (default: 3/4 of the buffer, at most 96).
        signature_depth: truncation depth of the log-signature (kernel D).
        signature_window: points of the recent path kernel D reads.
        dgm_entropy_points: sample points of the DGM entropy monitor.
        imex_grid: grid nodes (ends included) of kernel C's PIDE solver.
        imex_steps: implicit-explicit time steps over the one-step horizon.
        imex_max_iter: iteration cap of the Anderson fixed point (4: kernel C's
            one-step problem is linear and converges at the 2nd evaluation; under
            vmap every slot runs, so a larger cap only costs time).
        imex_tol: tolerance of the Anderson fixed point.
    """

    buffer_size: int = 128
    n_channels: int = 1
    kernels: tuple[str, ...] = KERNEL_NAMES
    dtype: str = "float64"
    wavelet: str = "gaus1"
    scales: tuple[float, ...] = dataclasses.field(default_factory=_default_scales)
    q_moments: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0, 3.0, 4.0)
    holder_min_count: int | None = None
    cusum_window: int = 64
    ttl_max: int = 5
    ttl_recovery: int = 3
    jko_mode: str = "faithful"
    sinkhorn_iterations: int = 50
    levy_paths: int = 256
    levy_window: int | None = None
    signature_depth: int = 3
    signature_window: int = 4
    dgm_entropy_points: int = 64
    imex_grid: int = 96
    imex_steps: int = 2
    imex_max_iter: int = 4
    imex_tol: float = 1e-10

    def __post_init__(self):
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                _fail(name, f"must be an int >= {minimum}, got {value!r}")

        positive_int("buffer_size", 32)
        positive_int("n_channels", 1)
        kernels = tuple(self.kernels) if not isinstance(self.kernels, str) else (self.kernels,)
        object.__setattr__(self, "kernels", kernels)
        if not kernels:
            _fail("kernels", f"needs at least one of {KERNEL_NAMES}")
        unknown = [k for k in kernels if k not in KERNEL_NAMES]
        if unknown:
            _fail("kernels", f"unknown kernel(s) {unknown}; choose from {KERNEL_NAMES}")
        if len(set(kernels)) != len(kernels):
            _fail("kernels", f"duplicates in {kernels}")
        # A canonical order keeps K's meaning (and the weights' columns) stable.
        object.__setattr__(self, "kernels", tuple(k for k in KERNEL_NAMES if k in kernels))
        if self.dtype not in ("float64", "float32"):
            _fail("dtype", f"must be 'float64' or 'float32', got {self.dtype!r}")
        if self.wavelet not in WAVELETS:
            _fail("wavelet", f"must be one of {WAVELETS}, got {self.wavelet!r}")
        scales = tuple(float(s) for s in self.scales)
        object.__setattr__(self, "scales", scales)
        if len(scales) < 3 or any(s < 1.0 for s in scales) or any(
            b <= a for a, b in zip(scales, scales[1:])
        ):
            _fail("scales", f"need >= 3 strictly increasing scales >= 1, got {scales}")
        if scales[-1] > self.buffer_size / 2:
            _fail("scales", f"largest scale {scales[-1]} exceeds buffer_size/2 = {self.buffer_size / 2}")
        q = tuple(float(v) for v in self.q_moments)
        object.__setattr__(self, "q_moments", q)
        if len(q) < 3 or any(v == 0.0 for v in q) or any(b <= a for a, b in zip(q, q[1:])):
            _fail("q_moments", f"need >= 3 strictly increasing non-zero moments, got {q}")
        if self.holder_min_count is None:
            object.__setattr__(self, "holder_min_count", self.buffer_size)
        positive_int("holder_min_count", 1)
        if self.holder_min_count > self.buffer_size:
            _fail("holder_min_count", f"must be <= buffer_size={self.buffer_size}")
        positive_int("cusum_window", 8)
        positive_int("ttl_max", 1)
        positive_int("ttl_recovery", 1)
        if self.jko_mode not in JKO_MODES:
            _fail("jko_mode", f"must be one of {JKO_MODES}, got {self.jko_mode!r}")
        positive_int("sinkhorn_iterations", 1)
        positive_int("levy_paths", 16)
        if self.levy_window is None:
            object.__setattr__(self, "levy_window", min(96, (3 * self.buffer_size) // 4))
        positive_int("levy_window", 16)
        if self.levy_window >= self.buffer_size:
            _fail("levy_window", f"must be < buffer_size={self.buffer_size}")
        positive_int("signature_depth", 1)
        if self.signature_depth > 5:
            _fail("signature_depth", "must be <= 5 (feature count grows exponentially)")
        positive_int("signature_window", 2)
        if self.signature_window > self.buffer_size:
            _fail("signature_window", f"must be <= buffer_size={self.buffer_size}")
        positive_int("dgm_entropy_points", 8)
        positive_int("imex_grid", 16)
        positive_int("imex_steps", 1)
        positive_int("imex_max_iter", 1)
        if not (isinstance(self.imex_tol, (float, int)) and 0 < self.imex_tol < 1):
            _fail("imex_tol", f"must be in (0, 1), got {self.imex_tol!r}")

    @property
    def n_kernels(self) -> int:
        return len(self.kernels)

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def kernel_index(self, name: str) -> int:
        """Column of kernel ``name`` in the weights, or -1 when it is off."""
        return self.kernels.index(name) if name in self.kernels else -1

    @property
    def emergency_kernel(self) -> int:
        """The kernel the circuit breaker moves the weight to: D if on, else the last."""
        index = self.kernel_index("signature")
        return index if index >= 0 else self.n_kernels - 1

    def replace(self, **changes) -> "PredictorConfig":
        return dataclasses.replace(self, **changes)


# name -> (default, lower, upper, lower_open, upper_open, meaning)
_HYPERPARAMETER_SPEC: dict[str, tuple[float, float, float, bool, bool, str]] = {
    "sinkhorn_epsilon": (0.2, 0.0, math.inf, True, True, "entropic regularisation of the JKO Sinkhorn"),
    "jko_tau": (0.5, 0.0, math.inf, True, True, "JKO time step (step size of the weight flow)"),
    "holder_threshold": (0.1, -math.inf, math.inf, True, True, "circuit breaker trips when h_min < this"),
    "cusum_h": (8.0, 0.0, math.inf, True, True, "CUSUM threshold, in standardized-error units"),
    "cusum_k": (0.5, 0.0, math.inf, False, True, "CUSUM slack per step, standardized units"),
    "error_alpha": (0.02, 0.0, 1.0, True, False, "EMA rate of the error variance"),
    "besov_c": (2.0, 0.0, math.inf, True, True, "cone-of-influence radius factor of WTMM linking"),
    "huber_delta_scale": (1.345, 0.0, math.inf, True, True, "Huber delta in units of the error sigma"),
    "weight_floor": (1e-6, 0.0, 0.1, True, False, "weight left on the other kernels in emergency"),
    "rls_forgetting": (0.995, 0.0, 1.0, True, False, "RLS forgetting factor of kernel D"),
    "rls_ridge": (1.0, 0.0, math.inf, True, True, "initial ridge (P0 = I/ridge) of kernel D"),
    "dgm_collapse_gamma": (0.5, 0.0, 1.0, True, False, "collapse when mean H[V] < gamma * H[g]"),
    "imex_jump_threshold": (4.0, 0.0, math.inf, True, True, "jump if |increment| > this * MAD-sigma"),
}


class Hyperparams(eqx.Module):
    """Every continuous, tunable number: float array leaves, traced and vmappable.

    Each field has a documented range (``Hyperparams.spec()``); out-of-range
    values raise ``ValueError`` naming the field when the values are concrete.
    Leaves may carry leading batch axes (a population): ``jax.vmap(fp.init,
    in_axes=(None, None, 0))``.
    """

    sinkhorn_epsilon: Float[Array, "..."]
    jko_tau: Float[Array, "..."]
    holder_threshold: Float[Array, "..."]
    cusum_h: Float[Array, "..."]
    cusum_k: Float[Array, "..."]
    error_alpha: Float[Array, "..."]
    besov_c: Float[Array, "..."]
    huber_delta_scale: Float[Array, "..."]
    weight_floor: Float[Array, "..."]
    rls_forgetting: Float[Array, "..."]
    rls_ridge: Float[Array, "..."]
    dgm_collapse_gamma: Float[Array, "..."]
    imex_jump_threshold: Float[Array, "..."]

    SPEC: ClassVar[dict] = _HYPERPARAMETER_SPEC

    def __init__(self, dtype=jnp.float64, **values):
        unknown = set(values) - set(_HYPERPARAMETER_SPEC)
        if unknown:
            raise ValueError(
                f"Hyperparams: unknown field(s) {sorted(unknown)}; known: {sorted(_HYPERPARAMETER_SPEC)}"
            )
        for name, spec in _HYPERPARAMETER_SPEC.items():
            value = values.get(name, spec[0])
            if isinstance(value, jax.core.Tracer):
                setattr(self, name, value.astype(dtype))
            else:
                setattr(self, name, jnp.asarray(value, dtype=dtype))

    def __check_init__(self):
        self.validate()

    def validate(self) -> "Hyperparams":
        """Raise ``ValueError`` naming the first out-of-range field (concrete values only)."""
        for name, (_, lower, upper, lower_open, upper_open, meaning) in _HYPERPARAMETER_SPEC.items():
            value = getattr(self, name)
            if isinstance(value, jax.core.Tracer):
                continue
            array = np.asarray(value)
            if not np.all(np.isfinite(array)):
                raise ValueError(f"Hyperparams.{name} ({meaning}) must be finite, got {array}")
            too_low = np.any(array <= lower) if lower_open else np.any(array < lower)
            too_high = np.any(array >= upper) if upper_open else np.any(array > upper)
            if too_low or too_high:
                left = "(" if lower_open else "["
                right = ")" if upper_open else "]"
                raise ValueError(
                    f"Hyperparams.{name} ({meaning}) must lie in {left}{lower}, {upper}{right}, got {array}"
                )
        return self

    @classmethod
    def spec(cls) -> dict[str, tuple[float, float, float, bool, bool, str]]:
        """Default, bounds, openness and meaning of each field."""
        return dict(_HYPERPARAMETER_SPEC)

    def replace(self, **values) -> "Hyperparams":
        current = {name: getattr(self, name) for name in _HYPERPARAMETER_SPEC}
        current.update(values)
        return Hyperparams(dtype=self.sinkhorn_epsilon.dtype, **current)
