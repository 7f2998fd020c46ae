"""Walk-forward windows (one vmap) equal per-window runs; Optuna tuning runs
populations through shared storage."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict.tuning import make_windows, walk_forward

CONFIG = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=48, scales=(2.0, 3.0, 4.5, 6.75, 10.0))


@pytest.fixture(scope="module")
def series():
    return np.cumsum(np.random.default_rng(1).standard_normal(800) * 0.01) + 3.0


def test_windows_cut_the_series_in_order(series):
    windows, train = make_windows(series, 4)
    assert windows.shape == (4, 200) and train == 100
    np.testing.assert_array_equal(windows[2], series[400:600])
    with pytest.raises(ValueError, match="train"):
        make_windows(series, 4, train=199)


def test_vmapped_windows_equal_separate_runs(series):
    key = jax.random.key(0)
    result = walk_forward(CONFIG, series, key, n_windows=4)
    windows, train = make_windows(series, 4)
    window_keys = jax.random.split(key, 4)
    for i in (0, 3):
        keys = jax.random.split(window_keys[i], windows.shape[1])
        state = fp.init(CONFIG)
        state, _ = fp.engine.scan(state, jnp.asarray(windows[i, :train]), keys[:train], keep_outputs=False)
        _, outs = fp.engine.scan(state, jnp.asarray(windows[i, train:]), keys[train:])
        forecast = np.asarray(outs.prediction[:-1])
        target = windows[i, train + 1 :]
        mse = np.mean((forecast - target) ** 2)
        # vmapped vs single program: the float64 parity bound of DESIGN §5.
        np.testing.assert_allclose(float(result.mse[i]), mse, rtol=1e-10, atol=0)
        rw = np.mean((windows[i, train:-1] - target) ** 2)
        np.testing.assert_allclose(float(result.random_walk_mse[i]), rw, rtol=1e-12, atol=0)
    assert result.n_scored.tolist() == [99] * 4


def test_population_scores_each_member(series):
    key = jax.random.key(0)
    population = fp.Hyperparams(rls_forgetting=jnp.asarray([0.98, 0.999]))
    population = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (2,)), population)
    together = walk_forward(CONFIG, series, key, population, n_windows=4, population=True)
    assert together.mse.shape == (2, 4)
    alone = walk_forward(CONFIG, series, key, fp.Hyperparams(rls_forgetting=0.999), n_windows=4)
    np.testing.assert_allclose(np.asarray(together.mse[1]), np.asarray(alone.mse), rtol=1e-10, atol=0)


def test_tune_shares_trials_through_storage(series, tmp_path):
    storage = f"sqlite:///{tmp_path / 'tune.db'}"
    space = {"rls_forgetting": (0.95, 0.999, False), "jko_tau": (0.1, 2.0, True)}
    first = fp.tuning.tune(CONFIG, series, jax.random.key(0), n_trials=4, batch_size=2, n_windows=4,
                           search_space=space, storage=storage, study_name="t", progress=False)
    assert first["n_trials"] == 4
    assert set(first["best_params"]) == set(space)
    assert first["best_value"] == min(t["value"] for t in first["trials"])
    # A second process (here: a second call) joins the same study.
    second = fp.tuning.tune(CONFIG, series, jax.random.key(0), n_trials=2, batch_size=2, n_windows=4,
                            search_space=space, storage=storage, study_name="t", progress=False, seed=1)
    assert second["n_trials"] == 6
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        fp.tuning.tune(CONFIG, series, jax.random.key(0), search_space={"learning_rate": (0.1, 1.0, False)})
