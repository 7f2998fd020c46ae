r"""Learn the continuous hyperparameters by gradient descent on walk-forward windows.

The objective is :func:`~fnpredict.tuning.walk_forward`'s, the mean over
windows of MSE / random-walk MSE, and it is differentiable in every leaf that
``Hyperparams.spec()`` marks differentiable (tested against central finite
differences in ``tests/test_gradients.py``). All training windows are lanes
of one ``vmap``; the gradient of the whole backtest is one compiled
``jax.value_and_grad``, with ``jax.checkpoint`` over the scans
(``engine.scan(checkpoint=n)``) so that its memory grows like √T, not T.

Reparametrisation. Each learned field θ lives in a box ``[low, high]``
inside its documented range and is written as a smooth bijection of an
unconstrained u ∈ ℝ, on which the optimiser works:

.. math::

    \theta = \begin{cases}
      \ell + (h - \ell)\,\sigma(u) & \text{bounded box,} \\
      \exp\!\big(\log \ell + (\log h - \log \ell)\,\sigma(u)\big) & \text{bounded, log scale,} \\
      \ell + s\,\operatorname{softplus}(u) & \text{half-line } (\ell, \infty), \\
      \ell + s\,e^{u} & \text{half-line, log scale,}
    \end{cases}

with σ the logistic function, softplus(u) = log(1 + eᵘ) and s a fixed unit
(the initial distance to the bound, so that u starts at softplus⁻¹(1) or 0).
The log scale is for fields whose box spans decades (a step in u is then a
relative change of θ). Gradients follow by the chain rule,
dθ/du = (h − ℓ) σ(u)(1 − σ(u)) for the first, θ·(log h − log ℓ) σ(1 − σ)
for the second. θ cannot leave the box, whatever the step; u is clipped to
±30 (σ(±30) is 1e-13 from the bound) so that float rounding cannot land θ on
an open bound of the documented range.

Optimiser: ``optax.chain(clip_by_global_norm(clip), adamw(learning_rate,
weight_decay))`` on u (weight decay pulls u towards 0, the middle of the box
in the bounded cases: a weak prior). Early stopping: after every step the
validation windows (a later span, never trained on) are scored forward only;
the parameters with the best validation objective so far are kept, and
learning stops after ``patience`` steps without an improvement of at least
``min_delta``. The defaults' own validation score is the first candidate, so
learning never returns parameters that validate worse than where it started.
"""

import dataclasses
import functools
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from ..config import Hyperparams, PredictorConfig
from .walkforward import _score_window, make_windows

#: The box of each learned field (low, high, log scale): the Optuna search
#: space's differentiable fields (:data:`~fnpredict.tuning.search.DEFAULT_SEARCH_SPACE`),
#: so that ``learn`` and ``tune`` search the same set.
DEFAULT_LEARN_SPACE: dict[str, tuple[float, float, bool]] = {
    "jko_tau": (0.05, 5.0, True),
    "sinkhorn_epsilon": (0.01, 0.5, True),
    "error_alpha": (0.005, 0.2, True),
    "huber_delta_scale": (0.5, 3.0, False),
    "rls_forgetting": (0.95, 0.9995, False),
    "rls_ridge": (0.01, 100.0, True),
}

#: |u| cap (see the module docstring).
U_CAP = 30.0


def default_learn_space() -> dict[str, tuple[float, float, bool]]:
    """A copy of :data:`DEFAULT_LEARN_SPACE` (name -> (low, high, log))."""
    return dict(DEFAULT_LEARN_SPACE)


@dataclasses.dataclass(frozen=True)
class Reparametrisation:
    """The bijection u ↦ θ of one field (see the module docstring).

    Attributes:
        name: the ``Hyperparams`` field.
        low, high: the box (``high`` may be ``inf``: a half-line).
        log: log scale.
        unit: s, the half-line's unit (ignored for a bounded box).
    """

    name: str
    low: float
    high: float
    log: bool
    unit: float = 1.0

    @property
    def bounded(self) -> bool:
        return math.isfinite(self.high)

    def forward(self, u):
        """θ(u)."""
        u = jnp.clip(u, -U_CAP, U_CAP)
        if self.bounded and self.log:
            log_low, log_high = math.log(self.low), math.log(self.high)
            return jnp.exp(log_low + (log_high - log_low) * jax.nn.sigmoid(u))
        if self.bounded:
            return self.low + (self.high - self.low) * jax.nn.sigmoid(u)
        if self.log:
            return self.low + self.unit * jnp.exp(u)
        return self.low + self.unit * jax.nn.softplus(u)

    def inverse(self, theta: float) -> float:
        """u(θ) for a θ strictly inside the box (clipped to ±U_CAP)."""
        if self.bounded:
            if self.log:
                fraction = (math.log(theta) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
            else:
                fraction = (theta - self.low) / (self.high - self.low)
            fraction = min(max(fraction, 1e-12), 1.0 - 1e-12)
            u = math.log(fraction) - math.log1p(-fraction)
        else:
            ratio = max((theta - self.low) / self.unit, 1e-300)
            # softplus⁻¹(r) = log(eʳ − 1), written stably for large r.
            u = math.log(ratio) if self.log else ratio + math.log(-math.expm1(-ratio))
        return float(min(max(u, -U_CAP), U_CAP))


def make_reparametrisations(space: dict, initial: dict[str, float]) -> tuple[Reparametrisation, ...]:
    """Check ``space`` against the documented ranges and build the bijections.

    Raises:
        ValueError: an unknown or non-differentiable field, a box outside the
            documented range, ``low >= high``, a log scale with ``low <= 0``
            on a bounded box, or an initial value outside the box.
    """
    spec = Hyperparams.spec()
    out = []
    for name, (low, high, log) in space.items():
        if name not in spec:
            raise ValueError(f"learn space: unknown hyperparameter {name!r}; known: {sorted(spec)}")
        _default, lower, upper, lower_open, upper_open, meaning, differentiable = spec[name]
        if not differentiable:
            raise ValueError(
                f"learn space: {name} ({meaning}) is a threshold: the loss is piecewise constant in it "
                "(zero gradient almost everywhere); tune it with fp.tuning.tune instead"
            )
        low, high = float(low), float(high)
        if not low < high:
            raise ValueError(f"learn space: {name} needs low < high, got ({low}, {high})")
        # A box may touch an open bound: θ(u) stays strictly inside it since |u| <= U_CAP.
        if low < lower or high > upper:
            raise ValueError(f"learn space: {name} box ({low}, {high}) leaves its documented range "
                             f"({lower}, {upper})")
        if log and math.isfinite(high) and low <= 0:
            raise ValueError(f"learn space: {name} on a log scale needs low > 0, got {low}")
        theta = float(initial[name])
        if not low <= theta <= high:
            raise ValueError(f"learn space: {name} starts at {theta}, outside its box ({low}, {high})")
        unit = max(theta - low, 1e-12 * max(abs(low), 1.0))
        out.append(Reparametrisation(name, low, high, bool(log), unit))
    return tuple(out)


@dataclasses.dataclass
class LearnResult:
    """What :func:`learn` found.

    Attributes:
        best_params: name -> learned value (the best validation step's).
        hyperparams: ``Hyperparams`` with those values (defaults elsewhere).
        best_value: training objective at the kept parameters.
        best_validation: validation objective at the kept parameters.
        initial_value, initial_validation: both objectives at the start.
        history: one dict per step: ``step``, ``value`` (training objective
            before the update), ``validation``, ``grad_norm`` (before clipping)
            and the ``params`` it was evaluated at.
        n_steps: gradient steps taken; ``n_evaluations``: training-objective
            evaluations (each with its gradient); ``stopped_early``.
        seconds: wall time, compilation included.
        objective: its description (as in ``tune``'s result).
    """

    best_params: dict
    hyperparams: Hyperparams
    best_value: float
    best_validation: float
    initial_value: float
    initial_validation: float
    history: list
    n_steps: int
    n_evaluations: int
    stopped_early: bool
    seconds: float
    objective: str = "mean walk-forward MSE ratio to the random walk"


def _values(reparams, u):
    return {r.name: r.forward(u[i]) for i, r in enumerate(reparams)}


def _objective(config, train, checkpoint, template, reparams, u, windows, key):
    hyperparams = template.replace(**_values(reparams, u))
    keys = jax.random.split(key, windows.shape[0])
    scores = jax.vmap(lambda w, k: _score_window(config, train, hyperparams, w, k, checkpoint))(windows, keys)
    return jnp.mean(scores.mse_ratio)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4))
def _value_and_grad(config, train, checkpoint, template, reparams, u, windows, key):
    return jax.value_and_grad(
        lambda v: _objective(config, train, checkpoint, template, reparams, v, windows, key)
    )(u)


@functools.partial(jax.jit, static_argnums=(0, 1, 3))
def _validation(config, train, template, reparams, u, windows, key):
    return _objective(config, train, 0, template, reparams, u, windows, key)


def learn(
    config: PredictorConfig,
    data,
    key,
    n_steps: int = 30,
    n_windows: int = 4,
    train: int | None = None,
    validation: float = 0.25,
    n_validation_windows: int = 1,
    space: dict | None = None,
    initial: Hyperparams | None = None,
    optimizer: optax.GradientTransformation | None = None,
    learning_rate: float = 0.1,
    weight_decay: float = 1e-4,
    clip: float = 1.0,
    patience: int = 8,
    min_delta: float = 1e-5,
    checkpoint: int | None = None,
    progress: bool = True,
) -> LearnResult:
    """Learn the differentiable hyperparameters by gradient on walk-forward windows.

    ``data`` is split in time: the first ``1 − validation`` of it is cut into
    ``n_windows`` training windows (as :func:`walk_forward`: warm up on
    ``train`` steps, score the rest), the last ``validation`` into
    ``n_validation_windows`` for early stopping. One step: the objective and
    its gradient on all training windows at once (one compiled ``vmap`` of
    the checkpointed backtest), gradient clipping, an AdamW update of the
    unconstrained parameters, the validation score.

    Args:
        config: the predictor config.
        data: ``(time,)`` or ``(time, channels)`` series.
        key: PRNG key (the same for every evaluation: a deterministic objective;
            the training windows use it as ``walk_forward`` does).
        n_steps: the most gradient steps (the evaluation budget).
        n_windows, train: training windows and their warm-up (default half
            a window).
        validation: fraction of ``data`` (at its end) held out for early
            stopping; ``n_validation_windows`` windows in it.
        space: name -> (low, high, log) boxes (default
            :data:`DEFAULT_LEARN_SPACE`); ``high`` may be ``inf``.
        initial: starting hyperparameters (default ``Hyperparams()``), also
            the values of every field not learned.
        optimizer: an Optax transformation replacing the default
            ``chain(clip_by_global_norm(clip), adamw(learning_rate, weight_decay))``.
        patience, min_delta: early stopping (steps without a validation
            improvement of at least ``min_delta``).
        checkpoint: segment length of the rematerialised scan (default
            ≈ √(window length)); 0 switches checkpointing off.
        progress: a tqdm progress bar.

    Returns:
        A :class:`LearnResult`; ``best_params`` is what ``fnpredict learn``
        writes (the same JSON as ``fnpredict tune``).

    Example:
        >>> result = fp.tuning.learn(cfg, log_prices, jax.random.key(0), n_steps=20)
        >>> result.best_params["jko_tau"]
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if not 0.0 < validation < 1.0:
        raise ValueError(f"validation must be a fraction in (0, 1), got {validation}")
    data = np.asarray(data, dtype=np.float64)
    split = int(round(data.shape[0] * (1.0 - validation)))
    windows, train = make_windows(data[:split], n_windows, train)
    validation_windows, _ = make_windows(data[split:], n_validation_windows, train)
    if checkpoint is None:
        checkpoint = max(1, int(round(math.sqrt(windows.shape[1]))))
    initial = Hyperparams(dtype=config.jnp_dtype) if initial is None else initial.validate()
    space = default_learn_space() if space is None else dict(space)
    # Fields of components this config does not run have no effect: skip them.
    template = _template(config, initial)
    space = {n: b for n, b in space.items() if _present(config, template, n)}
    if not space:
        raise ValueError("learn: no learnable field of this config in the space")
    start = {n: float(np.asarray(getattr(template, n))) for n in space}
    reparams = make_reparametrisations(space, start)
    dtype = config.jnp_dtype
    windows = jnp.asarray(windows, dtype)
    validation_windows = jnp.asarray(validation_windows, dtype)
    # The training windows get ``key`` itself, as walk_forward and tune use it
    # (kernel A's Monte Carlo noise moves the objective by ~1e-4, the size of
    # the effects learned: the same key makes learn's and tune's objectives
    # the same function); the validation windows an independent one.
    key_train, key_validation = key, jax.random.fold_in(key, 1)
    if optimizer is None:
        optimizer = optax.chain(
            optax.clip_by_global_norm(clip), optax.adamw(learning_rate, weight_decay=weight_decay)
        )

    started = time.perf_counter()
    u = jnp.asarray([r.inverse(start[r.name]) for r in reparams], dtype)
    opt_state = optimizer.init(u)

    def evaluate(u):
        # ott-jax's Sinkhorn backward mixes int64 counters and floats; trace
        # the gradient on standard promotion whatever the caller's setting.
        with jax.numpy_dtype_promotion("standard"):
            value, gradient = _value_and_grad(config, train, checkpoint, template, reparams, u, windows, key_train)
            score = _validation(config, train, template, reparams, u, validation_windows, key_validation)
        return float(value), gradient, float(score)

    def params_of(u):
        return {r.name: float(r.forward(u[i])) for i, r in enumerate(reparams)}

    history = []
    best = None
    since_best = 0
    stopped_early = False
    bar = tqdm(total=n_steps, desc="learn", unit="step", disable=not progress, leave=False)
    for step in range(n_steps):
        value, gradient, score = evaluate(u)
        grad_norm = float(optax.tree.norm(gradient))
        history.append({"step": step, "value": value, "validation": score, "grad_norm": grad_norm,
                        "params": params_of(u)})
        if best is None or (math.isfinite(score) and score < best[1] - min_delta):
            best, since_best = (value, score, u), 0
        else:
            since_best += 1
        bar.set_postfix(train=f"{value:.5f}", validation=f"{score:.5f}")
        bar.update(1)
        if since_best >= patience:
            stopped_early = True
            break
        if not (math.isfinite(value) and bool(jnp.all(jnp.isfinite(gradient)))):
            break  # nothing sound to step on; the best so far stands
        with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32 step counts
            updates, opt_state = optimizer.update(gradient, opt_state, u)
            u = optax.apply_updates(u, updates)
    bar.close()
    best_value, best_validation, best_u = best
    best_params = params_of(best_u)
    return LearnResult(
        best_params=best_params,
        hyperparams=initial.replace(**best_params),
        best_value=best_value,
        best_validation=best_validation,
        initial_value=history[0]["value"],
        initial_validation=history[0]["validation"],
        history=history,
        n_steps=len(history),
        n_evaluations=len(history),
        stopped_early=stopped_early,
        seconds=time.perf_counter() - started,
    )


def _template(config, initial):
    from .. import engine

    return engine.init(config, None, initial).hyperparams


def _present(config, hyperparams, name) -> bool:
    """Whether ``name`` is a predictor-level field or one of a component this config runs."""
    if name in Hyperparams.SPEC:
        return True
    owners = set(config.kernel_names) | {config.rule_object.name}
    return any(name in group.values for owner, group in hyperparams.components.items() if owner in owners)


__all__ = ["learn", "LearnResult", "Reparametrisation", "make_reparametrisations", "DEFAULT_LEARN_SPACE",
           "default_learn_space"]
