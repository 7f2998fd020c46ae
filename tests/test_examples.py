"""Examples are run, not just shipped."""

import importlib.util
import pathlib

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_quickstart_runs(capsys):
    _load("quickstart").main(steps=120, n_assets=2)
    out = capsys.readouterr().out
    assert "one-step RMSE" in out and "last forecast per asset" in out


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_malliavin_example_runs(capsys):
    _load("malliavin_greeks").main()
    assert capsys.readouterr().out.strip()


def test_custom_kernel_tutorial_runs(capsys):
    _load("custom_kernel").main(steps=200, n_assets=2)
    out = capsys.readouterr().out
    assert "momentum drift (from its Info)" in out and "momentum_rate 0.20" in out
    assert "state bytes per asset" in out


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_custom_rule_tutorial_runs(capsys):
    _load("custom_rule").main(steps=200)
    out = capsys.readouterr().out
    assert "smooth_leader: MSE / random walk" in out and "no guards" in out
