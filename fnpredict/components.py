"""Resolve a config's component specifications (names or objects) into objects.

Names are the short form: a registered name is built with the config's
settings (``kernel_class(name).from_config(config)``); an object is used as
given. Building happens once, when the config is made, outside any trace
(``jax.ensure_compile_time_eval``), so that a config first built inside a
user's ``jit``/``grad`` still holds concrete arrays and never leaks tracers.
"""

import jax


def _fail(field: str, message: str):
    raise ValueError(f"PredictorConfig.{field}: {message}")


def resolve_kernels(config) -> tuple:
    from .kernels import AbstractKernel, kernel_class, registered

    spec = config._kernel_spec()
    if not spec:
        _fail("kernels", f"needs at least one kernel (a name from {registered()} or an AbstractKernel)")
    kernels = []
    for item in spec:
        if isinstance(item, str):
            if item not in registered():
                _fail("kernels", f"unknown kernel(s) [{item!r}]; choose from {registered()} or pass an AbstractKernel")
            kernels.append(kernel_class(item).from_config(config))
        elif isinstance(item, AbstractKernel):
            kernels.append(item)
        else:
            _fail("kernels", f"items must be names or AbstractKernel objects, got {type(item).__name__}")
    names = [k.name for k in kernels]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        _fail("kernels", f"duplicates in {tuple(names)}: {duplicates} (give each kernel a distinct name)")
    return tuple(kernels)


def resolve_rule(config):
    from .orchestrator import AbstractWeightRule, registered_rules, rule_from_name

    rule = config.rule
    if isinstance(rule, str):
        if rule not in registered_rules():
            _fail("rule", f"unknown rule {rule!r}; choose from {registered_rules()} or pass an AbstractWeightRule")
        return rule_from_name(rule, config)
    if isinstance(rule, AbstractWeightRule):
        return rule
    _fail("rule", f"must be a name or an AbstractWeightRule, got {type(rule).__name__}")


def resolve_guards(config, kernels) -> tuple:
    from .guards import AbstractGuard, DEFAULT_GUARDS, guard_from_name, registered_guards

    spec = DEFAULT_GUARDS if config.guards is None else config.guards
    if isinstance(spec, (str, AbstractGuard)):
        spec = (spec,)
    guards = []
    for item in spec:
        if isinstance(item, str):
            if item not in registered_guards():
                _fail("guards", f"unknown guard {item!r}; choose from {registered_guards()} or pass an AbstractGuard")
            guard = guard_from_name(item, config, kernels)
        elif isinstance(item, AbstractGuard):
            guard = item
        else:
            _fail("guards", f"items must be names or AbstractGuard objects, got {type(item).__name__}")
        if guard is not None:
            guards.append(guard)
    names = [g.name for g in guards]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        _fail("guards", f"duplicates: {duplicates}")
    kernel_names = [k.name for k in kernels]
    for guard in guards:
        guard.check(kernel_names)
    # One documented order of precedence (fnpredict.guards): applied lowest first.
    return tuple(sorted(guards, key=lambda g: g.precedence))


def resolve_components(config):
    with jax.ensure_compile_time_eval():
        kernels = resolve_kernels(config)
        rule = resolve_rule(config)
        guards = resolve_guards(config, kernels)
    return kernels, rule, guards
