"""Offline training of a Deep Galerkin network (never traced inside ``step``).

:func:`train` minimises :func:`fnpredict.solvers.dgm.dgm_loss` with Optax
over a box of model parameters, watching the entropy monitor for mode
collapse; ``scripts/train_dgm.py`` uses it to make kernel B's shipped
weights. It lives apart from the traced package (the kernels and solvers)
because it runs on the host: a training loop, wall-clock timing, restarts.
"""

import dataclasses
import math
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import PRNGKeyArray

from ..solvers.dgm import DGMNetwork, DGMProblem, dgm_loss, sample_box
from ..solvers.entropy import entropy_monitor, gauss_legendre_nodes



@dataclasses.dataclass(frozen=True)
class TrainInfo:
    """What :func:`train` reports (host-side, NumPy).

    Attributes:
        loss: ``(steps_run,)`` total loss per optimiser step, all attempts
            concatenated (a re-initialisation starts a new attempt).
        parts: ``(steps_run, 3)`` interior, terminal and boundary mean squares.
        entropy: ``(checks,)`` the monitor's entropy gap
            mean_t Ĥ[V(t)] − Ĥ[g] (nats) after each chunk.
        collapsed_checks: ``(checks,)`` whether each check tripped.
        restarts: how many times the network was re-initialised (collapse or
            a non-finite loss).
        collapsed: True when training stopped on a collapse it could not cure
            (``max_restarts`` exhausted, or ``on_collapse="stop"``); the
            returned network is then the collapsed one, for inspection.
        seconds: wall-clock training time, compilation included.
    """

    loss: np.ndarray
    parts: np.ndarray
    entropy: np.ndarray
    collapsed_checks: np.ndarray
    restarts: int
    collapsed: bool
    seconds: float


@eqx.filter_jit
def _train_chunk(network, opt_state, problem, keys, optimizer, sizes, weights):
    """``len(keys)`` optimiser steps as one ``lax.scan`` (compiled once per shape)."""
    dynamic, static = eqx.partition(network, eqx.is_inexact_array)
    n_interior, n_terminal, n_boundary = sizes
    terminal_weight, boundary_weight = weights

    def loss_fn(dynamic_, key):
        net = eqx.combine(dynamic_, static)
        return dgm_loss(
            net, problem, key, n_interior, n_terminal, n_boundary, terminal_weight, boundary_weight
        )

    def one_step(carry, key):
        dynamic_, opt_state_ = carry
        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(dynamic_, key)
        # optax's schedules mix their int32 step count with Python floats:
        # keep optax on standard promotion even when the caller runs strict.
        with jax.numpy_dtype_promotion("standard"):
            updates, opt_state_ = optimizer.update(grads, opt_state_, dynamic_)
        dynamic_ = eqx.apply_updates(dynamic_, updates)
        return (dynamic_, opt_state_), (loss, jnp.stack([parts.interior, parts.terminal, parts.boundary]))

    (dynamic, opt_state), (loss, parts) = jax.lax.scan(one_step, (dynamic, opt_state), keys)
    return eqx.combine(dynamic, static), opt_state, loss, parts


@eqx.filter_jit
def _monitor(network, problem, x_points, param_points, gamma, time_nodes, time_weights):
    return entropy_monitor(network, problem.terminal, x_points, param_points, gamma, time_nodes, time_weights)


def default_optimizer(learning_rate: float, steps: int) -> optax.GradientTransformation:
    """Adam with a cosine decay to 1 % of ``learning_rate`` over ``steps``.

    Adam is the optimiser of the DGM paper; the decay lets the last
    iterations average out the collocation noise (a constant rate leaves the
    loss hovering at a level set by the step size).
    """
    schedule = optax.cosine_decay_schedule(learning_rate, steps, alpha=0.01)
    return optax.adam(schedule)


def train(
    network: DGMNetwork,
    problem: DGMProblem,
    key: PRNGKeyArray,
    *,
    steps: int = 4000,
    chunk: int = 500,
    learning_rate: float = 1e-3,
    optimizer: optax.GradientTransformation | None = None,
    n_interior: int = 256,
    n_terminal: int = 128,
    n_boundary: int = 64,
    terminal_weight: float = 1.0,
    boundary_weight: float = 1.0,
    monitor_points: int = 256,
    monitor_time_nodes: int = 3,
    collapse_gamma: float = 0.5,
    max_restarts: int = 2,
    on_collapse: str = "reinit",
    verbose: bool = False,
) -> tuple[DGMNetwork, TrainInfo]:
    """Minimise the DGM loss with Optax, watching for mode collapse.

    The optimiser steps run as a ``lax.scan`` of ``chunk`` steps inside one
    ``eqx.filter_jit`` (compiled once; every chunk reuses it). After each
    chunk the entropy monitor evaluates V on ``monitor_points`` fixed points
    of the (x, p) box at ``monitor_time_nodes`` Gauss–Legendre times and
    checks :math:`\\exp(\\overline{H}[V]) < \\gamma\\exp(H[g])` (see
    :mod:`~fnpredict.solvers.entropy`). On a collapse, or a non-finite
    loss, ``on_collapse="reinit"`` re-initialises the network and the
    optimiser with a fresh key and starts the step budget again (at most
    ``max_restarts`` times, then stops); ``on_collapse="stop"`` stops at once.

    Args:
        network: the initial network (its dtype is the training dtype).
        problem: the PDE; its arrays are cast to the network's dtype.
        key: drives collocation sampling and re-initialisation.
        steps: optimiser steps per attempt (rounded up to whole chunks).
        chunk: steps per compiled scan, and the monitor's period.
        learning_rate: peak rate of :func:`default_optimizer` (ignored when
            ``optimizer`` is given).
        optimizer: any Optax transformation (its schedule, if any, counts
            steps of one attempt).
        n_interior, n_terminal, n_boundary: collocation points per step.
        terminal_weight, boundary_weight: loss weights w_T, w_B.
        monitor_points: sample points of the entropy monitor.
        monitor_time_nodes: Gauss–Legendre nodes of the time average.
        collapse_gamma: γ ∈ (0, 1] of the collapse criterion.
        max_restarts: re-initialisations allowed before giving up.
        on_collapse: ``"reinit"`` or ``"stop"``.
        verbose: print the loss after each chunk.

    Returns:
        ``(network, info)``: the trained network and a :class:`TrainInfo`.

    Example:
        >>> problem = DGMProblem(hamiltonian=LQHamiltonian.create(0.2, 1.0, 0.4, 1.0, 1.0),
        ...     terminal=lambda x, p: x @ x, horizon=1.0, x_lower=-jnp.ones(1),
        ...     x_upper=jnp.ones(1), param_lower=jnp.zeros(0), param_upper=jnp.zeros(0))
        >>> net = DGMNetwork(problem, 32, 2, key=jax.random.key(0))
        >>> net, info = train(net, problem, jax.random.key(1), steps=2000)
    """
    if on_collapse not in ("reinit", "stop"):
        raise ValueError(f"on_collapse must be 'reinit' or 'stop', got {on_collapse!r}")
    if steps < 1 or chunk < 1:
        raise ValueError(f"steps and chunk must be >= 1, got {steps}, {chunk}")
    if not 0.0 < collapse_gamma <= 1.0:
        raise ValueError(f"collapse_gamma must lie in (0, 1], got {collapse_gamma}")
    dtype = network.dtype
    problem = jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, problem
    )
    n_chunks = math.ceil(steps / chunk)
    if optimizer is None:
        optimizer = default_optimizer(learning_rate, n_chunks * chunk)
    sizes = (int(n_interior), int(n_terminal), int(n_boundary))
    weights = (float(terminal_weight), float(boundary_weight))

    key_monitor, key = jax.random.split(key)
    key_mx, key_mp = jax.random.split(key_monitor)
    x_points = sample_box(key_mx, problem.x_lower, problem.x_upper, monitor_points)
    param_points = sample_box(key_mp, problem.param_lower, problem.param_upper, monitor_points)
    nodes, node_weights = gauss_legendre_nodes(monitor_time_nodes, problem.horizon, dtype)
    gamma = jnp.asarray(collapse_gamma, dtype)

    losses, parts_all, entropies, checks = [], [], [], []
    restarts, collapsed = 0, False
    start = time.perf_counter()
    while True:
        opt_state = optimizer.init(eqx.filter(network, eqx.is_inexact_array))
        attempt_failed = False
        for index in range(n_chunks):
            key, key_chunk = jax.random.split(key)
            chunk_keys = jax.random.split(key_chunk, chunk)
            network, opt_state, loss, parts = _train_chunk(
                network, opt_state, problem, chunk_keys, optimizer, sizes, weights
            )
            loss, parts = np.asarray(loss), np.asarray(parts)
            losses.append(loss)
            parts_all.append(parts)
            info = _monitor(network, problem, x_points, param_points, gamma, nodes, node_weights)
            entropies.append(float(info.gap))
            checks.append(bool(info.collapsed))
            if verbose:
                print(
                    f"attempt {restarts} chunk {index + 1}/{n_chunks}: loss {loss[-1]:.3e} "
                    f"(interior {parts[-1, 0]:.2e}, terminal {parts[-1, 1]:.2e}, boundary {parts[-1, 2]:.2e}), "
                    f"entropy gap {float(info.gap):+.3f}"
                )
            if bool(info.collapsed) or not np.all(np.isfinite(loss)):
                attempt_failed = True
                break
        if not attempt_failed:
            break
        if on_collapse == "stop" or restarts >= max_restarts:
            collapsed = True
            break
        restarts += 1
        key, key_init = jax.random.split(key)
        network = network.reinitialised(key_init)

    return network, TrainInfo(
        loss=np.concatenate(losses),
        parts=np.concatenate(parts_all),
        entropy=np.asarray(entropies),
        collapsed_checks=np.asarray(checks, bool),
        restarts=restarts,
        collapsed=collapsed,
        seconds=time.perf_counter() - start,
    )


__all__ = ["TrainInfo", "default_optimizer", "train"]
