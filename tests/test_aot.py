"""Ahead-of-time compilation: fp.step lowers and compiles; init is one program; warmup fills the cache."""

import jax
import jax.numpy as jnp
import numpy as np

import fnpredict as fp
from fnpredict import engine

CONFIG = fp.PredictorConfig(kernels=("levy", "signature"))


def test_step_lowers_and_compiles_ahead_of_time():
    key = jax.random.key(0)
    state = fp.init(CONFIG, key)
    obs = jnp.asarray(0.5)
    compiled = fp.step.lower(state, obs, key).compile()
    aot_state, aot_out = compiled(state, obs, key)
    jit_state, jit_out = fp.step(state, obs, key)
    # The same executable: bitwise equal on CPU (DESIGN §5).
    for a, b in zip(jax.tree_util.tree_leaves((aot_state, aot_out)), jax.tree_util.tree_leaves((jit_state, jit_out))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_init_is_one_compiled_program():
    config = fp.PredictorConfig(kernels=("levy", "persistence"))
    with jax.log_compiles(False):
        fp.init(config)
        before = engine._init_program._cache_size()
        for seed in range(3):
            fp.init(config, jax.random.key(seed), fp.Hyperparams().replace(jko_tau=0.1 * (seed + 1)))
    # New hyperparameter values, same program.
    assert engine._init_program._cache_size() == before


def test_warmup_compiles_the_deployment_programs(tmp_path):
    from fnpredict.runtime.warmup import deployment_programs

    programs = deployment_programs(CONFIG, stream_assets=(1, 3), predict_steps=(4,), chunk_steps=(8,))
    assert set(programs) == {"init", "step", "stream[1]", "stream[3]", "predict[4]", "chunk[8]"}
    for lowered in programs.values():
        assert isinstance(lowered, jax.stages.Lowered)
    programs["stream[3]"].compile()
