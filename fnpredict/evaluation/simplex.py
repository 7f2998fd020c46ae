"""The best convex combination of forecasts in hindsight: least squares over the simplex.

Solves ``min_w mean((P w − y)²)`` subject to ``w ≥ 0, Σ w = 1`` for a
``(time, K)`` forecast matrix ``P``. Host-side numpy, never traced.

Method. Since ``Σ w = 1``, subtracting any per-step reference ``r_t`` from
every column and from the target leaves the objective unchanged
(``P w − y = (P − r 1ᵀ) w − (y − r)``). With ``r`` = the last observation the
columns become forecast *increments*, which are far less collinear than the
levels (every level forecast is ≈ ``y_t``), so the Gram matrix
``G = Pᵀ P / T`` is well conditioned enough to factor. The problem is then a
K-dimensional quadratic programme. For K ≤ :data:`MAX_EXACT_KERNELS` it is
solved exactly by enumerating the faces of the simplex: the optimum lies in
the relative interior of some face, where it is the minimiser of the
equality-constrained problem on that face's support (one small KKT solve);
the best feasible face candidate is the optimum. Beyond that, accelerated
projected gradient (FISTA) with the Euclidean projection onto the simplex of
Duchi et al. (2008).

Why no library: the problem is tiny (K ≤ 5 here) and exactly solvable in
microseconds; scipy's SLSQP stops at a loose default tolerance without saying
so and ``scipy.optimize.nnls`` has no sum-to-one constraint, and a QP
library (cvxpy, quadprog) would be a new dependency for a 31-system solve.

References:
    J. Duchi, S. Shalev-Shwartz, Y. Singer, T. Chandra, "Efficient
    projections onto the l1-ball for learning in high dimensions", ICML 2008.
"""

import itertools

import numpy as np

__all__ = ["best_convex_weights", "project_to_simplex", "MAX_EXACT_KERNELS"]

#: Face enumeration visits 2^K − 1 supports; 2^12 small solves is still well
#: under a second, beyond that projected gradient is used.
MAX_EXACT_KERNELS = 12


def project_to_simplex(v: np.ndarray) -> np.ndarray:
    """Euclidean projection of ``v`` onto the probability simplex (Duchi et al. 2008, Fig. 1)."""
    v = np.asarray(v, float)
    u = np.sort(v)[::-1]
    cumulative = np.cumsum(u) - 1.0
    index = np.arange(1, v.size + 1)
    rho = np.nonzero(u - cumulative / index > 0)[0][-1]
    theta = cumulative[rho] / (rho + 1.0)
    return np.maximum(v - theta, 0.0)


def _quadratic(forecasts, target, reference):
    P = np.asarray(forecasts, float)
    y = np.asarray(target, float)
    if reference is not None:
        r = np.asarray(reference, float)
        P, y = P - r[:, None], y - r
    mask = np.all(np.isfinite(P), axis=1) & np.isfinite(y)
    P, y = P[mask], y[mask]
    if P.shape[0] == 0:
        raise ValueError("best_convex_weights: no step with finite forecasts and target")
    n = P.shape[0]
    return P.T @ P / n, P.T @ y / n, float(y @ y / n)


def _exact(G, b):
    K = G.shape[0]
    best_w, best_value = None, np.inf
    for size in range(1, K + 1):
        for support in itertools.combinations(range(K), size):
            s = list(support)
            # KKT of min wᵀGw − 2bᵀw s.t. 1ᵀw = 1 on the support: [2G 1; 1ᵀ 0][w; λ] = [2b; 1].
            kkt = np.zeros((size + 1, size + 1))
            kkt[:size, :size] = 2.0 * G[np.ix_(s, s)]
            kkt[:size, size] = 1.0
            kkt[size, :size] = 1.0
            rhs = np.concatenate([2.0 * b[s], [1.0]])
            solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            w_support = solution[:size]
            # Feasibility up to round-off (1e-12 on weights of order 1).
            if np.any(w_support < -1e-12):
                continue
            w = np.zeros(K)
            w[s] = np.maximum(w_support, 0.0)
            w /= w.sum()
            value = w @ G @ w - 2.0 * b @ w
            if best_w is None or value < best_value:
                best_w, best_value = w, value
    return best_w


def _projected_gradient(G, b, iterations=5000):
    K = G.shape[0]
    step = 1.0 / (2.0 * max(np.linalg.eigvalsh(G).max(), 1e-300))
    w = np.full(K, 1.0 / K)
    z, t = w.copy(), 1.0
    for _ in range(iterations):
        w_next = project_to_simplex(z - step * (2.0 * G @ z - 2.0 * b))
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        z = w_next + (t - 1.0) / t_next * (w_next - w)
        w, t = w_next, t_next
    return w


def best_convex_weights(forecasts: np.ndarray, target: np.ndarray, reference: np.ndarray | None = None,
                        method: str = "auto") -> tuple[np.ndarray, float]:
    """Weights on the simplex minimising the mean squared error in hindsight.

    Args:
        forecasts: ``(time, K)`` forecasts ``P``.
        target: ``(time,)`` what they forecast ``y``.
        reference: optional ``(time,)`` per-step reference subtracted from both
            (the last observation: better conditioning, same minimiser).
        method: ``"exact"`` (face enumeration), ``"gradient"`` (FISTA) or
            ``"auto"`` (exact for K ≤ :data:`MAX_EXACT_KERNELS`).

    Steps where any forecast or the target is not finite are dropped.

    Returns:
        ``(weights, mse)``: the ``(K,)`` weights and the mean squared error they reach.

    Example:
        >>> w, mse = best_convex_weights(np.stack([f1, f2], 1), y)
    """
    G, b, c = _quadratic(forecasts, target, reference)
    if method == "auto":
        method = "exact" if G.shape[0] <= MAX_EXACT_KERNELS else "gradient"
    if method == "exact":
        w = _exact(G, b)
    elif method == "gradient":
        w = _projected_gradient(G, b)
    else:
        raise ValueError(f"best_convex_weights: method must be 'auto', 'exact' or 'gradient', got {method!r}")
    return w, float(max(w @ G @ w - 2.0 * b @ w + c, 0.0))
