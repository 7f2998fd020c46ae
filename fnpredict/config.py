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
import hashlib
import json
import math
from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from .params import HyperparameterGroup, HyperparameterSpec, as_leaf

#: The four stochastic kernels (DESIGN §1).
KERNEL_NAMES: tuple[str, ...] = ("levy", "dgm", "imex", "signature")
#: The default kernel set: the four plus the random walk as an expert, which
#: the evaluation lab showed best (docs/accuracy.md: on the S&P 500 the JKO
#: ensemble's MSE / random walk goes from 1.0050 to 1.0009 with it).
DEFAULT_KERNELS: tuple[str, ...] = KERNEL_NAMES + ("persistence",)
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
        kernels: the kernels, in column order (K follows): built-in names
            (``"levy"``, ``"dgm"``, ``"imex"``, ``"signature"``,
            ``"persistence"``; see :func:`fnpredict.kernels.registered`) built
            with this config's settings, and/or kernel objects
            (:class:`~fnpredict.kernels.AbstractKernel` instances, e.g.
            ``fp.kernels.LevyKernel(n_paths=512, window=64)`` or a kernel of
            your own). Names must be unique.
        rule: the weight rule: a name (``"jko"``, the default, means the
            JKO flow in ``jko_mode``; see :func:`fnpredict.orchestrator.registered`)
            or an :class:`~fnpredict.orchestrator.AbstractWeightRule` object.
        guards: the guards, by name or as objects
            (:class:`~fnpredict.guards.AbstractGuard`); ``None`` (default) means
            the default built-in ones (:data:`fnpredict.guards.DEFAULT_GUARDS`:
            regime_reset, circuit_breaker, staleness; collapse_mute is
            opt-in), ``()`` none. They are applied in their documented order of precedence
            (:mod:`fnpredict.guards`), whatever the order given; switching one
            off is an ablation.
        dtype: ``"float64"`` (default) or ``"float32"``.
        wavelet: ``"gaus1"`` or ``"mexh"`` for the CWT.
        scales: CWT scales in samples, strictly increasing, >= 1.
        q_moments: WTMM moments q (non-zero, strictly increasing, at least 3).
        holder_min_count: observations the buffer must hold before the Hölder
            exponent may trip the circuit breaker (default: the whole buffer).
        cusum_window: length of the rolling error window for the kurtosis.
        regime_detectors: which regime-change detectors raise
            ``regime_change_detected``: ``"magnitude"`` (the seed's one-sided
            CUSUM on the error scale, kurtosis-adaptive threshold) and/or
            ``"signed"`` (a two-sided Page CUSUM on the signed standardized
            errors: a shift of their mean, e.g. a drift flip). Both always
            run and report; this selects which ones alarm.
        regime_window: after a signed regime alarm the kernels estimate from
            the observations since the alarm only, but never fewer than this
            many (the window then grows back to the buffer one step at a
            time), so the new regime is not averaged with the old one for a
            whole buffer. ``0`` switches this off (kernels always see the whole
            buffer). Default 32: the signed detector's own warm-up. On the
            drift-flip family it lowers the MSE/oracle from ≈ 1.095 to ≈ 1.075
            (``docs/accuracy.md``).
        bad_tick_filter: hold back an observation implausibly far from the
            recent path (``bad_tick_threshold`` robust standard deviations)
            until the next one confirms it (:mod:`fnpredict.input_filter`).
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
        quantile_levels: levels of the predictive quantiles every step reports
            (strictly increasing, in (0, 1)); ``()`` turns the interval layer
            off (:mod:`fnpredict.intervals`). Default: 1, 5, 25, 50, 75, 95
            and 99 %.
        quantile_iterations: the most Chandrupatla iterations of the mixture
            quantile root find, which stops once every level has converged
            (16 reach float64 round-off on the built-in laws from the
            component bracket, even with one kernel 100 scales away from the
            others; 12 left a CDF error of 8e-4 there; the default step needs
            9 on average).
        interval_weights: the weights of the interval mixture: ``"pinball"``
            (default; learnt from each kernel's own pinball loss, see
            :mod:`fnpredict.intervals.layer`) or ``"ensemble"`` (the point
            forecast's weights).
    """

    buffer_size: int = 128
    n_channels: int = 1
    kernels: tuple = dataclasses.field(default=DEFAULT_KERNELS, compare=False)
    rule: object = dataclasses.field(default="jko", compare=False)
    guards: tuple | None = dataclasses.field(default=None, compare=False)
    dtype: str = "float64"
    wavelet: str = "gaus1"
    scales: tuple[float, ...] = dataclasses.field(default_factory=_default_scales)
    q_moments: tuple[float, ...] = (-2.0, -1.0, 1.0, 2.0, 3.0, 4.0)
    holder_min_count: int | None = None
    cusum_window: int = 64
    regime_detectors: tuple[str, ...] = ("magnitude", "signed")
    regime_window: int = 32
    bad_tick_filter: bool = True
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
    quantile_levels: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
    quantile_iterations: int = 16
    interval_weights: str = "pinball"

    def __post_init__(self):
        def positive_int(name, minimum=1):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
                _fail(name, f"must be an int >= {minimum}, got {value!r}")

        positive_int("buffer_size", 32)
        positive_int("n_channels", 1)
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
        detectors = (self.regime_detectors,) if isinstance(self.regime_detectors, str) else tuple(self.regime_detectors)
        object.__setattr__(self, "regime_detectors", detectors)
        if not set(detectors) <= {"magnitude", "signed"} or len(set(detectors)) != len(detectors):
            _fail("regime_detectors", f"must be distinct names from ('magnitude', 'signed'), got {detectors}")
        if not isinstance(self.regime_window, int) or isinstance(self.regime_window, bool) or not (
            0 <= self.regime_window <= self.buffer_size
        ):
            _fail("regime_window", f"must be an int in [0, buffer_size={self.buffer_size}], got {self.regime_window!r}")
        if not isinstance(self.bad_tick_filter, bool):
            _fail("bad_tick_filter", f"must be True or False, got {self.bad_tick_filter!r}")
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
        levels = tuple(float(v) for v in self.quantile_levels)
        object.__setattr__(self, "quantile_levels", levels)
        if any(not (0.0 < v < 1.0) for v in levels) or any(b <= a for a, b in zip(levels, levels[1:])):
            _fail("quantile_levels", f"need strictly increasing levels in (0, 1), got {levels}")
        positive_int("quantile_iterations", 1)
        if self.interval_weights not in ("pinball", "ensemble"):
            _fail("interval_weights", f"must be 'pinball' or 'ensemble', got {self.interval_weights!r}")
        # Components last: building them reads the settings validated above.
        from .components import resolve_components

        kernels, rule, guards = resolve_components(self)
        object.__setattr__(self, "kernels", tuple(
            item if isinstance(item, str) else obj for item, obj in zip(self._kernel_spec(), kernels)
        ))
        object.__setattr__(self, "_kernel_objects", kernels)
        object.__setattr__(self, "_rule_object", rule)
        object.__setattr__(self, "_guard_objects", guards)
        object.__setattr__(self, "_identity", (
            tuple(fingerprint(k) for k in kernels), fingerprint(rule), tuple(fingerprint(g) for g in guards),
        ))

    # Set in __post_init__: the component objects, and the key that equality
    # and hashing use for them (the config is part of every compiled step's
    # signature, so two configs are "the same program" exactly when their
    # fields and their components' fingerprints agree).
    _kernel_objects: tuple = dataclasses.field(init=False, repr=False, compare=False, default=())
    _rule_object: object = dataclasses.field(init=False, repr=False, compare=False, default=None)
    _guard_objects: tuple = dataclasses.field(init=False, repr=False, compare=False, default=())
    _identity: tuple = dataclasses.field(init=False, repr=False, compare=True, default=())

    def _kernel_spec(self) -> tuple:
        return tuple(self.kernels) if not isinstance(self.kernels, (str, bytes)) else (self.kernels,)

    @property
    def kernel_objects(self) -> tuple:
        """The kernel objects, in column order (built once, with this config's settings for names)."""
        return self._kernel_objects

    @property
    def kernel_names(self) -> tuple[str, ...]:
        """Each kernel's ``name``, in column order."""
        return tuple(k.name for k in self._kernel_objects)

    @property
    def rule_object(self):
        """The weight rule object."""
        return self._rule_object

    @property
    def guard_objects(self) -> tuple:
        """The guard objects, in order of application (lowest precedence first)."""
        return self._guard_objects

    def describe(self) -> dict:
        """A JSON-able description (snapshot headers, reports): fields, component names and fingerprints."""
        out = {}
        for f in dataclasses.fields(self):
            if f.name.startswith("_") or f.name in ("kernels", "rule", "guards"):
                continue
            out[f.name] = getattr(self, f.name)
        out["kernels"] = list(self.kernel_names)
        out["rule"] = self._rule_object.name
        out["guards"] = [g.name for g in self._guard_objects]
        out["components"] = repr(self._identity)
        return json.loads(json.dumps(out))

    @property
    def n_levels(self) -> int:
        """L, the number of quantile levels (0: intervals off)."""
        return len(self.quantile_levels)

    @property
    def n_kernels(self) -> int:
        return len(self._kernel_objects)

    @property
    def jnp_dtype(self):
        return jnp.float64 if self.dtype == "float64" else jnp.float32

    def kernel_index(self, name: str) -> int:
        """Column of the kernel named ``name`` in the weights, or -1 when it is off."""
        names = self.kernel_names
        return names.index(name) if name in names else -1

    def replace(self, **changes) -> "PredictorConfig":
        return dataclasses.replace(self, **changes)


_FINGERPRINTS: dict[int, tuple] = {}


def _stable_repr(leaf) -> str:
    """A text for a non-array leaf that is the same in every process.

    ``repr`` of a function holds its memory address (``<function <lambda> at
    0x7f...>``), different in each process, so a snapshot written by one
    process failed to load in the next (its config fingerprint never matched).
    A function is named by where it is defined and its bytecode instead, plus
    the values its closure captured.
    """
    target = getattr(leaf, "__wrapped__", leaf)  # jax.jit / functools.wraps
    code = getattr(target, "__code__", None)
    if code is None:
        return repr(leaf)
    cells = []
    for cell in getattr(target, "__closure__", None) or ():
        try:
            cells.append(_stable_repr(cell.cell_contents))
        except ValueError:  # an empty cell (a name not yet bound when captured)
            cells.append("<empty>")
    return (f"function {getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')} "
            f"{code.co_firstlineno} {hashlib.sha256(code.co_code).hexdigest()} {tuple(cells)}")


def fingerprint(component) -> tuple:
    """The value identity of a component (kernel, rule, guard) or of a name.

    Its type, its static structure (the PyTree definition, which includes the
    static fields) and a SHA-256 of its array leaves: two kernels with the same
    settings and the same weights compare equal, so they share one compiled
    step; any difference compiles a new one. Cached per object (components are
    immutable), so hashing a config inside ``jit``'s cache lookup stays cheap.
    """
    if isinstance(component, str):
        return ("name", component)
    cached = _FINGERPRINTS.get(id(component))
    if cached is not None and cached[0] is component:
        return cached[1]
    leaves, treedef = jax.tree_util.tree_flatten(component)
    digest = hashlib.sha256()
    for leaf in leaves:
        if isinstance(leaf, jax.core.Tracer):
            raise TypeError(
                f"{type(component).__name__} holds a traced array: build kernels, rules and guards outside "
                "jit/grad/vmap (their arrays are constants of the compiled step)"
            )
        if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            array = np.asarray(leaf)
            digest.update(f"{array.shape}{array.dtype}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        else:
            digest.update(_stable_repr(leaf).encode())
    key = (type(component).__module__, type(component).__qualname__, str(treedef), digest.hexdigest())
    _FINGERPRINTS[id(component)] = (component, key)
    return key


# The predictor-level hyperparameters (orchestration and guards). The kernels'
# and rules' own hyperparameters are declared by each component
# (``AbstractKernel.hyperparameters``) and nested under its name.
# name -> (default, lower, upper, lower_open, upper_open, meaning, differentiable)
_HYPERPARAMETER_SPEC: dict[str, tuple] = {
    "sinkhorn_epsilon": (0.2, 0.0, math.inf, True, True, "entropic regularisation of the JKO Sinkhorn", True),
    "jko_tau": (0.5, 0.0, math.inf, True, True, "JKO time step (step size of the weight flow)", True),
    "holder_threshold": (0.1, -math.inf, math.inf, True, True, "circuit breaker trips when h_min < this", False),
    "cusum_h": (8.0, 0.0, math.inf, True, True, "CUSUM threshold, in standardized-error units", False),
    "cusum_k": (0.5, 0.0, math.inf, False, True, "CUSUM slack per step, standardized units", False),
    "error_alpha": (0.02, 0.0, 1.0, True, False, "EMA rate of the error variance", True),
    "besov_c": (2.0, 0.0, math.inf, True, True, "cone-of-influence radius factor of WTMM linking", False),
    "huber_delta_scale": (1.345, 0.0, math.inf, True, True, "Huber delta in units of the error sigma", True),
    "weight_floor": (1e-6, 0.0, 0.1, True, False, "weight left on the other kernels in emergency", True),
    "bad_tick_threshold": (12.0, 0.0, math.inf, True, True, "bad-tick test, robust standard deviations", False),
    "page_h": (12.0, 0.0, math.inf, True, True, "signed (Page) CUSUM threshold, standardized units", False),
    "page_k": (0.35, 0.0, math.inf, False, True, "signed (Page) CUSUM reference value (half the shift)", False),
    "interval_learning_rate": (0.005, 0.0, 1.0, True, True,
                               "quantile-tracking step of the median's calibration offset, in scales", False),
    "interval_scale_rate": (0.06, 0.0, 1.0, True, False, "EMA rate of each kernel's absolute error", False),
    "interval_weight_learning_rate": (1.0, 0.0, math.inf, False, True,
                                      "eta of the interval mixture's pinball weights", False),
    "interval_weight_forgetting": (0.99, 0.0, 1.0, False, False, "discount of the pinball weights' losses", False),
}


def _builtin_groups(dtype) -> dict:
    """Default hyperparameter groups of the registered built-in kernels that declare any."""
    from .kernels import registered, kernel_class

    groups = {}
    for name in registered():
        cls = kernel_class(name)
        if cls.hyperparameters:
            groups[name] = HyperparameterGroup.build(name, cls.hyperparameters, dtype)
    return groups


def _flat_owner(name: str):
    """The built-in component owning the flat hyperparameter ``name`` (DESIGN §1 names), or None."""
    from .kernels import registered, kernel_class

    for owner in registered():
        if any(spec[0] == name for spec in kernel_class(owner).hyperparameters):
            return owner
    return None


class Hyperparams(eqx.Module):
    """Every continuous, tunable number: float array leaves, traced and vmappable.

    Predictor-level fields (``jko_tau``, ``cusum_h``, ...) are attributes;
    each component's own hyperparameters form a
    :class:`~fnpredict.params.HyperparameterGroup` in ``components`` under
    the component's name. The built-in kernels' values are also reachable
    flat, under their DESIGN §1 names: ``Hyperparams(rls_forgetting=0.99)``
    sets ``components["signature"].rls_forgetting`` and
    ``hp.rls_forgetting`` reads it. ``fp.init`` adds the default group of any
    component of its config that ``components`` lacks, so a custom kernel's
    hyperparameters need not be given.

    Each field has a documented range (``Hyperparams.spec()``); out-of-range
    values raise ``ValueError`` naming the field when the values are concrete.

    Differentiability (the last entry of each ``spec()`` tuple): a backtest
    loss is differentiable in ``sinkhorn_epsilon``, ``jko_tau``,
    ``error_alpha``, ``huber_delta_scale``, ``weight_floor`` and the
    kernels' rates (``rls_forgetting``, ``rls_ridge``), and in fixed share's
    ``share_rate``; ``jax.grad`` agrees with finite differences
    (``tests/test_gradients.py``). The thresholds of a test
    (``holder_threshold``, ``cusum_h``, ``cusum_k``, ``besov_c``,
    ``bad_tick_threshold``, ``page_h``, ``page_k``,
    ``imex_jump_threshold``, ``dgm_collapse_gamma``) are not: the loss is
    piecewise constant in them, so their gradient is zero almost everywhere
    (learn them with :func:`fnpredict.tuning.tune`, not
    :func:`fnpredict.tuning.learn`).
    Leaves may carry leading batch axes (a population):
    ``jax.vmap(fp.init, in_axes=(None, None, 0))``.

    Attributes:
        components: component name -> its hyperparameter group.
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
    bad_tick_threshold: Float[Array, "..."]
    page_h: Float[Array, "..."]
    page_k: Float[Array, "..."]
    interval_learning_rate: Float[Array, "..."]
    interval_scale_rate: Float[Array, "..."]
    interval_weight_learning_rate: Float[Array, "..."]
    interval_weight_forgetting: Float[Array, "..."]
    components: dict

    SPEC: ClassVar[dict] = _HYPERPARAMETER_SPEC

    def __init__(self, dtype=jnp.float64, components: dict | None = None, **values):
        groups = _builtin_groups(dtype)
        for name, group in (components or {}).items():
            if not isinstance(group, HyperparameterGroup):
                raise TypeError(f"Hyperparams.components[{name!r}] must be a HyperparameterGroup, got {type(group)}")
            groups[name] = group
        flat_changes: dict[str, dict] = {}
        for name in list(values):
            if name in _HYPERPARAMETER_SPEC:
                continue
            owner = _flat_owner(name)
            if owner is None:
                known = sorted(set(_HYPERPARAMETER_SPEC) | set(_flat_names()))
                raise ValueError(f"Hyperparams: unknown field(s) [{name!r}]; known: {known}")
            flat_changes.setdefault(owner, {})[name] = values.pop(name)
        for owner, changes in flat_changes.items():
            groups[owner] = groups[owner].replace(**changes)
        for name, spec in _HYPERPARAMETER_SPEC.items():
            setattr(self, name, as_leaf(values.get(name, spec[0]), dtype))
        self.components = groups

    def __check_init__(self):
        self.validate()

    def __getattr__(self, name):
        # Flat read access to the components' values (DESIGN §1 names); only
        # reached when normal lookup fails.
        if name == "components" or name.startswith("__"):
            raise AttributeError(name)
        for group in self.__dict__.get("components", {}).values():
            if name in group.values:
                return group.values[name]
        raise AttributeError(f"Hyperparams has no field {name!r}")

    def component(self, name: str) -> HyperparameterGroup:
        """The hyperparameter group of the component ``name`` (an empty group if it declares none)."""
        group = self.components.get(name)
        return group if group is not None else HyperparameterGroup(owner=name, spec=(), values={})

    def with_defaults(self, components) -> "Hyperparams":
        """A copy with the default group of every component in ``components`` that lacks one."""
        missing = {c.name: c.default_hyperparams(self.sinkhorn_epsilon.dtype) for c in components
                   if c.hyperparameters and c.name not in self.components}
        if not missing:
            return self
        return eqx.tree_at(lambda hp: hp.components, self, {**self.components, **missing})

    def validate(self) -> "Hyperparams":
        """Raise ``ValueError`` naming the first out-of-range field (concrete values only)."""
        for name, spec in _HYPERPARAMETER_SPEC.items():
            HyperparameterSpec(name, *spec).check(getattr(self, name), "Hyperparams")
        for group in self.components.values():
            group.validate()
        return self

    @classmethod
    def spec(cls) -> dict[str, tuple]:
        """Default, bounds, openness, meaning and differentiability of each flat field (built-in kernels' included)."""
        out = {name: tuple(spec) for name, spec in _HYPERPARAMETER_SPEC.items()}
        from .kernels import registered, kernel_class

        for owner in registered():
            for spec in kernel_class(owner).hyperparameters:
                out[spec[0]] = tuple(spec[1:])
        return out

    def replace(self, **values) -> "Hyperparams":
        """A copy with some flat fields changed (predictor-level or built-in kernels' names)."""
        dtype = self.sinkhorn_epsilon.dtype
        current = {name: getattr(self, name) for name in _HYPERPARAMETER_SPEC}
        groups = dict(self.components)
        for name, value in values.items():
            if name in _HYPERPARAMETER_SPEC:
                current[name] = value
                continue
            owner = next((o for o, g in groups.items() if name in g.values), None)
            if owner is None:
                raise ValueError(f"Hyperparams: unknown field {name!r}")
            groups[owner] = groups[owner].replace(**{name: value})
        return Hyperparams(dtype=dtype, components=groups, **current)


def _flat_names() -> list[str]:
    from .kernels import registered, kernel_class

    return [spec[0] for owner in registered() for spec in kernel_class(owner).hyperparameters]
