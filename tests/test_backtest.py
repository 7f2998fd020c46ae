"""The host-side backtest driver: chunked, padded runs equal one ``predict`` call."""

import jax
import numpy as np

import fnpredict as fp
from fnpredict.backtest import run_backtest, telemetry_columns

CONFIG = fp.PredictorConfig(kernels=("levy", "signature"), buffer_size=64, scales=(2.0, 3.0, 4.5, 6.75, 10.0),
                            levy_window=48)


def test_chunked_backtest_equals_one_predict_call():
    prices = fp.data.log_levels(fp.data.load_sp500().values)[:250]
    prices[100] = np.nan  # a missing step inside a chunk
    key = jax.random.key(4)
    # 250 steps in chunks of 64: the last chunk is padded with no-op steps.
    result = run_backtest(prices, CONFIG, key, chunk=64, progress=False)
    final, outs = fp.predict(fp.init(CONFIG, key), prices, key)
    # Same step program, same keys (split once for the whole run): bit-identical on CPU.
    np.testing.assert_array_equal(result.prediction, np.asarray(outs.prediction))
    np.testing.assert_array_equal(result.weights, np.asarray(outs.weights))
    for path, values in fp.telemetry.flatten(outs.telemetry).items():
        np.testing.assert_array_equal(result.telemetry[path], values, err_msg=path)
    for a, b in zip(jax.tree_util.tree_leaves(result.final_state), jax.tree_util.tree_leaves(final)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    columns = [c for c, _, _ in telemetry_columns(result)]
    assert {"fallback_levy", "converged_signature", "status", "kernels.levy.stability"} <= set(columns)
