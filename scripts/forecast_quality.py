"""Issue-9 figures for the default predictor: S&P 500 ratios and the bad-tick cases.

Run: ``python scripts/forecast_quality.py [--rule NAME] [--kernels a,b] [--guards a,b|none]``.
Prints, for the bundled S&P 500 log-levels: the MSE and MAE ratios of the
ensemble to the random walk (scored after the buffer fills); then, with one
value replaced by 1e12, by 1e300, and by a +50% spike that reverts the next
day, the MAE over the following 128 steps relative to the random walk's on
the clean series, and whether an emergency was raised; for a persistent 10σ
level shift at four dates, the steps until the breaker (or the emergency
policy) acted; and the signed (Page) CUSUM's detection rate and false alarms
on the drift-flip family and on driftless Gaussian random walks.
"""

import argparse

import jax
import numpy as np

import fnpredict as fp


def _config(args) -> fp.PredictorConfig:
    changes = {}
    if args.rule:
        changes["rule"] = args.rule
    if args.kernels:
        changes["kernels"] = tuple(args.kernels.split(","))
    if args.guards:
        changes["guards"] = () if args.guards == "none" else tuple(args.guards.split(","))
    return fp.PredictorConfig(**changes)


def _run(config, values, key):
    _, outs = fp.predict(fp.init(config, key), values, key)
    return jax.device_get(outs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rule")
    parser.add_argument("--kernels")
    parser.add_argument("--guards")
    args = parser.parse_args(argv)
    config = _config(args)
    key = jax.random.key(0)
    prices = fp.data.log_levels(fp.data.load_sp500().values)
    warmup = config.buffer_size
    outs = _run(config, prices, key)
    forecast, target, last = outs.prediction[warmup:-1], prices[warmup + 1:], prices[warmup:-1]
    mse = np.mean((forecast - target) ** 2) / np.mean((last - target) ** 2)
    mae = np.mean(np.abs(forecast - target)) / np.mean(np.abs(last - target))
    print(f"config: kernels {config.kernel_names}, rule {config.rule_object.name}, "
          f"guards {[g.name for g in config.guard_objects]}")
    print(f"S&P 500, {len(target)} scored steps: MSE/RW {mse:.5f}  MAE/RW {mae:.5f}")
    for k, name in enumerate(config.kernel_names):
        kmse = np.mean((outs.kernel_predictions[warmup:-1, k] - target) ** 2) / np.mean((last - target) ** 2)
        print(f"  kernel {name:12s} MSE/RW {kmse:.5f}")

    at = 3000
    rw_mae = np.mean(np.abs(prices[at + 1:at + 129] - prices[at:at + 128]))
    for label, value in (("1e12", 1e12), ("1e300", 1e300), ("+50% reverting spike", prices[at] + np.log(1.5))):
        bad = prices.copy()
        bad[at] = value
        outs = _run(config, bad, key)
        # Forecasts made at steps at..at+127 of the clean values at+1..at+128.
        mae_after = np.mean(np.abs(outs.prediction[at:at + 128] - prices[at + 1:at + 129]))
        emergency = bool(np.any(outs.telemetry.emergency_mode[at:at + 128]))
        held = bool(outs.telemetry.observation_held[at])
        print(f"bad tick {label:22s}: MAE next 128 / RW {mae_after / rw_mae:8.4f}  held {held}  "
              f"P(real) {float(outs.telemetry.input_filter.real_probability[at]):.3g}  emergency raised {emergency}")
    # The same spike at other dates (the acceptance names one; these show how much it depends on where).
    spike_ratios = []
    for at in (1000, 2000, 4000):
        bad = prices.copy()
        bad[at] = prices[at] + np.log(1.5)
        outs = _run(config, bad, key)
        rw = np.mean(np.abs(prices[at + 1:at + 129] - prices[at:at + 128]))
        spike_ratios.append((at, np.mean(np.abs(outs.prediction[at:at + 128] - prices[at + 1:at + 129])) / rw,
                             float(outs.telemetry.input_filter.real_probability[at])))
    print("+50% spike at other dates (step, MAE next 128 / RW, P(real)): "
          + ", ".join(f"({a}, {r:.4f}, {p:.3f})" for a, r, p in spike_ratios))
    for at in (1000, 2000, 3000, 4000):
        sigma = np.std(np.diff(prices[at - 128:at]))
        shifted = prices.copy()
        shifted[at:] += 10 * sigma
        outs = _run(config, shifted, key)
        tripped = np.flatnonzero(outs.telemetry.emergency_mode[at:at + 20])
        delay = int(tripped[0]) if tripped.size else None
        print(f"persistent 10-sigma level shift at step {at}: emergency after {delay} steps "
              f"(held {bool(outs.telemetry.observation_held[at])}, "
              f"confirmed {bool(outs.telemetry.input_filter.confirmed[at + 1])})")
    signed_detector_figures(config, key)


def _signed_alarms(config, series_values, key):
    """The signed detector's alarms (telemetry.page.alarm) of one predictor per row, vmapped."""
    values = np.asarray(series_values)
    state = jax.vmap(lambda _: fp.init(config, key))(np.arange(values.shape[0]))
    _, outs = jax.jit(jax.vmap(fp.predict, in_axes=(0, 0, None)))(state, values, key)
    return np.asarray(outs.telemetry.page.alarm), np.asarray(outs.telemetry.page.direction)


def signed_detector_figures(config, key, seeds=5, steps=4000, warmup=200, window=50):
    """Signed CUSUM inside the predictor: drift flips found (right direction, within ``window``), false alarms."""
    flips = [fp.synthetic.drift_flip(steps, seed) for seed in range(seeds)]
    alarms, directions = _signed_alarms(config, np.stack([f.values for f in flips]), key)
    detected = scored = false = 0
    for f, a, d in zip(flips, alarms, directions):
        covered = np.zeros(steps, bool)
        for cp in f.change_points:
            covered[cp:cp + window] = True
            if cp < warmup or cp + window > steps:
                continue
            scored += 1
            detected += bool(np.any(a[cp:cp + window] & (d[cp:cp + window] == f.regimes[cp])))
        false += int(np.sum(a[warmup:] & ~covered[warmup:]))
    print(f"signed CUSUM on drift_flip ({seeds} seeds x {steps} steps, flips of ±0.5σ, mean regime 256): "
          f"detected {detected}/{scored} = {detected / scored:.3f} within {window} steps, "
          f"false alarms {1000 * false / (seeds * (steps - warmup)):.3f} per 1000 steps")
    rng = np.random.default_rng(7)
    walks = np.cumsum(0.01 * rng.standard_normal((seeds, 10_000)), axis=1)
    null_alarms, _ = _signed_alarms(config, walks, key)
    print(f"signed CUSUM on 10 000 Gaussian steps without change, by seed: "
          f"{[int(n) for n in null_alarms.sum(axis=1)]} false alarms")


if __name__ == "__main__":
    main()
