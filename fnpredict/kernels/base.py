"""The kernel protocol: what every prediction kernel must provide.

A kernel is an immutable ``eqx.Module``. Its fields are its *static settings*
(e.g. the Monte Carlo path count) and any fixed arrays it needs (e.g. trained
network weights); both belong to the kernel, which sits in the static
:class:`~fnpredict.config.PredictorConfig`, so its arrays are compiled into
the step once and shared by every asset under ``vmap``, never copied into the
per-asset state. Its *hyperparameters* are declared once
(:attr:`AbstractKernel.hyperparameters`) and live, as float leaves, in
``Hyperparams.components[kernel.name]``. Its *learned state* is a separate
PyTree threaded through :meth:`AbstractKernel.step` inside
``PredictorState.kernel_states``. Its per-step diagnostics are its ``Info``,
nested in the telemetry.

One call per step (DESIGN §2 steps 7–8)::

    state, forecast, info = kernel.step(state, history, params, key)

``history`` already contains the newest observation y_t. The kernel first
learns from what was realised (e.g. the increment y_t − y_{t−1}) and then
forecasts y_{t+1} (a level, in the units of channel 0) with what it has just
learnt, fitting its window at most once.

Every method is pure and traceable: no Python branching on traced values, no
host round-trips, fixed shapes, no work that grows with history length. It is
written for one asset; ``vmap`` and ``scan`` are applied outside.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ..params import HyperparameterGroup, HyperparameterSpec


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
        return jnp.arange(size, dtype=self.count.dtype) >= size - self.count


class Forecast(eqx.Module):
    """The point forecast a kernel returns from ``step``: fixed shapes, no Optionals.

    Kernel-specific diagnostics (an entropy monitor, a solver residual, fitted
    parameters) go in the kernel's own ``Info``, not here.

    Attributes:
        value: forecast of the next level y_{t+1}; always finite (a kernel that
            cannot forecast returns ``history.last`` and sets ``fallback``).
        fallback: True when ``value`` is the last-value fallback (degenerate
            input, failed fit, non-convergence that made the result unusable).
        converged: False when an inner solver did not reach its tolerance
            (reported even when its result is still used).
    """

    value: Float[Array, ""]
    fallback: Bool[Array, ""]
    converged: Bool[Array, ""]

    @classmethod
    def ok(cls, value, history: History) -> "Forecast":
        """A forecast with the standard finite-or-fallback guard applied."""
        return cls.guarded(value, history, fallback=jnp.asarray(False))

    @classmethod
    def guarded(cls, value, history: History, fallback=False, converged=True) -> "Forecast":
        """Replace a non-finite ``value`` by ``history.last`` and flag it."""
        value = jnp.asarray(value, history.values.dtype)
        bad = ~jnp.isfinite(value) | jnp.asarray(fallback)
        safe = jnp.where(bad, history.last, value)
        return cls(value=safe, fallback=bad, converged=jnp.asarray(converged, bool))


class NoInfo(eqx.Module):
    """The ``Info`` of a component with no diagnostics of its own (an empty PyTree)."""


class EmptyState(eqx.Module):
    """The learned state of a kernel that learns nothing online (an empty PyTree)."""


class AbstractKernel(eqx.Module):
    """A one-step-ahead prediction kernel (see the module docstring for the contract).

    Class attributes:
        name: the kernel's short name: its key in ``Hyperparams.components``,
            its column label in reports, and (for the built-ins) its name in
            ``PredictorConfig(kernels=...)``. Names in one config are unique.
        hyperparameters: the kernel's tunable floats, a tuple of
            :class:`~fnpredict.params.HyperparameterSpec` (empty by default).

    A kernel defined outside fnpredict subclasses this, implements ``init`` and
    ``step``, and is passed as a value: ``PredictorConfig(kernels=("levy",
    MyKernel(coefficients=jnp.array([...]))))``. Nothing needs registering.
    """

    name: eqx.AbstractClassVar[str]
    hyperparameters: ClassVar[tuple[HyperparameterSpec, ...]] = ()

    @classmethod
    def from_config(cls, config) -> "AbstractKernel":
        """Build the kernel with the settings of a ``PredictorConfig`` (the short form by name).

        Kernels with no settings need not override this.
        """
        return cls()

    def default_hyperparams(self, dtype=jnp.float64) -> HyperparameterGroup:
        """This kernel's hyperparameters at their defaults."""
        return HyperparameterGroup.build(self.name, self.hyperparameters, dtype)

    @abc.abstractmethod
    def init(self, params: HyperparameterGroup, dtype) -> eqx.Module:
        """Initial learned state (a PyTree of arrays of ``dtype``; :class:`EmptyState` if none).

        Args:
            params: this kernel's hyperparameters (attribute access by name).
            dtype: the predictor's float dtype.
        """

    @abc.abstractmethod
    def step(
        self, state: eqx.Module, history: History, params: HyperparameterGroup, key: PRNGKeyArray
    ) -> tuple[eqx.Module, Forecast, eqx.Module]:
        """Learn from the realised y_t, then forecast y_{t+1}.

        Args:
            state: this kernel's learned state from the previous step.
            history: the window ending at y_t (``history.observed`` False on a
                missing step; then the kernel must return a state equal to
                ``state`` for every leaf it learns, with ``jnp.where``).
            params: this kernel's hyperparameters.
            key: this step's PRNG key for this kernel.

        Returns:
            ``(state, forecast, info)``: the new learned state (finite), the
            :class:`Forecast` (finite), and the kernel's ``Info`` (a
            fixed-shape PyTree, :class:`NoInfo` if none).
        """


    def step_with_law(
        self, state: eqx.Module, history: History, params: HyperparameterGroup, key: PRNGKeyArray
    ) -> tuple[eqx.Module, Forecast, eqx.Module, tuple | None]:
        """:meth:`step`, plus the kernel's own predictive law of y_{t+1} if it has one.

        Optional: the default returns ``None`` as the law, and the interval
        layer (:mod:`fnpredict.intervals`) then gives this kernel a
        location-scale Student-t law at its forecast with a scale learnt
        from its own errors. A kernel that has a law of its own (Monte Carlo
        draws, a fitted transition density) overrides this and returns
        ``(law, valid)``: an :class:`~fnpredict.intervals.AbstractLaw` of
        fixed shapes, finite even when ``valid`` is False (then the layer
        uses the Student-t fallback for this step).

        Returns:
            ``(state, forecast, info, law_or_None)``; the first three equal
            :meth:`step`'s.
        """
        state, forecast, info = self.step(state, history, params, key)
        return state, forecast, info, None


def tree_bytes(tree) -> int:
    """Bytes of the array leaves of a PyTree (e.g. one asset's state)."""
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree_util.tree_leaves(tree) if hasattr(leaf, "dtype"))


__all__ = ["AbstractKernel", "EmptyState", "Forecast", "History", "NoInfo", "tree_bytes"]
