r"""The SDE, its first-variation (tangent) flow and the Bismut–Elworthy–Li weight, solved with diffrax.

For a time-homogeneous Itô SDE in :math:`\mathbb{R}^d` driven by a
:math:`d`-dimensional Brownian motion :math:`W`, with a square diffusion
matrix,

.. math::

    dX_t = b(X_t)\,dt + \sigma(X_t)\,dW_t = b(X_t)\,dt + \sum_{j=1}^{d} \sigma_j(X_t)\,dW^j_t,
    \qquad X_0 = x_0,

(:math:`\sigma_j` is column :math:`j` of :math:`\sigma`), this module solves
the augmented system

.. math::

    dY_t &= b'(X_t)\,Y_t\,dt + \sum_j \sigma_j'(X_t)\,Y_t\,dW^j_t, & Y_0 &= I,\\
    dH_t &= \bigl(\sigma(X_t)^{-1} Y_t\bigr)^{\top} dW_t, & H_0 &= 0,\\
    dZ_t &= b'(X_t)\,Z_t\,dt + \sum_j \bigl(\sigma_j'(X_t)\,Z_t + \tilde\sigma_j(X_t)\bigr)\,dW^j_t,
        & Z_0 &= 0,

where :math:`Y_t = \partial X_t/\partial x_0` is the tangent (Jacobian)
flow, :math:`H_T/T` is the Bismut–Elworthy–Li (BEL) weight for Delta and
:math:`Z_t = \partial X_t^{\varepsilon}/\partial\varepsilon` is the
variation of the state when the diffusion is perturbed to
:math:`\sigma + \varepsilon\tilde\sigma` (used by the pathwise Vega).
Only the parts an estimator needs are integrated.

Discretisation: Euler–Maruyama (``diffrax.Euler``) on a uniform grid. It is
the Itô-consistent choice: every vector field, and in particular the BEL
integrand :math:`\sigma^{-1}(X_{t_k})Y_{t_k}`, is evaluated at the left end
of each step, so :math:`H` is a discrete Itô integral (a martingale with mean
zero, which the BEL identity needs). A Stratonovich solver (Heun, midpoint)
would converge to the Stratonovich SDE, i.e. the wrong drift for :math:`X`
and a wrong, non-martingale weight; a Milstein scheme would need Lévy areas
for non-commutative noise in :math:`d>1`. The Euler tangent is also exactly
the Jacobian of the Euler map, so the pathwise estimator differentiates the
very discretisation that is simulated.

Brownian motion: ``"unsafe"`` (default) uses ``diffrax.UnsafeBrownianPath``,
``"virtual"`` a ``diffrax.VirtualBrownianTree``. The unsafe path is correct
here because all three conditions in its documentation hold: the step grid is
fixed (``diffrax.StepTo``), nothing is reverse-differentiated (the solve uses
``diffrax.ForwardMode``; derivatives come from the tangent system), and every
step interval is queried exactly once with bit-identical end points taken from
the grid array, so a key gives the same increments on every call (common
random numbers across bumped solves, and between estimators, depend on this).
Each increment is one exact :math:`N(0, \Delta t\,I)` draw, O(1) per step,
whereas the tree costs :math:`O(\log_2(T/\mathrm{tol}))` sequential
bisections per query. The tree is offered for callers who want one Brownian
path queried on several grids (e.g. a time-step convergence study).

Key schedule: path ``p`` uses ``jax.random.split(key, n_paths)[p]`` as the key
of its Brownian path, whatever the estimator, so two estimators called with
the same ``key``, ``n_paths``, ``t1`` and ``dt`` see the same Brownian paths.
"""

import math
from collections.abc import Callable
from typing import Literal

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

Drift = Callable[[Float[Array, " channels"]], Float[Array, " channels"]]
Diffusion = Callable[[Float[Array, " channels"]], Float[Array, "channels channels"]]
Payoff = Callable[[Float[Array, " channels"]], Float[Array, ""]]
BrownianKind = Literal["unsafe", "virtual"]

_BROWNIAN_KINDS = ("unsafe", "virtual")

# t1/dt is meant to be an integer more often than not, but the quotient carries
# rounding (1.1/0.1 = 11.000000000000002): treat a ratio within 1e-9 relative of
# an integer as that integer. 1e-9 is ~10^7 float64 ulps, far above the
# rounding of one division and far below any step mismatch a user intends.
_GRID_RELATIVE_TOLERANCE = 1e-9


class TangentFlow(eqx.Module):
    r"""Terminal values of the state, tangent flow and BEL weight on every path.

    Attributes:
        state: :math:`X_T`, shape ``(paths, channels)``.
        tangent: :math:`Y_T = \partial X_T/\partial x_0`, shape
            ``(paths, channels, channels)``; ``tangent[p, i, k]`` is
            :math:`\partial X^i_T/\partial x^k_0` on path ``p``.
        weight: the Delta weight
            :math:`\frac1T\int_0^T(\sigma^{-1}(X_t)Y_t)^{\top}dW_t`, shape
            ``(paths, channels)``, so that
            :math:`\nabla_{x_0}\mathbb{E}[f(X_T)] = \mathbb{E}[f(X_T)\,\mathrm{weight}]`.
    """

    state: Float[Array, "paths channels"]
    tangent: Float[Array, "paths channels channels"]
    weight: Float[Array, "paths channels"]


class _AugmentedState(eqx.Module):
    # The diffrax state y. Parts an estimator does not need are None (an empty
    # PyTree node, so diffrax never touches them); this never leaves the module.
    state: Array
    tangent: Array | None
    weight: Array | None
    variation: Array | None


class _SharedNoiseTerm(dfx.AbstractTerm):
    r""":math:`g(t, y)\,dW` where every leaf of :math:`g` ends in one Brownian axis.

    diffrax's ``ControlTerm`` contracts leaf by leaf against a control with the
    *same* PyTree structure as the state. Here a single increment
    :math:`\Delta W\in\mathbb{R}^d` drives every part of the augmented state:
    the ``state`` leaf of :math:`g` has shape ``(d, d)`` (:math:`\sigma`),
    ``tangent`` ``(d, d, d)`` (:math:`[i, l, j] = (\sigma_j' Y)_{il}`), ``weight``
    ``(d, d)`` (:math:`(\sigma^{-1}Y)^{\top}`) and ``variation`` ``(d, d)``. The
    product contracts the trailing axis of each leaf with the same
    :math:`\Delta W`.
    """

    vector_field: Callable[..., _AugmentedState]
    control: dfx.AbstractBrownianPath

    def vf(self, t, y, args):
        return self.vector_field(t, y, args)

    def contr(self, t0, t1, **kwargs):
        return self.control.evaluate(t0, t1, **kwargs)

    def prod(self, vf, control):
        return jtu.tree_map(lambda leaf: leaf @ control, vf)


def _value_and_jacobian(function: Callable[[Array], Array], x: Array) -> tuple[Array, Array]:
    # One forward-mode pass gives both the value and the Jacobian
    # (jacobian[..., k] = d value / d x_k) without evaluating `function` twice.
    def with_value(z):
        value = function(z)
        return value, value

    jacobian, value = jax.jacfwd(with_value, has_aux=True)(x)
    return value, jacobian


def _solve_one_path(
    drift: Drift,
    diffusion: Diffusion,
    diffusion_direction: Diffusion | None,
    x0: Array,
    key: PRNGKeyArray,
    t1: float,
    n_steps: int,
    brownian: BrownianKind,
    parts: frozenset[str],
) -> _AugmentedState:
    """Euler–Maruyama solve of the parts of the augmented system named in ``parts``."""
    d = x0.shape[0]
    dtype = x0.dtype
    with_tangent = "tangent" in parts
    with_weight = "weight" in parts
    with_variation = "variation" in parts

    def drift_field(t, y, args):
        del t, args
        if with_tangent or with_variation:
            b, db = _value_and_jacobian(drift, y.state)
        else:
            b, db = drift(y.state), None
        return _AugmentedState(
            state=b,
            tangent=db @ y.tangent if with_tangent else None,
            # The BEL weight has no dt part: it is a pure Itô integral. (The
            # seed put the drift Jacobian here; b' enters only through Y.)
            weight=jnp.zeros(d, dtype) if with_weight else None,
            variation=db @ y.variation if with_variation else None,
        )

    def noise_field(t, y, args):
        del t, args
        if with_tangent or with_variation:
            # dsigma[i, j, k] = d sigma_ij / d x_k, so column j's Jacobian is dsigma[:, j, :].
            sigma, dsigma = _value_and_jacobian(diffusion, y.state)
        else:
            sigma, dsigma = diffusion(y.state), None
        return _AugmentedState(
            state=sigma,
            tangent=jnp.einsum("ijk,kl->ilj", dsigma, y.tangent) if with_tangent else None,
            # (sigma^{-1} Y)^T at the left end point: row i is the integrand of H^i.
            weight=jnp.linalg.solve(sigma, y.tangent).T if with_weight else None,
            variation=(
                jnp.einsum("ijk,k->ij", dsigma, y.variation) + diffusion_direction(y.state)
                if with_variation
                else None
            ),
        )

    if brownian == "unsafe":
        path = dfx.UnsafeBrownianPath(shape=jax.ShapeDtypeStruct((d,), dtype), key=key)
    else:
        # diffrax's advice for fixed steps: tol = dt/2, so that no two grid
        # points share a leaf of the tree (their joint law is then exact).
        path = dfx.VirtualBrownianTree(
            t0=0.0, t1=t1, tol=0.5 * t1 / n_steps, shape=jax.ShapeDtypeStruct((d,), dtype), key=key
        )
    terms = dfx.MultiTerm(dfx.ODETerm(drift_field), _SharedNoiseTerm(noise_field, path))
    y0 = _AugmentedState(
        state=x0,
        tangent=jnp.eye(d, dtype=dtype) if with_tangent else None,
        weight=jnp.zeros(d, dtype) if with_weight else None,
        variation=jnp.zeros(d, dtype) if with_variation else None,
    )
    # Times in the default float dtype (as diffrax keeps t0 and t1), whatever
    # the state dtype, so that StepTo's grid ends exactly at t1.
    grid = jnp.linspace(0.0, t1, n_steps + 1)
    solution = dfx.diffeqsolve(
        terms,
        dfx.Euler(),
        t0=0.0,
        t1=t1,
        dt0=None,
        y0=y0,
        stepsize_controller=dfx.StepTo(grid),
        saveat=dfx.SaveAt(t1=True),
        max_steps=n_steps,
        # UnsafeBrownianPath cannot be reverse-differentiated; forward mode is
        # all that is ever needed (and lets jax.jacfwd see through the solve).
        adjoint=dfx.ForwardMode(),
        # Never raise inside the vmapped solve: a failed path becomes NaN and
        # is counted by the estimator (StepTo on a fixed grid cannot fail, but
        # the contract holds whatever the solver reports).
        throw=False,
    )
    failed = solution.result != dfx.RESULTS.successful
    return jtu.tree_map(lambda leaf: jnp.where(failed, jnp.nan, leaf[0]), solution.ys)


def solve_paths(
    drift: Drift,
    diffusion: Diffusion,
    x0: Array,
    key: PRNGKeyArray,
    *,
    t1: float,
    n_steps: int,
    n_paths: int,
    brownian: BrownianKind,
    parts: frozenset[str],
    diffusion_direction: Diffusion | None = None,
) -> _AugmentedState:
    r"""All paths of the augmented system, vmapped over the key schedule (traceable; no validation).

    Args:
        drift: :math:`b`, shape ``(d,) -> (d,)``.
        diffusion: :math:`\sigma`, shape ``(d,) -> (d, d)``.
        x0: initial state, shape ``(d,)``.
        key: split into ``n_paths`` per-path keys (the module's key schedule).
        t1: horizon T > 0.
        n_steps: number of uniform Euler steps.
        n_paths: number of paths.
        brownian: ``"unsafe"`` or ``"virtual"``.
        parts: subset of ``{"tangent", "weight", "variation"}`` to integrate
            besides the state (``"weight"`` requires ``"tangent"``).
        diffusion_direction: :math:`\tilde\sigma`, shape ``(d,) -> (d, d)``;
            required for ``"variation"``.

    Returns:
        An ``_AugmentedState`` whose integrated leaves have a leading
        ``paths`` axis; the weight is the raw integral :math:`H_T` (not yet
        divided by T).
    """
    path_keys = jax.random.split(key, n_paths)
    return jax.vmap(
        lambda path_key: _solve_one_path(
            drift, diffusion, diffusion_direction, x0, path_key, t1, n_steps, brownian, parts
        )
    )(path_keys)


def number_of_steps(t1: float, dt: float) -> int:
    """Uniform steps covering ``[0, t1]`` with step at most ``dt``: ``ceil(t1/dt)`` up to rounding.

    The grid is ``t_k = k t1 / n``; its step ``t1/n`` equals ``dt`` when
    ``t1/dt`` is an integer (within a relative 1e-9) and is otherwise the
    largest uniform step not exceeding ``dt``.
    """
    ratio = t1 / dt
    nearest = round(ratio)
    if nearest >= 1 and abs(ratio - nearest) <= _GRID_RELATIVE_TOLERANCE * nearest:
        return int(nearest)
    return max(1, math.ceil(ratio))


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def validate_problem(
    function_name: str,
    drift: Drift,
    diffusion: Diffusion,
    x0: ArrayLike,
    t1: float,
    *,
    n_paths: int,
    dt: float,
    brownian: str,
    payoff: Payoff | None = None,
    require_invertible_diffusion: bool = False,
) -> tuple[Array, int]:
    """Check every input in Python, before anything is traced; return ``(x0 as an array, n_steps)``.

    Raises:
        ValueError: naming the argument, for ``n_paths < 2``, non-finite or
            non-positive ``t1`` or ``dt``, an unknown ``brownian``, ``x0`` not
            of shape ``(d,)`` or not finite, coefficient or payoff output
            shapes other than ``(d,)``, ``(d, d)``, ``()``, and (when
            ``require_invertible_diffusion``) a diffusion matrix at ``x0``
            that is not finite or is numerically singular.

    When ``x0`` is traced (the caller jits around the estimator) its value is
    unknown here: the finiteness and singularity checks at ``x0`` are then
    skipped, and a singular diffusion shows up as non-finite weights, i.e. as
    ``n_nan`` in the result, never as a silent wrong number.
    """

    def fail(message: str):
        raise ValueError(f"{function_name}: {message}")

    if isinstance(n_paths, bool) or not isinstance(n_paths, (int, np.integer)) or n_paths < 2:
        fail(f"n_paths must be an integer >= 2 (a standard error needs two paths); got {n_paths!r}.")
    for name, value in (("t1", t1), ("dt", dt)):
        if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(value, bool):
            fail(f"{name} must be a Python number (it fixes the time grid, so it cannot be traced); "
                 f"got {type(value).__name__}.")
        if not (math.isfinite(value) and value > 0):
            fail(f"{name} must be finite and > 0; got {value!r}.")
    if brownian not in _BROWNIAN_KINDS:
        fail(f"brownian must be one of {_BROWNIAN_KINDS}; got {brownian!r}.")

    x0 = jnp.asarray(x0)
    x0 = x0.astype(jnp.promote_types(x0.dtype, float))
    if x0.ndim != 1 or x0.shape[0] < 1:
        fail(f"x0 must have shape (d,) with d >= 1 (use shape (1,) in one dimension); got shape {x0.shape}.")
    d = x0.shape[0]
    if _is_concrete(x0) and not bool(jnp.all(jnp.isfinite(x0))):
        fail(f"x0 must be finite; got {np.asarray(x0)}.")

    def check_output(name: str, out, shape: tuple[int, ...]):
        if not hasattr(out, "shape") or tuple(out.shape) != shape:
            got = tuple(out.shape) if hasattr(out, "shape") else type(out).__name__
            fail(f"{name}(x) must return an array of shape {shape} for x of shape {(d,)}; got {got}.")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            # jax.grad (pathwise estimators) and the weight products need floats;
            # a digital written as `s[0] > strike` returns bool: cast it.
            fail(f"{name}(x) must return a floating-point array; got dtype {out.dtype}.")

    abstract_x = jax.ShapeDtypeStruct(x0.shape, x0.dtype)
    if require_invertible_diffusion and _is_concrete(x0):
        # Evaluated concretely, once, before drift or payoff is even looked at:
        # a singular start fails without tracing anything.
        sigma0 = np.asarray(diffusion(x0))
        check_output("diffusion", sigma0, (d, d))
        if not np.all(np.isfinite(sigma0)):
            fail(f"diffusion(x0) is not finite: {sigma0.tolist()}.")
        singular_values = np.linalg.svd(sigma0, compute_uv=False)
        # numpy.linalg.matrix_rank's rule: a singular value at or below
        # s_max * d * eps is indistinguishable from zero in this precision, and
        # the BEL weight needs sigma^{-1}.
        threshold = singular_values.max() * d * np.finfo(sigma0.dtype).eps
        if singular_values.min() <= threshold:
            condition = singular_values.max() / singular_values.min() if singular_values.min() > 0 else np.inf
            fail(
                "diffusion(x0) is singular (singular values "
                f"{singular_values.tolist()}, condition number {condition:.3g}): the Malliavin "
                "(Bismut-Elworthy-Li) weight needs an invertible diffusion matrix. "
                "Use pathwise_delta or finite_difference_delta for degenerate noise."
            )
    else:
        check_output("diffusion", jax.eval_shape(diffusion, abstract_x), (d, d))
    # Shapes only (an abstract evaluation: nothing is compiled or run).
    check_output("drift", jax.eval_shape(drift, abstract_x), (d,))
    if payoff is not None:
        check_output("payoff", jax.eval_shape(payoff, abstract_x), ())
    return x0, number_of_steps(float(t1), float(dt))


@eqx.filter_jit
def _tangent_flow(drift, diffusion, x0, key, t1, n_steps, n_paths, brownian):
    paths = solve_paths(
        drift, diffusion, x0, key, t1=t1, n_steps=n_steps, n_paths=n_paths, brownian=brownian,
        parts=frozenset({"tangent", "weight"}),
    )
    return TangentFlow(state=paths.state, tangent=paths.tangent, weight=paths.weight / t1)


def simulate_tangent_flow(
    drift: Drift,
    diffusion: Diffusion,
    x0: Float[ArrayLike, " channels"],
    t1: float,
    key: PRNGKeyArray,
    n_paths: int,
    dt: float,
    *,
    brownian: str = "unsafe",
) -> TangentFlow:
    r"""Simulate :math:`X_T`, the tangent flow :math:`Y_T` and the BEL weight on ``n_paths`` paths.

    Euler–Maruyama on the uniform grid :math:`t_k = kT/n`,
    :math:`n = \lceil T/\mathrm{dt}\rceil`, of

    .. math::

        X_{k+1} &= X_k + b(X_k)\Delta t + \sigma(X_k)\Delta W_k,\\
        Y_{k+1} &= Y_k + b'(X_k)Y_k\Delta t + \textstyle\sum_j \sigma_j'(X_k)Y_k\,\Delta W^j_k,\\
        H_{k+1} &= H_k + (\sigma(X_k)^{-1}Y_k)^{\top}\Delta W_k,

    returning ``weight`` :math:`= H_n/T`. Derivatives of the coefficients come
    from ``jax.jacfwd``.

    Args:
        drift: :math:`b:\mathbb{R}^d\to\mathbb{R}^d`.
        diffusion: :math:`\sigma:\mathbb{R}^d\to\mathbb{R}^{d\times d}`,
            invertible along the paths; column j multiplies :math:`dW^j`.
        x0: initial state, shape ``(d,)``.
        t1: horizon T > 0 (a Python number: it fixes the grid).
        key: PRNG key; path p uses ``jax.random.split(key, n_paths)[p]``.
        n_paths: number of paths (>= 2).
        dt: largest time step (> 0).
        brownian: ``"unsafe"`` (``UnsafeBrownianPath``, default) or
            ``"virtual"`` (``VirtualBrownianTree``); see the module docstring.

    Returns:
        A :class:`TangentFlow` with a leading ``paths`` axis.

    Raises:
        ValueError: bad sizes, a non-positive horizon or step, wrong
            coefficient shapes, or a singular diffusion matrix at ``x0``.

    Example:
        >>> flow = simulate_tangent_flow(lambda x: 0.05 * x, lambda x: jnp.diag(0.2 * x),
        ...                              jnp.array([100.0]), 1.0, jax.random.key(0), n_paths=8, dt=0.01)
        >>> flow.tangent.shape
        (8, 1, 1)
    """
    x0, n_steps = validate_problem(
        "simulate_tangent_flow", drift, diffusion, x0, t1, n_paths=n_paths, dt=dt, brownian=brownian,
        require_invertible_diffusion=True,
    )
    return _tangent_flow(drift, diffusion, x0, key, float(t1), n_steps, int(n_paths), brownian)


__all__ = ["TangentFlow", "simulate_tangent_flow"]
