"""Each kernel fits its window once per step (the seed fitted three of them twice).

The fit functions are wrapped with call counters and one step of the whole
predictor is traced (``jax.make_jaxpr``): a trace runs the Python of every
kernel exactly once, so the counters are the number of fits per step.
"""

import functools

import jax
import jax.numpy as jnp

import fnpredict as fp
from fnpredict.kernels import dgm, imex, levy, signature

FITS = [
    (levy, "estimate_stable"),
    (imex, "fit_jump_diffusion"),
    (dgm, "fit_ou"),
    (signature.SignatureKernel, "features"),
]


def test_each_kernel_fits_its_window_once_per_step(monkeypatch):
    counts = {}
    for owner, name in FITS:
        original = getattr(owner, name)

        @functools.wraps(original)
        def counted(*args, _original=original, _name=name, **kwargs):
            counts[_name] = counts.get(_name, 0) + 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(owner, name, counted)
    config = fp.PredictorConfig(buffer_size=64, scales=(2.0, 3.0, 4.5, 6.75, 10.0), levy_window=48)
    state = fp.init(config)
    jax.make_jaxpr(fp.engine.step_impl)(state, jnp.asarray(4.0), jax.random.key(0))
    assert counts == {name: 1 for _, name in FITS}
