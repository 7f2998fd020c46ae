"""Examples are run, not just shipped."""

import importlib.util
import pathlib

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_runs(capsys):
    _load("quickstart").main(steps=120, n_assets=2)
    out = capsys.readouterr().out
    assert "one-step RMSE" in out and "last forecast per asset" in out


def test_malliavin_example_runs(capsys):
    _load("malliavin_greeks").main()
    assert capsys.readouterr().out.strip()
