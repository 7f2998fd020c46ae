"""The weight-rule protocol: how the kernel weights learn from each step's losses.

In the spirit of optax's ``GradientTransformation``: a rule is a pair of pure
functions over an explicit state, ``init`` and ``update``; here ``update``
maps the losses of the kernels' previous forecasts against the realised y_t
to new weights on the simplex::

    rule_state = rule.init(n_kernels, hyperparams, dtype)
    weights, rule_state, info = rule.update(rule_state, weights, inputs, hyperparams)

The engine calls ``update`` on every step and keeps its result only when
``inputs.valid`` and no guard overrode the weights (see
:mod:`fnpredict.guards`); a guard that resets the weights (regime change,
circuit-breaker release) calls :meth:`AbstractWeightRule.reset`. A new rule
is one module: subclass :class:`AbstractWeightRule` and pass an instance as
``PredictorConfig(rule=...)``.
"""

import abc
from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..params import HyperparameterGroup, HyperparameterSpec


class RuleInput(eqx.Module):
    """What a weight rule learns from at step t (all scores of forecasts made at t−1).

    Attributes:
        predictions: ``(K,)`` the kernels' forecasts ŷ_{k,t} of y_t.
        target: the realised y_t (the last value when it is missing).
        losses: ``(K,)`` standardized loss ℓ((ŷ_k − y_t)/σ) of each kernel
            (half squared error, or Huber in robust mode): the gradient ∇E of
            the weight energy E(ρ) = Σ_k ρ_k ℓ_k of the seed's JKO flow.
        linearized_losses: ``(K,)`` the "gradient trick" losses
            ℓ'(z_ρ)·z_k, with z_ρ = (ρ·ŷ − y_t)/σ the mixture's standardized
            error: the gradient with respect to ρ of the mixture's own loss
            ℓ(z_ρ) (up to a constant per step, which no rule sees). Rules fed
            these compete with the best convex combination of the kernels,
            not only with the best single kernel.
        scale: σ_t, the error scale the losses are standardized by.
        loss_type: 0 = MSE, 1 = Huber.
        valid: whether there is an error to learn from this step.
    """

    predictions: Float[Array, " kernels"]
    target: Float[Array, ""]
    losses: Float[Array, " kernels"]
    linearized_losses: Float[Array, " kernels"]
    scale: Float[Array, ""]
    loss_type: Int[Array, ""]
    valid: Bool[Array, ""]


class AbstractWeightRule(eqx.Module):
    """A rule that moves the kernel weights (see the module docstring).

    Class attributes:
        name: short name (``--rule NAME``; key of the rule's own
            hyperparameters in ``Hyperparams.components``).
        hyperparameters: the rule's own tunable floats (empty by default;
            the JKO rules use the flat ``jko_tau`` and ``sinkhorn_epsilon``).
    """

    name: eqx.AbstractClassVar[str]
    hyperparameters: ClassVar[tuple[HyperparameterSpec, ...]] = ()

    def default_hyperparams(self, dtype=jnp.float64) -> HyperparameterGroup:
        return HyperparameterGroup.build(self.name, self.hyperparameters, dtype)

    @abc.abstractmethod
    def init(self, n_kernels: int, hyperparams, dtype) -> eqx.Module:
        """The rule's state before any loss has been seen (an ``eqx.Module`` of arrays)."""

    @abc.abstractmethod
    def update(
        self, state: eqx.Module, weights: Float[Array, " kernels"], inputs: RuleInput, hyperparams
    ) -> tuple[Float[Array, " kernels"], eqx.Module, eqx.Module]:
        """New weights from this step's losses.

        Args:
            state: the rule's state.
            weights: the current weights ρ_t (as the guards left them).
            inputs: the :class:`RuleInput` of this step.
            hyperparams: the full ``Hyperparams`` (own values under
                ``hyperparams.component(self.name)``).

        Returns:
            ``(weights, state, info)``: new weights on the simplex (finite,
            non-negative, sum 1), the new rule state, and the rule's
            fixed-shape ``Info``.
        """

    def reset(self, state: eqx.Module, n_kernels: int, hyperparams, dtype) -> eqx.Module:
        """The rule state after a guard reset the weights to uniform (default: a fresh ``init``)."""
        return self.init(n_kernels, hyperparams, dtype)


__all__ = ["AbstractWeightRule", "RuleInput"]
