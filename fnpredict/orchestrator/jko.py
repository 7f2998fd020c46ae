"""One step of the kernel weights' Wasserstein (JKO) gradient flow.

The weights ``ρ`` are a probability vector over the K kernels. One step of a
JKO scheme with time step ``τ`` moves them down the energy ``E`` (whose
gradient :func:`fnpredict.orchestrator.losses.energy_gradient` computes)
while paying a transport cost for the move:

.. math::

    \\rho_{k+1} = \\operatorname*{arg\\,min}_{\\rho \\in \\Delta_K}
        \\langle \\nabla E, \\rho \\rangle + \\frac{1}{\\tau} W_\\varepsilon(\\rho_k, \\rho).

Throughout this module the entropic transport cost is

.. math::

    W_\\varepsilon(a, b) = \\min_{P \\ge 0,\\ P\\mathbf 1 = a,\\ P^\\top \\mathbf 1 = b}
        \\langle C, P \\rangle - \\varepsilon H(P),
    \\qquad H(P) = -\\sum_{ij} P_{ij} \\log P_{ij}\\ (0 \\log 0 = 0),

with a cost ``C`` between kernels (default ``1 − I``: moving weight between
two different kernels costs 1, keeping it costs 0). Its optimal coupling is
the unique ``P ∈ Π(a, b)`` of Gibbs form ``P_ij = exp((f_i + g_j − C_ij)/ε)``;
it is also the optimum of ott-jax's ``⟨C,P⟩ + ε KL(P | a⊗b)``, whose value is
larger by ``ε(H(a) + H(b))``.

Two modes:

* ``"faithful"``: the seed's "Sinkhorn projection", kept on purpose. The
  target ``b ∝ ρ_k · exp(−τ ∇E)`` is the exponentiated-gradient (Hedge)
  update; a log-domain Sinkhorn (ott-jax) between ``a = ρ_k`` and ``b`` with a
  fixed iteration count yields a plan ``P`` and the new weights are its column
  sums ``Pᵀ1``. Once Sinkhorn has converged those column sums *are* ``b``: the
  transport is decoration, the step is Hedge in disguise. If the column
  marginal misses ``b`` by more than ``threshold`` (L1), Sinkhorn is re-run
  with ``2ε`` (entropy annealing: a blurrier kernel converges faster); if that
  also fails the weights fall back to uniform and ``converged`` is False.
* ``"proximal"``: the real entropic Wasserstein-proximal step above, solved
  in closed form. Only the row marginal of the coupling is fixed (``ρ_{k+1}``
  is free), so the problem is a minimisation over ``P ≥ 0`` with ``P1 = ρ_k``
  of ``⟨∇E, Pᵀ1⟩ + (⟨C,P⟩ − εH(P))/τ``, strictly convex and separable over
  rows, with the unique solution

  .. math::

      P_{ij} = \\rho_{k,i}\\,
        \\frac{\\exp(-(C_{ij} + \\tau \\nabla E_j)/\\varepsilon)}
             {\\sum_l \\exp(-(C_{il} + \\tau \\nabla E_l)/\\varepsilon)},
      \\qquad \\rho_{k+1} = P^\\top \\mathbf 1.

  ``P`` has Gibbs form, so it is also the optimal coupling of
  ``W_ε(ρ_k, ρ_{k+1})``: the pair ``(P, ρ_{k+1})`` solves the JKO problem
  exactly, at the cost of one K×K softmax (no iterations). Limits: as
  ``τ → 0`` each row is blurred by the Gibbs kernel only, ``‖ρ_{k+1} −
  ρ_k‖₁ ≤ 2(K−1)e^{−1/ε}`` for the default cost (1.2e-8 at ε = 0.05, 0.04
  at the default ε = 0.2 with K = 4); as ``τ → ∞`` all weight moves to
  ``argmin ∇E``. The blur is the entropic JKO's diffusion, like a
  fixed-share mixing of about ``(K−1)e^{−1/ε}`` per step (2% at the
  defaults): it keeps every kernel's weight positive, so a kernel that lost
  out can recover. ε sets it; the faithful mode's answer does not depend on
  ε (only its convergence does), which is why the default ε = 0.2 was
  chosen for a fixed 50-iteration Sinkhorn to converge (at ε = 0.05 and 30
  iterations the faithful step fell back to uniform on most inputs).

Both modes return weights on the simplex (non-negative, summing to one) for
any finite gradient, have fixed shapes and iteration counts (``vmap`` lanes
stay in lock step), and branch only through ``lax.cond``/``jnp.where``.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp, xlogy
from jaxtyping import Array, Bool, Float

from ..config import PredictorConfig

__all__ = ["JKOInfo", "jko_step", "default_cost", "entropic_transport_cost", "proximal_coupling"]

#: Default Sinkhorn iteration count: the config's, so that a direct call and
#: the predictor agree.
DEFAULT_ITERATIONS: int = PredictorConfig.sinkhorn_iterations

#: Default convergence threshold on the L1 column-marginal error. A converged
#: faithful step is then within 1e-6 (L1) of the Hedge update it stands for;
#: below that the weights' differences no longer move a forecast.
DEFAULT_THRESHOLD: float = 1e-6


class JKOInfo(eqx.Module):
    """Diagnostics of one JKO step (all scalars, no sentinels).

    Attributes:
        converged: faithful mode: the accepted Sinkhorn solve met the
            threshold (False exactly when the weights fell back to uniform).
            Proximal mode: always True (closed form).
        retried: faithful mode: the first solve missed the threshold and
            Sinkhorn was re-run with ``2ε``. Always False in proximal mode.
        fell_back: faithful mode: both solves missed and the weights are
            uniform. Always False in proximal mode.
        free_energy: the JKO objective at the new weights,
            ``⟨∇E, ρ_{k+1}⟩ + (⟨C,P⟩ − ε' H(P))/τ`` for the coupling ``P`` the
            step produced (``P1 = ρ_k`` and ``Pᵀ1 = ρ_{k+1}`` exactly) and the
            ``ε'`` it was computed with (``2ε`` after a retry). ``P`` has Gibbs
            form, so the bracket is exactly ``W_ε'(ρ_k, ρ_{k+1})``. After a
            fallback ``P = ρ_k ⊗ uniform`` and ``ε' = ε``, which gives an upper
            bound on ``W_ε(ρ_k, uniform)``.
        marginal_error: faithful mode: ``‖Pᵀ1 − b‖₁`` of the last Sinkhorn
            solve (its distance from Hedge). Proximal mode: ``‖P1 − ρ_k‖₁``,
            the rounding error of the closed form (order 1e-16).
    """

    converged: Bool[Array, ""]
    retried: Bool[Array, ""]
    fell_back: Bool[Array, ""]
    free_energy: Float[Array, ""]
    marginal_error: Float[Array, ""]


def default_cost(n_kernels: int, dtype=jnp.float64) -> Float[Array, "kernels kernels"]:
    """The default cost between kernels, ``C = 1 − I``.

    Every kernel is equally far from every other: the transport cost of a
    move is the mass that changes kernel (total variation).

    Args:
        n_kernels: K.
        dtype: floating dtype of the matrix.

    Returns:
        ``(K, K)`` matrix with zeros on the diagonal and ones elsewhere.
    """
    return 1.0 - jnp.eye(n_kernels, dtype=dtype)


def entropic_transport_cost(
    coupling: Float[Array, "kernels kernels"],
    cost: Float[Array, "kernels kernels"],
    epsilon: Float[Array, ""],
) -> Float[Array, ""]:
    """Entropic transport cost of a coupling, ``⟨C,P⟩ − εH(P)``.

    Equals ``W_ε(P1, Pᵀ1)`` when ``P`` has Gibbs form
    ``exp((f_i + g_j − C_ij)/ε)`` (as both modes' couplings do) and is an
    upper bound on it for any other coupling.

    Args:
        coupling: a non-negative ``(K, K)`` matrix ``P``.
        cost: the cost matrix ``C``.
        epsilon: the entropic regularisation ``ε > 0``.

    Returns:
        ``Σ_ij C_ij P_ij + ε Σ_ij P_ij log P_ij`` (with ``0 log 0 = 0``).
    """
    return jnp.sum(cost * coupling) + epsilon * jnp.sum(xlogy(coupling, coupling))


def _sanitise(weights: Float[Array, " kernels"]) -> Float[Array, " kernels"]:
    # The predictor only ever passes simplex weights; a caller's slightly
    # negative or unnormalised vector is projected back rather than let NaN in.
    clean = jnp.where(jnp.isfinite(weights), jnp.maximum(weights, 0.0), 0.0)
    total = jnp.sum(clean)
    uniform = jnp.full_like(clean, 1.0 / clean.shape[0])
    return jnp.where(total > 0.0, clean / jnp.where(total > 0.0, total, 1.0), uniform)


def _scaled_gradient(
    gradient: Float[Array, " kernels"], tau: Float[Array, ""]
) -> Float[Array, " kernels"]:
    # τ·(∇E − min ∇E): shifting by a constant changes neither the Hedge target
    # nor the proximal minimiser (Σρ = 1), and makes every entry ≥ 0 with the
    # best kernel at exactly 0, so no exponent below can overflow. Capping at
    # a quarter of the dtype's maximum keeps a sum with the cost (and an
    # overflowed difference of huge finite gradients) finite; exp(−cap/ε) is 0
    # anyway.
    cap = jnp.finfo(gradient.dtype).max / 4
    shifted = gradient - jnp.min(gradient)
    return jnp.minimum(tau * shifted, cap)


def proximal_coupling(
    weights: Float[Array, " kernels"],
    gradient: Float[Array, " kernels"],
    tau: Float[Array, ""],
    epsilon: Float[Array, ""],
    cost: Float[Array, "kernels kernels"],
) -> Float[Array, "kernels kernels"]:
    """The optimal coupling of the entropic JKO step (closed form).

    ``P_ij = ρ_i softmax_j(−(C_ij + τ ∇E_j)/ε)``; its column sums are the
    proximal weights. Each row's exponents are shifted by their maximum, so
    every row has an entry ``exp(0) = 1`` in its normaliser and the softmax is
    finite for any ``ε > 0``.

    Args:
        weights: the current weights ``ρ_k`` (on the simplex).
        gradient: ``∇E`` (finite).
        tau: JKO time step ``τ > 0``.
        epsilon: entropic regularisation ``ε > 0``.
        cost: ``(K, K)`` finite cost between kernels.

    Returns:
        ``(K, K)`` coupling ``P`` with row sums ``ρ_k``.
    """
    distortion = cost + _scaled_gradient(gradient, tau)[None, :]
    # Subtracting the row minimum before dividing by ε keeps the largest
    # logit of each row at exactly 0 (the softmax is shift-invariant).
    logits = -(distortion - jnp.min(distortion, axis=1, keepdims=True)) / epsilon
    log_conditional = logits - logsumexp(logits, axis=1, keepdims=True)
    return weights[:, None] * jnp.exp(log_conditional)


def _proximal(weights, gradient, tau, epsilon, cost):
    coupling = proximal_coupling(weights, gradient, tau, epsilon, cost)
    new_weights = jnp.sum(coupling, axis=0)
    # Rows already sum to ρ_k; renormalising only removes rounding drift.
    new_weights = new_weights / jnp.sum(new_weights)
    row_error = jnp.sum(jnp.abs(jnp.sum(coupling, axis=1) - weights))
    free_energy = jnp.dot(gradient, new_weights) + entropic_transport_cost(coupling, cost, epsilon) / tau
    true = jnp.ones((), bool)
    false = jnp.zeros((), bool)
    info = JKOInfo(
        converged=true, retried=false, fell_back=false, free_energy=free_energy, marginal_error=row_error
    )
    return new_weights, info


def _sinkhorn_plan(a, b, cost, epsilon, iterations, threshold):
    """Sinkhorn with exactly ``iterations`` iterations; (plan, L1 column error).

    Scaling form (Cuturi 2013): with the Gibbs kernel ``G = exp(−C/ε)`` and
    ``u⁰ = 1``, each iteration is ``v = b ⊘ Gᵀu`` then ``u = a ⊘ Gv``, and
    ``P = diag(u) G diag(v)``. These are the log-domain iterates of ott-jax's
    ``lse_mode`` solver started from zero potentials (``u = e^{f/ε}``,
    ``v = e^{g/ε}``), so the plan is the same to rounding (tested against
    ott-jax), but an iteration is two K×K matrix-vector products instead of
    2K² exponentials: 50 iterations cost ~1 µs per asset-step under ``vmap``
    instead of ~30 (``benchmarks/roofline.py``).

    Range: the scalings stay within ``e^{±max C/ε}`` (finite in float64 down
    to ε ≈ 1/700 for the default cost, where the off-diagonal kernel
    underflows to 0 and no mass can move, exactly as in the log domain: the
    step then misses the threshold and falls back). Zero marginal entries
    (weights a guard set to 0) give zero scalings, never 0/0; a non-finite
    plan counts as not converged.
    """
    gibbs = jnp.exp(-cost / epsilon)
    tiny = jnp.finfo(gibbs.dtype).tiny

    def scale(mass, denominator):
        return jnp.where(mass > 0, mass / jnp.maximum(denominator, tiny), 0.0)

    def body(_, u):
        v = scale(b, gibbs.T @ u)
        return scale(a, gibbs @ v)

    # v is recomputed from the final u below; one extra product, so the
    # iteration order (v then u) and count match ott-jax's.
    u = jax.lax.fori_loop(0, iterations - 1, body, jnp.ones_like(a))
    v = scale(b, gibbs.T @ u)
    u = scale(a, gibbs @ v)
    plan = u[:, None] * gibbs * v[None, :]
    # Each iteration ends with the row (u) update, so P1 = a to rounding and
    # the column marginal carries all of the error.
    error = jnp.sum(jnp.abs(jnp.sum(plan, axis=0) - b))
    return plan, jnp.where(jnp.isfinite(error), error, jnp.inf)


def _faithful(weights, gradient, tau, epsilon, cost, iterations, threshold):
    n_kernels = weights.shape[0]
    # Hedge target b ∝ ρ_k exp(−τ∇E), normalised in the log domain; zero
    # weights stay zero (log 0 = −inf), as in any multiplicative update.
    log_target = jnp.log(weights) - _scaled_gradient(gradient, tau)
    target = jnp.exp(log_target - logsumexp(log_target))

    plan, error = _sinkhorn_plan(weights, target, cost, epsilon, iterations, threshold)
    first_ok = error <= threshold

    def keep(_):
        return plan, error, epsilon

    def anneal(_):
        # Entropy annealing: 2ε halves the exponent range of the Gibbs kernel,
        # which speeds Sinkhorn's contraction.
        retry_plan, retry_error = _sinkhorn_plan(weights, target, cost, 2.0 * epsilon, iterations, threshold)
        return retry_plan, retry_error, 2.0 * epsilon

    plan, error, used_epsilon = jax.lax.cond(first_ok, keep, anneal, None)
    converged = error <= threshold
    uniform = jnp.full((n_kernels,), 1.0 / n_kernels, weights.dtype)
    fallback_plan = weights[:, None] * uniform[None, :]
    plan = jnp.where(converged, plan, fallback_plan)
    used_epsilon = jnp.where(converged, used_epsilon, epsilon)
    columns = jnp.sum(plan, axis=0)
    new_weights = columns / jnp.sum(columns)
    free_energy = jnp.dot(gradient, new_weights) + entropic_transport_cost(plan, cost, used_epsilon) / tau
    info = JKOInfo(
        converged=converged,
        retried=~first_ok,
        fell_back=~converged,
        free_energy=free_energy,
        marginal_error=error,
    )
    return new_weights, info


def jko_step(
    weights: Float[Array, " kernels"],
    gradient: Float[Array, " kernels"],
    tau: Float[Array, ""] | float,
    epsilon: Float[Array, ""] | float,
    *,
    mode: str = "faithful",
    cost: Float[Array, "kernels kernels"] | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    threshold: Float[Array, ""] | float = DEFAULT_THRESHOLD,
) -> tuple[Float[Array, " kernels"], JKOInfo]:
    """One JKO step of the kernel weights (see the module docstring for the maths).

    ``faithful`` computes the Hedge target ``b ∝ ρ_k e^{−τ∇E}`` and returns
    the column sums of a fixed-count log-domain Sinkhorn plan between ``ρ_k``
    and ``b`` (equal to ``b`` within ``threshold`` when converged), retrying
    with ``2ε`` and falling back to uniform weights. ``proximal`` returns the
    exact minimiser of ``⟨∇E, ρ⟩ + W_ε(ρ_k, ρ)/τ`` over the simplex, with
    ``W_ε(a,b) = min_{P∈Π(a,b)} ⟨C,P⟩ − εH(P)``, in closed form.

    Cost: faithful mode runs one Sinkhorn of ``iterations`` log-sum-exp
    sweeps over a ``K×K`` matrix, two when the first misses (under ``vmap``
    both always run, ``lax.cond`` becoming a select); proximal mode is one
    ``K×K`` softmax and ignores ``iterations`` and ``threshold``.

    Args:
        weights: current weights ``ρ_k`` on the simplex (negative or
            non-finite entries are zeroed and the rest renormalised; an
            all-zero vector becomes uniform).
        gradient: ``∇E``, one finite value per kernel (any constant offset
            is irrelevant).
        tau: JKO time step ``τ > 0`` (``jko_tau``).
        epsilon: entropic regularisation ``ε > 0`` (``sinkhorn_epsilon``), in
            the units of the cost.
        mode: ``"faithful"`` or ``"proximal"`` (static).
        cost: ``(K, K)`` finite cost between kernels; default ``1 − I``.
        iterations: fixed Sinkhorn iteration count (static, faithful mode).
        threshold: L1 column-marginal error below which Sinkhorn counts as
            converged (faithful mode).

    Returns:
        ``(new_weights, info)``: the weights ``ρ_{k+1}`` (non-negative, sum 1)
        and a :class:`JKOInfo`.

    Raises:
        ValueError: unknown ``mode``, ``iterations < 1``, or a ``cost`` whose
            shape is not ``(K, K)`` (checked at trace time).

    Example:
        >>> weights = jnp.full(4, 0.25)
        >>> gradient = jnp.array([0.0, 0.5, 2.0, 0.1])
        >>> new, info = jko_step(weights, gradient, 0.5, 0.05, mode="proximal")
        >>> bool(info.converged), float(new.sum())
        (True, 1.0)

    References:
        Jordan, Kinderlehrer, Otto (1998), The variational formulation of the
        Fokker–Planck equation. Peyré (2015), Entropic approximation of
        Wasserstein gradient flows. Cuturi (2013), Sinkhorn distances.
    """
    if mode not in ("faithful", "proximal"):
        raise ValueError(f"jko_step: mode must be 'faithful' or 'proximal', got {mode!r}")
    if not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"jko_step: iterations must be an int >= 1, got {iterations!r}")
    weights = jnp.asarray(weights)
    n_kernels = weights.shape[0]
    dtype = jnp.result_type(weights, gradient, float)
    weights = _sanitise(weights.astype(dtype))
    gradient = jnp.asarray(gradient, dtype)
    tau = jnp.asarray(tau, dtype)
    epsilon = jnp.asarray(epsilon, dtype)
    if cost is None:
        cost = default_cost(n_kernels, dtype)
    cost = jnp.asarray(cost, dtype)
    if cost.shape != (n_kernels, n_kernels):
        raise ValueError(f"jko_step: cost must have shape ({n_kernels}, {n_kernels}), got {cost.shape}")
    if mode == "proximal":
        return _proximal(weights, gradient, tau, epsilon, cost)
    threshold = jnp.asarray(threshold, dtype)
    return _faithful(weights, gradient, tau, epsilon, cost, iterations, threshold)
