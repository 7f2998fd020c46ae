"""The evaluation lab: metrics against hand-computed values, the simplex solver
against brute force, one compiled program per config, the CLI's files."""

import csv
import itertools
import json

import jax
import numpy as np
import pytest

import fnpredict as fp
from fnpredict import cli
from fnpredict import evaluation as ev
from fnpredict.evaluation import metrics as ev_metrics

# Small configs: a 64-sample buffer, five CWT scales up to 10 (≤ 64/2), two
# cheap kernels; everything else default.
SMALL = fp.PredictorConfig(buffer_size=64, scales=(2.0, 3.0, 4.5, 6.75, 10.0), levy_window=48,
                           kernels=("persistence", "signature"))
STEPS = 300
WARMUP = 100


class CompileCounter:
    """Counts XLA backend compilations through jax.monitoring while active."""

    def __init__(self):
        self.count = 0
        self.active = False
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.active and event == "/jax/core/compile/backend_compile_duration":
            self.count += 1

    def __enter__(self):
        self.count = 0
        self.active = True
        return self

    def __exit__(self, *exc):
        self.active = False


COUNTER = CompileCounter()


# --- metrics on a tiny example, by hand ----------------------------------------

OBS = np.array([0.0, 1.0, 3.0, 2.0, 4.0, 5.0])
# Forecasts made at t of obs t+1; the last row forecasts a step never observed.
KERNELS = np.array([[0.5, 1.0], [1.0, 2.0], [3.5, 2.0], [2.0, 3.0], [4.0, 4.5], [5.0, 5.0]])
PREDICTION = np.array([0.7, 1.5, 2.5, 2.5, 4.2, 5.0])


def test_score_matches_hand_computation():
    out = ev.score(PREDICTION, KERNELS, OBS, ("a", "b"), warmup=1)
    # Scored steps t = 1..4, targets obs[2..5] = 3, 2, 4, 5; RW forecasts obs[1..4] = 1, 3, 2, 4.
    target = np.array([3.0, 2.0, 4.0, 5.0])
    rw = np.array([1.0, 3.0, 2.0, 4.0])
    ens = np.array([1.5, 2.5, 2.5, 4.2])
    a, b = np.array([1.0, 3.5, 2.0, 4.0]), np.array([2.0, 2.0, 3.0, 4.5])
    mse_rw = (4 + 1 + 4 + 1) / 4
    mse_ens = (1.5**2 + 0.5**2 + 1.5**2 + 0.8**2) / 4
    assert out["n_scored"] == 4
    # Exact arithmetic on a handful of doubles: a few ULP.
    np.testing.assert_allclose(out["rw_mse"], mse_rw, rtol=1e-14, atol=0)
    np.testing.assert_allclose(out["mse"], mse_ens, rtol=1e-14, atol=0)
    np.testing.assert_allclose(out["mse_ratio_rw"], mse_ens / mse_rw, rtol=1e-14, atol=0)
    np.testing.assert_allclose(out["mae_ratio_rw"], np.mean(np.abs(ens - target)) / np.mean(np.abs(rw - target)),
                               rtol=1e-14, atol=0)
    mse_a, mse_b = np.mean((a - target) ** 2), np.mean((b - target) ** 2)
    np.testing.assert_allclose(out["kernel_mse_ratio_rw/a"], mse_a / mse_rw, rtol=1e-14, atol=0)
    np.testing.assert_allclose(out["kernel_mse_ratio_rw/b"], mse_b / mse_rw, rtol=1e-14, atol=0)
    assert out["best_kernel"] == int(mse_b < mse_a)
    np.testing.assert_allclose(out["regret_best_kernel"], mse_ens - min(mse_a, mse_b), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(out["uniform_mse_ratio_rw"], np.mean(((a + b) / 2 - target) ** 2) / mse_rw,
                               rtol=1e-14, atol=0)
    # K = 2: the best convex weight on a is the clipped 1-D least-squares solution.
    d = a - b
    w = np.clip(np.dot(d, target - b) / np.dot(d, d), 0.0, 1.0)
    convex = np.mean((w * a + (1 - w) * b - target) ** 2)
    np.testing.assert_allclose(out["convex_weight/a"], w, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(out["convex_mse"], convex, rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(out["regret_ratio_convex"], mse_ens / convex, rtol=1e-10, atol=0)
    assert np.isnan(out["mse_ratio_oracle"])


def test_ewa_baseline_matches_a_loop():
    rng = np.random.default_rng(0)
    obs = np.cumsum(rng.standard_normal(40))
    P = obs[:, None] + rng.standard_normal((40, 3)) * np.array([0.1, 1.0, 3.0])
    warmup, eta = 10, ev_metrics.EWA_LEARNING_RATE
    scale = np.mean(np.diff(obs[: warmup + 1]) ** 2)
    cumulative = np.zeros(3)
    expected = np.zeros(40)
    for t in range(40):
        w = np.exp(-eta * (cumulative - cumulative.min()))
        expected[t] = np.dot(w / w.sum(), P[t])
        if t + 1 < 40:
            cumulative += (P[t] - obs[t + 1]) ** 2 / scale
    forecasts, _ = ev.ewa_forecasts(P, obs, warmup)
    np.testing.assert_allclose(forecasts, expected, rtol=1e-12, atol=1e-12)


def test_oracle_ratio_and_detection_stats():
    out = ev.score(PREDICTION, KERNELS, OBS, ("a", "b"), warmup=1, change_points=np.array([1, 3]),
                   alarms=np.array([0, 0, 1, 0, 1, 0], bool))
    # Changes at 1 and 3 each caught one step later; 1000 · 0 false alarms / 5 scored-period steps.
    assert (out["n_detected"], out["mean_delay"], out["n_false_alarms"]) == (2, 1.0, 0)
    assert out["detection_rate"] == 1.0 and out["false_alarms_per_1000"] == 0.0
    cm = np.array([np.nan, 1.5, 2.5, 2.5, 4.5, 5.5])  # oracle forecasts of obs 2..5: 2.5, 2.5, 4.5, 5.5
    out = ev.score(PREDICTION, KERNELS, OBS, ("a", "b"), warmup=1, conditional_mean=cm)
    oracle_mse = np.mean((np.array([2.5, 2.5, 4.5, 5.5]) - np.array([3.0, 2.0, 4.0, 5.0])) ** 2)
    np.testing.assert_allclose(out["mse_ratio_oracle"], out["mse"] / oracle_mse, rtol=1e-14, atol=0)
    # Changes at 100 and 300; alarms at 20 (false), 130 (detects 100, delay 30), 140 (explained,
    # not a second detection), 360 (60 after 300: false, so 300 is missed), 500 (false).
    alarms = np.zeros(1000, bool)
    alarms[[20, 130, 140, 360, 500]] = True
    stats = ev.detection_stats(alarms, np.array([100, 300]))
    assert stats == {"n_changes": 2, "n_detected": 1, "detection_rate": 0.5, "mean_delay": 30.0,
                     "n_false_alarms": 3}
    # Only the scored period counts: from step 50 the alarm at 20 is ignored.
    assert ev.detection_stats(alarms, np.array([100, 300]), start=50)["n_false_alarms"] == 2


# --- the simplex solver -----------------------------------------------------------

def test_convex_solver_matches_brute_force_grid_k3():
    rng = np.random.default_rng(3)
    T = 500
    truth = rng.standard_normal(T)
    # Three correlated forecasters with different biases and noise: the optimum is interior or on an edge.
    P = np.stack([truth + 0.3 + 0.5 * rng.standard_normal(T), truth - 0.2 + 0.8 * rng.standard_normal(T),
                  0.5 * truth + 0.4 * rng.standard_normal(T)], axis=1)
    for y in (truth, truth + 1.5, -truth):  # interior, a face, a vertex
        w, mse = ev.best_convex_weights(P, y)
        n = 200
        grid = np.array([(i / n, j / n, 1 - (i + j) / n) for i, j in itertools.product(range(n + 1), repeat=2)
                         if i + j <= n])
        values = np.mean((P @ grid.T - y[:, None]) ** 2, axis=0)
        best = values.argmin()
        # The exact optimum is at most the grid's best, and within the grid's resolution of it:
        # |Δw| ≤ 1/200 per coordinate, a quadratic with curvature ~ a few units → ΔMSE ≲ 4e-4.
        assert mse <= values[best] + 1e-12
        assert values[best] - mse < 4e-4
        np.testing.assert_allclose(w, grid[best], rtol=0, atol=3.0 / n)
        assert np.all(w >= 0) and abs(w.sum() - 1) < 1e-12
        w_gradient, mse_gradient = ev.best_convex_weights(P, y, method="gradient")
        # FISTA after 5000 iterations on a 3-D QP: converged to round-off in the objective.
        np.testing.assert_allclose(mse_gradient, mse, rtol=1e-9, atol=0)


def test_reference_shift_leaves_the_minimiser_unchanged():
    rng = np.random.default_rng(4)
    level = np.cumsum(rng.standard_normal(300)) + 100.0
    y = level + rng.standard_normal(300)
    P = level[:, None] + rng.standard_normal((300, 3)) * np.array([0.5, 1.0, 2.0])
    w_plain, mse_plain = ev.best_convex_weights(P, y)
    w_shift, mse_shift = ev.best_convex_weights(P, y, reference=level)
    # Same problem, better conditioned: agreement to ~1e-8 (levels of 100 squared in the plain Gram matrix).
    np.testing.assert_allclose(w_shift, w_plain, rtol=0, atol=1e-6)
    np.testing.assert_allclose(mse_shift, mse_plain, rtol=1e-8, atol=0)


def test_project_to_simplex():
    np.testing.assert_allclose(ev.project_to_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5], atol=1e-15)
    np.testing.assert_allclose(ev.project_to_simplex(np.array([2.0, 0.0, -1.0])), [1.0, 0.0, 0.0], atol=1e-15)
    np.testing.assert_allclose(ev.project_to_simplex(np.array([1.0, 1.0])), [0.5, 0.5], atol=1e-15)


# --- the runner: one compiled program per config --------------------------------

@pytest.fixture(scope="module")
def lab_run():
    variants = [ev.Variant("jko", SMALL), ev.Variant("jko-tau2", SMALL, fp.Hyperparams(jko_tau=2.0)),
                ev.Variant("ewa", SMALL.replace(rule="ewa"))]
    series = ev.synthetic_family("drift_flip", 2, STEPS)
    key = jax.random.key(0)
    with COUNTER:
        runs, _ = ev.run_variants(variants, series, key, progress=False)
    return variants, series, runs, COUNTER.count


def test_variants_sharing_a_config_compile_once(lab_run):
    variants, series, runs, compiles = lab_run
    assert len(ev.group_by_config(variants)) == 2
    # Two configs (jko twice with different hyperparameters, ewa), two series: two programs.
    assert compiles == 2
    # The hyperparameters did reach their lane.
    assert not np.allclose(runs[("jko", series[0].name)].prediction, runs[("jko-tau2", series[0].name)].prediction)


def test_population_lane_equals_a_single_predict(lab_run):
    variants, series, runs, _ = lab_run
    state = fp.init(SMALL, None, fp.Hyperparams(jko_tau=2.0))
    _, out = fp.predict(state, series[1].values, jax.random.key(0))
    # vmap may reorder floating-point reductions: agreement to ~1e3 ULP of the levels (~0.1).
    np.testing.assert_allclose(runs[("jko-tau2", series[1].name)].prediction, np.asarray(out.prediction),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_array_equal(runs[("jko-tau2", series[1].name)].regime_change_detected,
                                  np.asarray(out.telemetry.regime_change_detected))


def test_evaluate_rows_and_family_means(lab_run):
    variants, series, runs, _ = lab_run
    # Score the cached runs through the lab's own code path (evaluate re-runs; here only scoring).
    rows = []
    for v in variants:
        for s in series:
            r = runs[(v.label, s.name)]
            m = ev.score(r.prediction, r.kernel_predictions, s.values, SMALL.kernel_names, WARMUP,
                         s.conditional_mean, s.change_points, r.regime_change_detected)
            m.pop("best_kernel")
            rows.append({"variant": v.label, "series": s.name, "family": s.family, "rule": "", "kernels": "",
                         "guards": "", **m})
    means = ev.family_means(rows)
    assert len(means) == 3 and {m["series"] for m in means} == {"drift_flip/mean"}
    jko = [r for r in rows if r["variant"] == "jko"]
    mean = next(m for m in means if m["variant"] == "jko")
    np.testing.assert_allclose(mean["mse_ratio_rw"], np.mean([r["mse_ratio_rw"] for r in jko]), rtol=1e-14, atol=0)
    assert mean["n_changes"] == sum(r["n_changes"] for r in jko)
    # The persistence kernel is the random walk: its ratio is 1 exactly.
    assert all(r["kernel_mse_ratio_rw/persistence"] == 1.0 for r in rows)


# --- the CLI ------------------------------------------------------------------------

def test_cli_evaluate_writes_csv_json_png(tmp_path, capsys):
    code = cli.main(["evaluate", "--synthetic", "drift_flip", "--seeds", "2", "--steps", str(STEPS),
                     "--warmup", str(WARMUP), "--variants", "ewa", "--kernels", "persistence,signature",
                     "--buffer-size", "64", "--out", str(tmp_path), "--no-cache", "--no-progress", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    with open(tmp_path / "evaluation.csv") as handle:
        rows = list(csv.DictReader(handle))
    # One variant (one compilation keeps the file fast) × 2 seeds, plus the family mean.
    assert len(rows) == 3
    assert {r["series"] for r in rows} == {"drift_flip/seed0", "drift_flip/seed1", "drift_flip/mean"}
    for column in ("mse_ratio_rw", "mae_ratio_rw", "regret_ratio_convex", "ewa_mse_ratio_rw", "mse_ratio_oracle",
                   "detection_rate", "false_alarms_per_1000", "kernel_mse_ratio_rw/signature"):
        assert column in rows[0], column
        assert rows[0][column] != "" or column == "detection_rate"
    payload = json.loads((tmp_path / "evaluation.json").read_text())
    assert len(payload["rows"]) == 2 and len(payload["family_means"]) == 1
    assert [v["label"] for v in payload["variants"]] == ["ewa"]
    assert payload["variants"][0]["config"]["rule"] == "ewa" and payload["warmup"] == WARMUP
    assert len(summary["rows"]) == 1 and summary["rows"][0]["series"] == "drift_flip/mean"
    png = (tmp_path / "evaluation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_bad_tick_copies_are_scored_against_the_clean_values():
    clean = ev.synthetic_family("ou", 1, 1000)[0]
    ticky = ev.with_bad_ticks(clean, ticks=5, seed=3)
    assert ticky.name == "ou/seed0+ticks" and ticky.family == "ou+ticks"
    changed = np.flatnonzero(ticky.values != clean.values)
    assert changed.size == 5 and np.all(changed >= 300)
    sigma = np.std(np.diff(clean.values))
    sizes = np.abs(ticky.values[changed] - clean.values[changed]) / sigma
    assert np.all((sizes >= 15.0) & (sizes <= 60.0))
    np.testing.assert_array_equal(ticky.truth, clean.values)
    # The random walk repeats the glitch; scoring against the truth charges it.
    prediction = np.asarray(clean.values, float)  # "forecast = the clean last value"
    kernels = prediction[:, None]
    against_truth = ev.score(prediction, kernels, ticky.values, ("k",), 200, truth=ticky.truth)
    against_obs = ev.score(prediction, kernels, ticky.values, ("k",), 200)
    rw = ticky.values[200:-1]
    assert against_truth["rw_mse"] == pytest.approx(np.mean((rw - clean.values[201:]) ** 2))
    assert against_truth["mse"] == pytest.approx(np.mean((clean.values[200:-1] - clean.values[201:]) ** 2))
    assert against_truth["mse_ratio_rw"] < min(0.5, against_obs["mse_ratio_rw"])
