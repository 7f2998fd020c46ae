"""The kernel protocol: what every prediction kernel must provide.

A kernel is a small, immutable ``eqx.Module`` built from the static
:class:`~fnpredict.config.PredictorConfig`. Its *learned* state is a separate
PyTree (an ``eqx.Module`` of arrays) that lives inside
``PredictorState.kernel_states``. All three methods are pure and traceable:
no Python branching on traced values, no host round-trips, fixed shapes, no
work that grows with history length. They are called for one asset; ``vmap``
and ``scan`` are applied outside.

Per step the engine calls, in this order (DESIGN §2 steps 7–8)::

    forecast = kernel.forecast(kernel_state, history, hyperparams, key)
    kernel_state = kernel.update(kernel_state, history, hyperparams)

``history`` already contains the newest observation y_t; ``forecast`` predicts
y_{t+1} (a level, in the units of channel 0) and ``update`` learns from what
was realised (e.g. the increment y_t - y_{t-1}).
"""

import abc

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..config import Hyperparams, PredictorConfig


class History(eqx.Module):
    """The recent observations, oldest first, as every kernel sees them.

    Attributes:
        values: ``(buffer, channels)`` chronological window. Slots not yet
            filled by real observations are back-filled with the oldest real
            observation (zeros before the first one), so the array is always
            finite and a kernel reading it never sees NaN.
        count: how many real observations the window holds (0..buffer).
        observed: whether this step brought a new valid observation (False on
            a missing step; then ``values`` is unchanged from the last step).
    """

    values: Float[Array, "buffer channels"]
    count: Int[Array, ""]
    observed: Bool[Array, ""]

    @property
    def target(self) -> Float[Array, " buffer"]:
        """Channel 0 (the predicted series), oldest first."""
        return self.values[:, 0]

    @property
    def last(self) -> Float[Array, ""]:
        """The most recent value of the target (0 before any observation)."""
        return self.values[-1, 0]

    @classmethod
    def empty(cls, buffer_size: int, n_channels: int = 1, dtype=jnp.float64) -> "History":
        """A window that has seen nothing yet (all zeros, count 0)."""
        return cls(
            values=jnp.zeros((buffer_size, n_channels), dtype),
            count=jnp.zeros((), jnp.int32),
            observed=jnp.zeros((), bool),
        )

    def push(self, obs: Float[Array, " channels"], observed: Bool[Array, ""] | bool = True) -> "History":
        """The window after observation ``obs`` (ignored, with ``observed`` False, when not observed).

        Slides the window by one; the first real observation back-fills the
        whole window so it is finite and flat before the data starts.
        """
        obs = jnp.broadcast_to(jnp.asarray(obs, self.values.dtype), self.values.shape[1:])
        observed = jnp.asarray(observed, bool)
        shifted = jnp.concatenate([self.values[1:], obs[None]], axis=0)
        first = jnp.broadcast_to(obs, self.values.shape)
        candidate = jnp.where(self.count == 0, first, shifted)
        return History(
            values=jnp.where(observed, candidate, self.values),
            count=jnp.where(observed, jnp.minimum(self.count + 1, self.values.shape[0]), self.count).astype(jnp.int32),
            observed=observed,
        )

    def valid_mask(self) -> Bool[Array, " buffer"]:
        """True where the slot holds a real observation (the newest ``count``)."""
        size = self.values.shape[0]
        return jnp.arange(size) >= size - self.count


class Forecast(eqx.Module):
    """What a kernel returns from ``forecast``: fixed shapes, sentinels not Optionals.

    Attributes:
        value: forecast of the next level y_{t+1}; always finite (a kernel that
            cannot forecast returns ``history.last`` and sets ``fallback``).
        fallback: True when ``value`` is the last-value fallback (degenerate
            input, failed fit, non-convergence that made the result unusable).
        converged: False when an inner solver did not reach its tolerance
            (reported even when its result is still used).
        entropy: the DGM entropy monitor's value; NaN for kernels without one.
        collapsed: True when the kernel's own collapse check fails this step
            (DGM mode collapse); False for kernels without one.
    """

    value: Float[Array, ""]
    fallback: Bool[Array, ""]
    converged: Bool[Array, ""]
    entropy: Float[Array, ""]
    collapsed: Bool[Array, ""]

    @classmethod
    def ok(cls, value, history: History) -> "Forecast":
        """A forecast with the standard finite-or-fallback guard applied."""
        return cls.guarded(value, history, fallback=jnp.asarray(False))

    @classmethod
    def guarded(cls, value, history: History, fallback=False, converged=True,
                entropy=None, collapsed=False) -> "Forecast":
        """Replace a non-finite ``value`` by ``history.last`` and flag it."""
        value = jnp.asarray(value, history.values.dtype)
        bad = ~jnp.isfinite(value) | jnp.asarray(fallback)
        safe = jnp.where(bad, history.last, value)
        entropy = jnp.asarray(jnp.nan if entropy is None else entropy, history.values.dtype)
        return cls(
            value=safe,
            fallback=bad,
            converged=jnp.asarray(converged, bool),
            entropy=entropy,
            collapsed=jnp.asarray(collapsed, bool),
        )


class AbstractKernel(eqx.Module):
    """A one-step-ahead prediction kernel.

    Subclasses are ``eqx.Module`` s whose fields are static configuration
    (copied from ``PredictorConfig`` by ``from_config``) or fixed arrays
    (e.g. trained network weights); the learned state is returned by ``init``
    and threaded through ``update``.
    """

    name: eqx.AbstractClassVar[str]

    @classmethod
    @abc.abstractmethod
    def from_config(cls, config: PredictorConfig) -> "AbstractKernel":
        """Build the kernel from the static predictor config."""

    @abc.abstractmethod
    def init(self, hyperparams: Hyperparams, dtype) -> eqx.Module:
        """Initial learned state (an ``eqx.Module`` of arrays of ``dtype``)."""

    @abc.abstractmethod
    def forecast(
        self, state: eqx.Module, history: History, hyperparams: Hyperparams, key: PRNGKeyArray
    ) -> Forecast:
        """Forecast y_{t+1} from the window ending at y_t. Must be finite always."""

    @abc.abstractmethod
    def update(self, state: eqx.Module, history: History, hyperparams: Hyperparams) -> eqx.Module:
        """Learn from the realised y_t (when ``history.observed``); keep state finite.

        On a missing step (``history.observed`` False) return a state equal to
        the input (use ``jnp.where``), so that a NaN never enters the carry.
        """
