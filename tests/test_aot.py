"""AOT: fp.step lowers and compiles; init is one program; warmup fills the cache; the exported step."""

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A folder with CONFIG's step serialized once (the export compiles the step), and its arguments."""
    from fnpredict.runtime.exported import save_exported_step

    folder = tmp_path_factory.mktemp("exported")
    key = jax.random.key(0)
    state = fp.init(CONFIG, key)
    obs = jnp.asarray(0.5)
    path = save_exported_step(folder, state, obs, key)
    return folder, path, state, obs, key


def test_exported_step_round_trips_bit_for_bit(exported, tmp_path):
    from fnpredict.runtime.exported import load_exported_step

    folder, _, state, obs, key = exported
    assert load_exported_step(tmp_path, state, obs, key) is None  # nothing saved there
    step = load_exported_step(folder, state, obs, key)
    assert step is not None
    exported_state, reference_state = state, state
    for t, value in enumerate((0.5, 0.52, float("nan"), 0.49)):
        step_key = jax.random.key(10 + t)
        exported_state, exported_out = step(exported_state, value, step_key)
        reference_state, reference_out = fp.step(reference_state, jnp.asarray(value), step_key)
        assert type(exported_out) is type(reference_out)
        for a, b in zip(jax.tree_util.tree_leaves((exported_state, exported_out)),
                        jax.tree_util.tree_leaves((reference_state, reference_out))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The state it returns is an ordinary state: fp.step takes it.
    fp.step(exported_state, jnp.asarray(0.5), key)


def test_exported_step_is_never_used_for_another_program(exported, tmp_path):
    from fnpredict.runtime.exported import load_exported_step

    folder, path, state, obs, key = exported
    # Another config, another observation shape: another artifact key, so none is found.
    other = fp.init(fp.PredictorConfig(kernels=("levy", "persistence")), key)
    assert load_exported_step(folder, other, obs, key) is None
    assert load_exported_step(folder, state, jnp.zeros((1,)), key) is None
    # A loaded step refuses a state of another structure.
    step = load_exported_step(folder, state, obs, key)
    with pytest.raises(ValueError, match="another state structure"):
        step(other, obs, key)
    # A damaged artifact is not used (a warning; the caller falls back to fp.step).
    damaged = tmp_path / "cache"
    shutil.copytree(folder, damaged)
    with open(damaged / os.path.relpath(path, folder), "wb") as handle:
        handle.write(b"not a program")
    with pytest.warns(RuntimeWarning, match="cannot be read"):
        assert load_exported_step(damaged, state, obs, key) is None
