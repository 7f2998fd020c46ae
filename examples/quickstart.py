"""Getting started: init, step, predict, vmap — on the bundled S&P 500 closes."""

import jax
import jax.numpy as jnp
import numpy as np

import fnpredict as fp
from fnpredict.data import load_sp500, log_levels


def main(steps: int = 300, n_assets: int = 4):
    prices = log_levels(load_sp500().values)
    config = fp.PredictorConfig()            # every kernel on, 128-step window
    key = jax.random.key(0)
    state = fp.init(config, key)

    state, out = fp.step(state, prices[0], key)                 # one online step
    state = fp.fit(state, prices[1:200], key)                   # warm up (lax.scan)
    state, outs = fp.predict(state, prices[200:200 + steps], key)  # outputs stacked on axis 0
    errors = np.asarray(outs.prediction[:-1]) - prices[201:200 + steps]
    print(f"one-step RMSE over {steps - 1} days: {np.sqrt(np.mean(errors ** 2)):.5f} (log price)")
    print("final weights:", dict(zip(config.kernel_names, np.round(np.asarray(outs.weights[-1]), 3))))

    # Many assets: vmap the scanned step over a batch of states and series.
    series = jnp.stack([jnp.asarray(prices[i * 500 : i * 500 + steps]) for i in range(n_assets)], axis=1)
    states = jax.vmap(lambda _: fp.init(config))(jnp.arange(n_assets))
    keys = jax.random.split(key, steps)
    run = jax.jit(jax.vmap(lambda s, d: fp.engine.scan(s, d, keys), in_axes=(0, 1)))
    _, batched = run(states, series)
    print("last forecast per asset:", np.round(np.asarray(batched.prediction[:, -1]), 4))


if __name__ == "__main__":
    main()
