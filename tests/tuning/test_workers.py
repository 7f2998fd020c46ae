"""Several ``fnpredict tune`` processes on one Optuna storage: a journal file
(here) and a PostgreSQL server (``make test-integration``). A worker killed
mid-trial must leave the study usable: its trials end failed (and are retried),
never RUNNING forever. The best parameters go through a JSON file into
``backtest --params``."""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import optuna
import pytest

TRIALS = 8
HEARTBEAT = 1  # seconds; a trial silent for 3 s is stale


def _env():
    env = dict(os.environ)
    env.setdefault("FNPREDICT_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "fnpredict-test-cache"))
    return env


def _worker(storage, study, *extra, trials=TRIALS):
    cmd = [sys.executable, "-m", "fnpredict", "tune", "--kernels", "levy,signature", "--buffer-size", "48",
           "--limit", "500", "--windows", "2", "--trials", str(trials), "--batch", "4", "--storage", storage,
           "--study", study, "--heartbeat", str(HEARTBEAT), "--json", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())


def _finish(process, timeout=600):
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def _study(storage, name):
    from fnpredict.tuning.search import make_storage

    return optuna.load_study(study_name=name, storage=make_storage(storage))


def check_two_workers(storage, tmp_path):
    params = tmp_path / "best.json"
    first = _worker(storage, "pair", "--params-out", str(params))
    second = _worker(storage, "pair")
    results = [_finish(first), _finish(second)]
    trials = _study(storage, "pair").get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    numbers = [t.number for t in complete]
    print(f"\n{storage}: {len(complete)} complete trials, numbers {sorted(numbers)}")
    assert len(complete) == 2 * TRIALS and len(set(numbers)) == 2 * TRIALS
    assert not [t for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    # Each worker's own view is a consistent snapshot of the shared study.
    assert results[0]["objective"] == "mean walk-forward MSE ratio to the random walk"
    written = json.loads(params.read_text())
    assert written["hyperparams"] == results[0]["best_params"]
    return params


def check_killed_worker(storage, study="killed"):
    victim = _worker(storage, study)
    deadline = time.monotonic() + 300
    running = []
    while time.monotonic() < deadline and not running:
        time.sleep(0.5)
        try:
            trials = _study(storage, study).get_trials(deepcopy=False)
        except KeyError:  # the study is not created yet
            continue
        running = [t.number for t in trials if t.state == optuna.trial.TrialState.RUNNING]
    assert running, "the victim never started a trial"
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    time.sleep(3 * HEARTBEAT + 1)  # let the victim's heartbeat go stale
    survivor = _finish(_worker(storage, study))
    trials = {t.number: t for t in _study(storage, study).get_trials(deepcopy=False)}
    states = {n: trials[n].state.name for n in running}
    retried = {t.system_attrs.get("failed_trial"): t.state.name for t in trials.values()
               if t.system_attrs.get("failed_trial") is not None}
    print(f"\n{storage}: killed mid-trial(s) {running} -> {states}; retries {retried}; "
          f"survivor failed {survivor['failed_stale']}")
    assert all(trials[n].state == optuna.trial.TrialState.FAIL for n in running)
    assert all(retried.get(n) == "COMPLETE" for n in running)
    assert not [t for t in trials.values() if t.state == optuna.trial.TrialState.RUNNING]
    mine = [t for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(mine) >= TRIALS


@pytest.mark.integration  # minutes of end-to-end run: the integration leg
def test_two_workers_share_a_journal_file(tmp_path):
    params = check_two_workers(str(tmp_path / "study.log"), tmp_path)
    # The tuned parameters are what backtest --params runs with.
    out = tmp_path / "bt"
    process = subprocess.run(
        [sys.executable, "-m", "fnpredict", "backtest", "--kernels", "levy,signature", "--buffer-size", "48",
         "--limit", "200", "--out", str(out), "--no-progress", "--json", "--params", str(params)],
        capture_output=True, text=True, env=_env(), timeout=600)
    assert process.returncode == 0, process.stderr[-2000:]
    used = json.loads(process.stdout)["hyperparams"]
    for name, value in json.loads(params.read_text())["hyperparams"].items():
        assert used[name] == pytest.approx(value, rel=1e-12)


def test_killed_worker_leaves_the_journal_study_usable(tmp_path):
    check_killed_worker(str(tmp_path / "study.log"))


def test_params_file_is_validated(tmp_path):
    from fnpredict.tuning.params import read_params, write_params

    path = tmp_path / "p.json"
    write_params(path, {"jko_tau": 0.5})
    assert read_params(path) == {"jko_tau": 0.5}
    path.write_text(json.dumps({"hyperparams": {"learning_rate": 1.0}}))
    with pytest.raises(ValueError, match="unknown hyperparameter"):
        read_params(path)
    path.write_text(json.dumps({"jko_tau": -1.0}))
    with pytest.raises(ValueError, match="jko_tau"):
        read_params(path)


# -- PostgreSQL (make test-integration) ------------------------------------------------------------------------------
def _pg_bin(name):
    for folder in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") \
            else []:
        path = os.path.join("/usr/lib/postgresql", folder, "bin", name)
        if os.path.exists(path):
            return path
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} not found: install postgresql (make test-integration does)")
    return found


@pytest.fixture(scope="module")
def postgres_url():
    """A throw-away PostgreSQL server on 127.0.0.1, started and stopped here."""
    as_root = os.geteuid() == 0
    folder = tempfile.mkdtemp(prefix="fnpredict-pg-")
    data, sockets = os.path.join(folder, "data"), os.path.join(folder, "run")
    os.makedirs(sockets)
    prefix = []
    if as_root:  # initdb refuses root: run the server as the postgres user
        user = pwd.getpwnam("postgres")
        for path in (folder, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    port = _free_port()
    subprocess.run([*prefix, _pg_bin("initdb"), "-D", data, "-A", "trust", "-U", "fnpredict"], check=True,
                   capture_output=True, timeout=120)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off"
    subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", data, "-o", options, "-w", "-t", "60", "-l",
                    os.path.join(folder, "log"), "start"], check=True, capture_output=True, timeout=120)
    try:
        subprocess.run([*prefix, _pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "fnpredict",
                        "optuna"], check=True, capture_output=True, timeout=60)
        yield f"postgresql+psycopg2://fnpredict@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run([*prefix, _pg_bin("pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], capture_output=True,
                       timeout=120)
        shutil.rmtree(folder, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.integration
def test_two_workers_share_a_postgres_study(postgres_url, tmp_path):
    check_two_workers(postgres_url, tmp_path)


@pytest.mark.integration
def test_killed_worker_leaves_the_postgres_study_usable(postgres_url):
    check_killed_worker(postgres_url)


_OPEN_STORAGE = """
import sys, time
from fnpredict.tuning.search import make_storage
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every racer opens at the same instant
make_storage(sys.argv[1])
"""


@pytest.mark.integration
def test_concurrent_first_starts_share_one_schema(postgres_url):
    """Workers started together on an empty database race on Optuna's schema
    creation (CI saw ``relation "studies" already exists``); every one opens."""
    base, _, _ = postgres_url.rpartition("/")
    host, port = base.rsplit("@", 1)[1].split(":")
    for round_ in range(3):
        name = f"race{round_}"
        subprocess.run(["psql" if shutil.which("psql") else _pg_bin("psql"), "-h", host, "-p", port, "-U",
                        "fnpredict", "-d", "optuna", "-c", f"CREATE DATABASE {name}"], check=True,
                       capture_output=True, timeout=60)
        start = time.time() + 4.0
        racers = [subprocess.Popen([sys.executable, "-c", _OPEN_STORAGE, f"{base}/{name}", str(start)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
                  for _ in range(6)]
        for racer in racers:
            _, err = racer.communicate(timeout=120)
            assert racer.returncode == 0, err[-3000:]
