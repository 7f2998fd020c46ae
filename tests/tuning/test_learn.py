"""fp.tuning.learn: the reparametrisation, and ``fnpredict learn`` writing the tune JSON."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fnpredict as fp
from fnpredict import synthetic
from fnpredict.cli import main
from fnpredict.tuning.gradient import Reparametrisation, make_reparametrisations
from fnpredict.tuning.params import PARAMS_FORMAT, load_hyperparams, read_params

KINDS = [
    Reparametrisation("jko_tau", 0.05, 5.0, True),          # bounded, log scale
    Reparametrisation("rls_forgetting", 0.95, 0.9995, False),  # bounded
    Reparametrisation("rls_ridge", 0.0, math.inf, True, unit=2.0),   # half-line, log scale
    Reparametrisation("huber_delta_scale", 0.0, math.inf, False, unit=0.5),  # half-line, softplus
]


@pytest.mark.parametrize("reparam", KINDS, ids=lambda r: r.name)
def test_reparametrisation_is_a_bijection_into_the_box(reparam):
    for theta in (reparam.low + 1e-3 * (1.0 if not math.isfinite(reparam.high) else reparam.high - reparam.low),
                  0.97 if reparam.name == "rls_forgetting" else 1.0):
        # Round trip to 1e-10 relative: log/sigmoid and their inverses lose a few ulps each.
        np.testing.assert_allclose(float(reparam.forward(reparam.inverse(theta))), theta, rtol=1e-10, atol=0)
    # Any u, however large a step lands it, maps inside the box (and the open bound is not reached).
    for u in (-1e6, -40.0, 0.0, 40.0, 1e6):
        theta = float(reparam.forward(jnp.asarray(u)))
        assert reparam.low < theta <= reparam.high, (u, theta)
    # The derivative is the chain rule's (bounded linear case: (h - l) σ(u)(1 - σ(u))).
    if reparam.bounded and not reparam.log:
        u = 0.3
        sigma = 1.0 / (1.0 + math.exp(-u))
        np.testing.assert_allclose(float(jax.grad(reparam.forward)(u)),
                                   (reparam.high - reparam.low) * sigma * (1 - sigma), rtol=1e-12)


def test_space_is_checked_against_the_documented_ranges():
    start = {"cusum_h": 8.0, "rls_forgetting": 0.99, "jko_tau": 0.5}
    with pytest.raises(ValueError, match="threshold"):
        make_reparametrisations({"cusum_h": (1.0, 10.0, False)}, start)
    with pytest.raises(ValueError, match="documented range"):
        make_reparametrisations({"rls_forgetting": (0.9, 1.5, False)}, start)
    with pytest.raises(ValueError, match="log scale"):
        make_reparametrisations({"jko_tau": (0.0, 5.0, True)}, start)
    with pytest.raises(ValueError, match="outside its box"):
        make_reparametrisations({"jko_tau": (1.0, 5.0, True)}, start)


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_cli_learn_writes_the_tune_params_json(tmp_path, capsys):
    series = synthetic.ar2_increments(640, seed=3).values + 4.0
    csv = tmp_path / "series.csv"
    csv.write_text("date,close\n" + "\n".join(f"{i},{math.exp(v):.10f}" for i, v in enumerate(series)) + "\n")
    out = tmp_path / "learned.json"
    code = main(["learn", "--data", str(csv), "--kernels", "signature,persistence", "--buffer-size", "48",
                 "--steps", "3", "--windows", "2", "--params-out", str(out), "--json", "--no-cache"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    payload = json.loads(out.read_text())
    assert payload["format"] == PARAMS_FORMAT and payload["method"] == "learn"
    values = read_params(out)
    assert values == pytest.approx(summary["best_params"], rel=0, abs=0)
    # Every learned field inside its box (the default learn space) and the file loads as tune's does.
    space = fp.tuning.DEFAULT_LEARN_SPACE
    assert set(values) == set(space)
    for name, value in values.items():
        low, high, _ = space[name]
        assert low <= value <= high, (name, value)
    hyperparams = load_hyperparams(out)
    assert float(hyperparams.jko_tau) == values["jko_tau"]
    # Early stopping keeps the best validation seen, the defaults' included.
    assert summary["best_validation"] <= summary["initial_validation"]
    assert summary["n_steps"] <= 3 and math.isfinite(summary["best_value"])
