"""Kernel B: a Deep Galerkin solution of the OU backward Kolmogorov equation.

Model. The window is standardised by its own mean and standard deviation,
:math:`z = (y - \\mu)/s`, and an Ornstein–Uhlenbeck process

.. math::

    dz = \\kappa(\\theta - z)\\,dt + \\sigma\\,dW

(one observation step = one unit of time) is fitted by regressing the
increments on the levels, :math:`\\Delta z_i = \\alpha + \\beta z_i + \\varepsilon_i`,
and reading the parameters through the *exact* discretisation of the OU
(:math:`z_{i+1} = \\theta + (z_i - \\theta)\\phi + \\varepsilon_i` with
:math:`\\phi = 1 + \\beta = e^{-\\kappa}`):

.. math::

    \\kappa = -\\log\\phi,\\qquad \\theta = -\\alpha/\\beta,\\qquad
    \\sigma^2 = \\operatorname{Var}(\\varepsilon)\\,\\frac{2\\kappa}{1 - e^{-2\\kappa}} .

Why OU: it is the simplest diffusion that nests the random walk (κ = 0,
the right model for prices) and mean reversion (spreads, rates, volatility),
its three parameters are identified by one least-squares fit of O(buffer)
cost, and its backward Kolmogorov equation has a closed-form solution that
checks the network. Why the exact discretisation rather than Euler
(κ = −β): with it, the OU's one-step conditional mean *equals* the least
squares AR(1) forecast whenever the parameters lie inside the box, so the
kernel is a consistent estimator of the best linear one-step forecast.

PDE. The forecast is :math:`\\mathbb{E}[z_T \\mid z_0 = z_t]`, the solution
at t = 0 of the backward Kolmogorov equation

.. math::

    v_t + \\kappa(\\theta - x)\\,v_x + \\tfrac12\\sigma^2 v_{xx} = 0,\\qquad v(T, x) = x,

with T = 1 (one step), solved once, offline, by the parametric DGM network
:math:`V(t, x; \\kappa, \\theta, \\sigma)` over the box below
(``scripts/train_dgm.py``; weights shipped in ``dgm_weights.eqx``, loaded at
:meth:`DGMKernel.from_config`). Each step costs one batched forward pass: the
forecast point plus the entropy monitor's ``dgm_entropy_points`` points.
Oracle: :math:`v(t, x) = \\theta + (x - \\theta)e^{-\\kappa(T - t)}`.

Box (normalised units) and what happens outside it:

* x ∈ [−4, 4]: the standardised last value; outside (an outlier more than
  4 window standard deviations from the window mean) the network would
  extrapolate, so the kernel falls back to the last value (``fallback``).
* κ ∈ [0, 1]: φ ≥ 1 (unit root or explosive) is clipped to κ = 0, the random
  walk; φ < e⁻¹ (reversion faster than 63 % per step, a lag-one
  autocorrelation below 0.37 of the *levels*) is clipped to κ = 1. The upper
  end also keeps a correct network healthy under the collapse monitor:
  :math:`\\overline{H}[V] - H[g] = -\\kappa T/2 \\ge -0.5 > \\log 0.5`.
* θ ∈ [−3, 3]: a long-run mean more than 3 window standard deviations away
  (a trend read as reversion towards a far level; θ = −α/β is ill-posed as
  β → 0) is clipped to the nearest end.
* σ ∈ [0, 1]: innovations larger than the window's own spread are clipped
  (σ does not enter the conditional mean, but it is a network input).

Clipping changes the model, not the validity of the forecast; it is recorded
in the state (``clipped``). Degenerate windows (fewer than
``MIN_COUNT`` observations, a constant series, a non-finite fit) fall back to
the last value with ``fallback`` True; the network is then evaluated at the
box centre so that the monitor still reads a finite value.

Mode-collapse monitor (:mod:`~fnpredict.solvers.entropy`): each step,
``Forecast.entropy`` is the entropy gap
:math:`\\overline{H}[V] - H[g]` of the values V(t, ·) over a uniform grid of
``dgm_entropy_points`` points of the x box, time-averaged by the one-node
Gauss–Legendre (midpoint) rule, exact for the healthy entropy curve, which is
linear in t (see ``ENTROPY_TIME_NODES``), and ``Forecast.collapsed`` is
:math:`\\overline{H}[V] - H[g] < \\log\\gamma` with γ = ``dgm_collapse_gamma``.
The engine counts consecutive collapsed checks.
"""

import functools
import json
import math
import pathlib
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..config import PredictorConfig
from ..params import HyperparameterSpec
from .base import AbstractKernel, EmptyState, Forecast, History
from ..solvers.entropy import collapse_check, gauss_legendre_nodes, vasicek_entropy
from ..solvers.dgm import DGMNetwork, DGMProblem, KolmogorovHamiltonian

__all__ = [
    "ENTROPY_TIME_NODES",
    "HORIZON",
    "METADATA_PATH",
    "MIN_COUNT",
    "PARAM_BOX",
    "PARAM_NAMES",
    "TRAINING_MARGIN",
    "WEIGHTS_PATH",
    "X_BOX",
    "DGMKernel",
    "DGMInfo",
    "OUFit",
    "fit_ou",
    "load_network",
    "ou_conditional_mean",
    "ou_problem",
    "read_metadata",
    "training_boxes",
]

# One observation step is one unit of normalised time.
HORIZON = 1.0
# Standardised level box; see the module docstring.
X_BOX = (-4.0, 4.0)
PARAM_NAMES = ("kappa", "theta", "sigma")
PARAM_BOX = ((0.0, 1.0), (-3.0, 3.0), (0.0, 1.0))
# The network is trained on the box widened by 5 % of each width (σ's lower
# end stays 0, where it is by definition): the DGM loss samples the faces of
# a box sparsely, so its largest errors sit there; training past the faces
# keeps the clipping box in the well-trained interior.
TRAINING_MARGIN = 0.05
# Observations the OU fit needs: count − 1 ≥ 7 increments leave ≥ 5 residual
# degrees of freedom after the two regression coefficients, the fewest for
# which the slope's t-statistic has finite kurtosis (ν > 4), i.e. the fit is
# not dominated by one or two increments.
MIN_COUNT = 8
# A window spread below this many ulps of its level is rounding noise (a sum
# of ≤ 128 terms loses ~√128 ≈ 11 ulps), not a signal to standardise by.
_SCALE_FLOOR_ULPS = 64.0
# Gauss–Legendre nodes of the monitor's time average. One node (the midpoint
# t = T/2) already integrates the healthy OU's entropy curve H[g] − κ(T − t),
# linear in t, exactly, and each extra node costs dgm_entropy_points more
# network evaluations per step (the dominant cost of the kernel).
ENTROPY_TIME_NODES = 1

WEIGHTS_PATH = pathlib.Path(__file__).with_name("dgm_weights.eqx")
METADATA_PATH = pathlib.Path(__file__).with_name("dgm_weights.json")


# --------------------------------------------------------------------------
# The PDE (shared with scripts/train_dgm.py)
# --------------------------------------------------------------------------


def _ou_drift(t, x, params):
    return params[0] * (params[1] - x)


def _ou_diffusion(t, x, params):
    return jnp.reshape(params[2], (1, 1)).astype(x.dtype)


def _ou_terminal(x, params):
    return x[0]


def training_boxes(margin: float = TRAINING_MARGIN) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The network's (x_lower, x_upper, param_lower, param_upper): the box widened by ``margin``."""
    x_width = X_BOX[1] - X_BOX[0]
    x_lower = np.array([X_BOX[0] - margin * x_width])
    x_upper = np.array([X_BOX[1] + margin * x_width])
    lower = np.array([low for low, _ in PARAM_BOX])
    upper = np.array([high for _, high in PARAM_BOX])
    width = upper - lower
    param_lower = lower - margin * width
    param_lower[PARAM_NAMES.index("sigma")] = 0.0
    param_upper = upper + margin * width
    return x_lower, x_upper, param_lower, param_upper


def ou_problem(margin: float = TRAINING_MARGIN, dtype=jnp.float64) -> DGMProblem:
    """The parametric OU backward Kolmogorov problem the shipped network solves.

    :math:`v_t + \\kappa(\\theta - x)v_x + \\tfrac12\\sigma^2 v_{xx} = 0`,
    :math:`v(T, x) = x`, T = ``HORIZON``, params (κ, θ, σ), on the box widened
    by ``margin``. No boundary term: the drift points into the box at both
    faces (θ lies well inside the x box), so no characteristic enters from
    outside, and the diffusion boundary layer (width ~σ√T ≤ 1) stays away
    from the |x| ≲ 3 where forecasts are made.
    """
    x_lower, x_upper, param_lower, param_upper = training_boxes(margin)
    return DGMProblem(
        hamiltonian=KolmogorovHamiltonian(drift=_ou_drift, diffusion=_ou_diffusion),
        terminal=_ou_terminal,
        horizon=HORIZON,
        x_lower=jnp.asarray(x_lower, dtype),
        x_upper=jnp.asarray(x_upper, dtype),
        param_lower=jnp.asarray(param_lower, dtype),
        param_upper=jnp.asarray(param_upper, dtype),
    )


def ou_conditional_mean(t, x, kappa, theta, horizon: float = HORIZON):
    """The oracle :math:`\\mathbb{E}[X_T \\mid X_t = x] = \\theta + (x - \\theta)e^{-\\kappa(T - t)}`."""
    return theta + (x - theta) * jnp.exp(-kappa * (horizon - t))


# --------------------------------------------------------------------------
# Shipped weights
# --------------------------------------------------------------------------


def read_metadata(path: pathlib.Path = METADATA_PATH) -> dict:
    """The shipped network's architecture, boxes and training record."""
    with open(path) as handle:
        return json.load(handle)


def _network_template(metadata: dict) -> DGMNetwork:
    architecture = metadata["architecture"]

    def build(key):
        problem = ou_problem(metadata["problem"]["training_margin"], jnp.dtype(architecture["dtype"]))
        return DGMNetwork(
            problem,
            architecture["width"],
            architecture["depth"],
            key=key,
            dtype=jnp.dtype(architecture["dtype"]),
            output_scale=architecture["output_scale"],
            output_shift=architecture["output_shift"],
        )

    # Only the structure is needed (the leaves are read from the file): built
    # abstractly, so no random initialisation runs op by op (that compiled
    # ~130 tiny programs, seconds of every fresh process's first config), and
    # from an abstract key, so that not even the key's splits run eagerly.
    return eqx.filter_eval_shape(build, jax.eval_shape(lambda: jax.random.key(0)))


@functools.lru_cache(maxsize=4)
def _load_cached(weights_path: str, metadata_path: str, dtype_name: str) -> DGMNetwork:
    metadata = read_metadata(pathlib.Path(metadata_path))
    problem = metadata["problem"]
    if (
        tuple(problem["x_box"]) != X_BOX
        or tuple(tuple(side) for side in problem["param_box"]) != PARAM_BOX
        or problem["horizon"] != HORIZON
    ):
        raise ValueError(
            f"{metadata_path}: the shipped weights were trained for box {problem['x_box']}, "
            f"{problem['param_box']}, T={problem['horizon']}, but the kernel expects {X_BOX}, "
            f"{PARAM_BOX}, T={HORIZON}; retrain with scripts/train_dgm.py"
        )
    # Read as NumPy, cast there (DGMNetwork.astype on NumPy leaves is NumPy's
    # astype), and moved to the device with device_put: jnp.load and astype
    # per leaf each ran (and, with the persistent cache, loaded) a compiled
    # program, 16 of a fresh process's first config. (A template of NumPy
    # leaves makes Equinox read NumPy leaves.)
    template = jax.tree_util.tree_map(
        lambda leaf: np.zeros(leaf.shape, leaf.dtype) if isinstance(leaf, jax.ShapeDtypeStruct) else leaf,
        _network_template(metadata))
    network = eqx.tree_deserialise_leaves(weights_path, template).astype(np.dtype(dtype_name))
    return jax.tree_util.tree_map(lambda leaf: jax.device_put(leaf) if isinstance(leaf, np.ndarray) else leaf,
                                  network)


def load_network(dtype=jnp.float64, weights_path=WEIGHTS_PATH, metadata_path=METADATA_PATH) -> DGMNetwork:
    """The shipped V(t, x; κ, θ, σ), cast to ``dtype`` (read from disk once per dtype and path)."""
    return _load_cached(str(weights_path), str(metadata_path), jnp.dtype(dtype).name)


# --------------------------------------------------------------------------
# The OU fit
# --------------------------------------------------------------------------


class OUFit(eqx.Module):
    """An OU fit to one window, in the window's standardised units.

    Attributes:
        location, scale: μ and s of the window (z = (y − μ)/s).
        params: ``(3,)`` (κ, θ, σ) clipped into ``PARAM_BOX``; the box centre
            when the fit is not ``valid``.
        clipped: a fitted parameter lay outside the box.
        valid: enough observations, non-constant window, finite fit.
        last: z of the newest observation.
    """

    location: Float[Array, ""]
    scale: Float[Array, ""]
    params: Float[Array, " 3"]
    clipped: Bool[Array, ""]
    valid: Bool[Array, ""]
    last: Float[Array, ""]


def fit_ou(values: Float[Array, " buffer"], count: Int[Array, ""]) -> OUFit:
    """Fit the OU of the module docstring to the newest ``count`` values of a window.

    Cost O(buffer), no iteration. Every division is guarded, so the result is
    finite for any finite input; a degenerate window sets ``valid`` False.

    Args:
        values: chronological window (oldest first); only the last ``count``
            entries are real observations.
        count: number of real observations.

    Returns:
        An :class:`OUFit`.
    """
    dtype = values.dtype
    size = values.shape[0]
    mask = jnp.arange(size, dtype=jnp.asarray(count).dtype) >= size - count
    weight = mask.astype(dtype)
    n = jnp.maximum(jnp.sum(weight), 1.0)
    location = jnp.sum(weight * values) / n
    variance = jnp.sum(weight * (values - location) ** 2) / n
    scale = jnp.sqrt(variance)
    finfo = jnp.finfo(dtype)
    spread_ok = scale > _SCALE_FLOOR_ULPS * finfo.eps * jnp.abs(location) + finfo.tiny
    safe_scale = jnp.where(spread_ok, scale, 1.0)
    z = weight * (values - location) / safe_scale

    # Increments on levels over pairs of real observations.
    pair = (mask[:-1] & mask[1:]).astype(dtype)
    level, increment = z[:-1], z[1:] - z[:-1]
    n_pairs = jnp.maximum(jnp.sum(pair), 1.0)
    level_mean = jnp.sum(pair * level) / n_pairs
    increment_mean = jnp.sum(pair * increment) / n_pairs
    centred = pair * (level - level_mean)
    sxx = jnp.sum(centred**2)
    sxy = jnp.sum(centred * (increment - increment_mean))
    sxx_ok = sxx > finfo.eps * n_pairs
    beta = sxy / jnp.where(sxx_ok, sxx, 1.0)
    alpha = increment_mean - beta * level_mean
    residual = pair * (increment - alpha - beta * level)
    residual_variance = jnp.sum(residual**2) / jnp.maximum(n_pairs - 2.0, 1.0)

    (kappa_low, kappa_high), (theta_low, theta_high), (sigma_low, sigma_high) = PARAM_BOX
    phi = 1.0 + beta
    # κ = −log φ, with φ clipped to [e^{−κ_high}, e^{−κ_low}] first so that the
    # log never sees φ ≤ 0 (reversion past the mean in one step).
    phi_clipped = jnp.clip(phi, math.exp(-kappa_high), math.exp(-kappa_low))
    kappa = -jnp.log(phi_clipped)
    # θ = −α/β: ±∞ as β → 0 (then the clip picks the side of the drift);
    # 0/0 (no drift, no reversion) is any θ, take the window mean 0.
    theta_raw = -alpha / beta
    theta_raw = jnp.where(jnp.isnan(theta_raw), 0.0, theta_raw)
    theta = jnp.clip(theta_raw, theta_low, theta_high)
    # Var(ε) = σ²(1 − e^{−2κ})/(2κ); the ratio → 1 + κ as κ → 0 (Taylor,
    # error O(κ²) < 1e-12 below the 1e-6 switch).
    ratio = jnp.where(kappa > 1e-6, 2.0 * kappa / -jnp.expm1(-2.0 * jnp.maximum(kappa, 1e-6)), 1.0 + kappa)
    sigma_raw = jnp.sqrt(residual_variance * ratio)
    sigma = jnp.clip(sigma_raw, sigma_low, sigma_high)

    clipped = (phi != phi_clipped) | (theta_raw != theta) | (sigma_raw != sigma)
    params = jnp.stack([kappa, theta, sigma])
    valid = (
        (count >= MIN_COUNT)
        & spread_ok
        & sxx_ok
        & jnp.all(jnp.isfinite(params))
        & jnp.isfinite(alpha)
        & jnp.isfinite(beta)
    )
    centre = jnp.asarray([(low + high) / 2.0 for low, high in PARAM_BOX], dtype)
    return OUFit(
        location=location,
        scale=safe_scale,
        params=jnp.where(valid, params, centre),
        clipped=clipped & valid,
        valid=valid,
        last=z[-1],
    )


# --------------------------------------------------------------------------
# The kernel
# --------------------------------------------------------------------------


class DGMInfo(eqx.Module):
    """Diagnostics of kernel B for one step (the network is fixed: nothing is learned online).

    Attributes:
        params: ``(3,)`` (κ, θ, σ) in standardised units fitted to this step's
            window, clipped into the box (the box centre without a valid fit).
        clipped: the fit was clipped into the box.
        valid: the fit was usable (see :func:`fit_ou`).
        entropy: the entropy monitor's gap mean_t H[V(t)] − H[g] in nats.
        collapsed: this step's collapse check failed (gap < log γ); the
            ``collapse_mute`` guard counts consecutive failures.
    """

    params: Float[Array, " 3"]
    clipped: Bool[Array, ""]
    valid: Bool[Array, ""]
    entropy: Float[Array, ""]
    collapsed: Bool[Array, ""]


class DGMKernel(AbstractKernel):
    """Kernel B: OU fitted to the window, conditional mean from the shipped DGM network.

    See the module docstring for the model, the box and the monitor. What
    differs from the protocol: ``forecast`` ignores its key (everything is
    deterministic) and ``converged`` is always True (no inner iteration).

    Attributes:
        network: V(t, x, params) -> scalar in the config dtype: the shipped
            :class:`~fnpredict.solvers.dgm.DGMNetwork`, or any
            ``eqx.Module`` with that call signature (a fine-tuned network, a
            closed form in tests).
        entropy_grid: ``(grid, 1)`` midpoints of a uniform grid on the x box.
        time_nodes, time_weights: the monitor's Gauss–Legendre rule on [0, T].
        terminal_entropy: Ĥ[g] on the grid (the baseline; g(x) = x).
    """

    name: ClassVar[str] = "dgm"
    hyperparameters: ClassVar[tuple] = (
        HyperparameterSpec("dgm_collapse_gamma", 0.5, 0.0, 1.0, True, False,
                           "collapse when mean H[V] < gamma * H[g]", False),
    )
    network: Callable
    entropy_grid: Float[Array, "grid 1"]
    time_nodes: Float[Array, " nodes"]
    time_weights: Float[Array, " nodes"]
    terminal_entropy: Float[Array, ""]

    # Identity semantics. ``jax.jit(kernel.update)`` hashes the bound method,
    # hence the kernel, and Equinox's field-wise hash fails on array fields
    # (the weights). A kernel is immutable and built once per config (the
    # engine caches ``from_config``), so "the same kernel" means the same
    # object; a rebuilt kernel merely compiles again.
    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other) -> bool:
        return self is other

    @classmethod
    def from_config(cls, config: PredictorConfig, network: Callable | None = None) -> "DGMKernel":
        """Build the kernel, loading the shipped weights (once per dtype) unless ``network`` is given.

        Args:
            config: uses ``dtype`` and ``dgm_entropy_points``.
            network: an alternative V(t, x, params) (e.g. a fine-tuned one or,
                in tests, a deliberately collapsed one); its floating arrays
                are cast to the config dtype.
        """
        dtype = config.jnp_dtype
        if network is None:
            network = load_network(dtype)
        else:
            network = jax.tree_util.tree_map(
                lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, network
            )
        points = config.dgm_entropy_points
        low, high = X_BOX
        grid = low + (high - low) * (np.arange(points) + 0.5) / points
        entropy_grid = jnp.asarray(grid[:, None], dtype)
        nodes, weights = gauss_legendre_nodes(ENTROPY_TIME_NODES, HORIZON, dtype)
        return cls(
            network=network,
            entropy_grid=entropy_grid,
            time_nodes=nodes,
            time_weights=weights,
            # One compiled program, not a few hundred eager ops (a fresh process's start-up).
            terminal_entropy=jax.jit(vasicek_entropy)(entropy_grid[:, 0]),
        )

    def init(self, params, dtype) -> EmptyState:
        """Kernel B carries no state: the network is fixed and each step refits the window."""
        return EmptyState()

    def evaluate(
        self, fit: OUFit, gamma: Float[Array, ""]
    ) -> tuple[Float[Array, ""], Float[Array, ""], Bool[Array, ""]]:
        """One batched forward pass: V(0, z_last) and the monitor over the grid.

        Returns:
            ``(value, entropy_gap, collapsed)``, value in standardised units.
        """
        dtype = self.entropy_grid.dtype
        low, high = X_BOX
        x_last = jnp.clip(fit.last, low, high)
        n_nodes, n_points = self.time_nodes.shape[0], self.entropy_grid.shape[0]
        # Row 0 is the forecast point, then the grid at each time node.
        times = jnp.concatenate(
            [jnp.zeros((1,), dtype), jnp.repeat(self.time_nodes, n_points)]
        )
        xs = jnp.concatenate([x_last.reshape(1, 1), jnp.tile(self.entropy_grid, (n_nodes, 1))])
        values = jax.vmap(lambda t, x: self.network(t, x, fit.params))(times, xs)
        grid_values = values[1:].reshape(n_nodes, n_points)
        entropy = jnp.dot(self.time_weights, jax.vmap(vasicek_entropy)(grid_values))
        gap = entropy - self.terminal_entropy
        return values[0], gap, collapse_check(gap, gamma)

    def step(self, state: EmptyState, history: History, params, key: PRNGKeyArray):
        """One OU fit of the window and one batched network pass (forecast point + monitor grid)."""
        fit = fit_ou(history.target, history.count)
        value, gap, collapsed = self.evaluate(fit, params.dgm_collapse_gamma)
        low, high = X_BOX
        inside = (fit.last >= low) & (fit.last <= high)
        forecast = Forecast.guarded(
            fit.location + fit.scale * value, history, fallback=~fit.valid | ~inside, converged=True
        )
        dtype = history.values.dtype
        info = DGMInfo(
            params=fit.params.astype(dtype), clipped=fit.clipped, valid=fit.valid,
            entropy=jnp.asarray(gap, dtype), collapsed=collapsed,
        )
        return state, forecast, info
