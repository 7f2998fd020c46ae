"""The ``fnpredict`` command end to end, on a short slice of the bundled data."""

import csv
import json
import subprocess
import sys

import pytest

from fnpredict import cli

SMALL = ["--kernels", "levy,signature", "--buffer-size", "64", "--no-cache"]


@pytest.fixture(scope="module")
def backtest_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("backtest")
    code = cli.main(["backtest", *SMALL, "--limit", "400", "--out", str(out), "--no-progress",
                     "--snapshot", str(out / "final.fnp")])
    assert code == 0
    return out


def test_backtest_writes_csv_png_and_snapshot(backtest_dir):
    with open(backtest_dir / "predictions.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 400
    for column in ("date", "obs", "prediction", "pred_levy", "pred_signature", "weight_levy",
                   "weight_signature", "holder_exponent", "cusum_drift", "kurtosis", "emergency_mode",
                   "regime_change_detected", "loss_type", "free_energy", "dgm_entropy",
                   "q_0.01", "q_0.05", "q_0.5", "q_0.95", "q_0.99", "intervals.raw_quantiles_0"):
        assert column in rows[0], column
    quantiles = [float(rows[200][f"q_{p}"]) for p in ("0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99")]
    assert quantiles == sorted(quantiles) and quantiles[0] < quantiles[-1]
    # --limit 400 keeps the last 400 rows of the bundled series, dates as labels.
    from fnpredict import data as fpdata

    labels = fpdata.load_sp500().labels
    assert [rows[0]["date"], rows[-1]["date"]] == [str(labels[-400]), str(labels[-1])]
    assert "status" in rows[0] and "kernels.levy.stability" in rows[0]  # nested infos are exported too
    png = (backtest_dir / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert (backtest_dir / "final.fnp").stat().st_size > 1000


def test_backtest_json_summary(tmp_path, capsys):
    code = cli.main(["backtest", *SMALL, "--limit", "300", "--out", str(tmp_path), "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    accuracy = summary["accuracy"]
    assert set(accuracy) == {"ensemble", "levy", "signature", "random_walk"}
    assert accuracy["random_walk"]["mae_ratio"] == pytest.approx(1.0)
    assert 0.5 < accuracy["ensemble"]["rmse_ratio"] < 1.5  # a sane forecaster of log prices
    assert summary["counts"]["steps"] == 300
    intervals = summary["intervals"]["forecasters"]
    assert set(intervals) == {"fnpredict", "uncalibrated_mixture", "rolling_gaussian_20", "rolling_gaussian_250"}
    ours = intervals["fnpredict"]
    assert set(ours["coverage"]) == {"0.01", "0.05", "0.25", "0.5", "0.75", "0.95", "0.99"}
    assert 0.0 <= ours["central"]["90"]["coverage"] <= 1.0 and ours["pinball"] > 0
    assert "exception_rate" in ours["var"]


def test_backtest_on_a_user_csv_with_gaps(tmp_path, capsys):
    path = tmp_path / "prices.csv"
    lines = ["day,price"] + [f"{i},{100 + i % 7 + (i // 7)}" for i in range(150)]
    lines[40] = "39,"  # a missing value
    path.write_text("\n".join(lines))
    code = cli.main(["backtest", *SMALL, "--data", str(path), "--column", "price", "--date-column", "day",
                     "--out", str(tmp_path / "o"), "--json", "--no-progress"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"]["missing_observations"] == 1


def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys):
    assert cli.main(["backtest", *SMALL, "--data", str(tmp_path / "missing.csv"), "--out", str(tmp_path)]) == 2
    assert "no such CSV" in capsys.readouterr().err
    assert cli.main(["backtest", "--kernels", "levy,wizard", "--no-cache", "--out", str(tmp_path)]) == 2
    assert "kernels" in capsys.readouterr().err


def test_stream_reads_stdin_and_writes_json_lines(tmp_path):
    values = [f"{4.0 + 0.01 * ((i * 7919) % 13 - 6):.4f}" for i in range(70)]
    values[30] = "nan"
    values[31] = "garbage"
    snapshot = tmp_path / "stream.fnp"
    process = subprocess.run(
        [sys.executable, "-m", "fnpredict", "stream", *SMALL, "--snapshot", str(snapshot), "--json"],
        input="\n".join(values) + "\n", capture_output=True, text=True, timeout=600,
    )
    assert process.returncode == 0, process.stderr
    records = [json.loads(line) for line in process.stdout.splitlines()]
    errors = [r for r in records if "input_error" in r]
    steps = [r for r in records if "prediction" in r]
    assert len(errors) == 1 and errors[0]["line"] == 32
    assert len(steps) == 69
    assert steps[30]["observation_missing"] is True
    assert all(isinstance(r["prediction"], float) for r in steps)
    assert records[-1]["summary"]["steps"] == 69
    assert snapshot.exists()
