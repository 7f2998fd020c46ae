# The two commands of the README. Both create .venv when it is missing,
# install the exact pins and the package, then run.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# python3.12 on PATH if it runs (a pyenv shim may exist without running), else pyenv's 3.12.
PYTHON312 ?= $(shell for p in python3.12 $$HOME/.pyenv/versions/3.12*/bin/python3.12; do \
  "$$p" -c "import sys" >/dev/null 2>&1 && { echo "$$p"; break; }; done)
VENV312 := .venv312
PY312 := $(VENV312)/bin/python
STAMP312 := $(VENV312)/.installed
# Each integration run is bounded (servers, subprocess fleets and the minutes-long end-to-end tests:
# measured 9 min in CI before those moved here; hard kill at 35), and the servers the tests start are
# stopped by the tests.
INTEGRATION_TIMEOUT ?= 2100
# Two pytest workers (one per core of the CI machine); a test file stays on one worker, so its
# module-scoped fixtures (and servers) start once. The integration leg prints each passed test's
# figures in its summary (-rP), since workers do not stream them.
PYTEST_WORKERS ?= -n 2 --dist loadfile

.PHONY: demo test test-integration test-py312 print-python312 docs bench clean integration-deps

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "make: $(PYTHON) not found (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/fnpredict backtest --out out/demo

# No root, no servers: the integration tests are deselected here.
test: $(STAMP)
	$(VENV)/bin/ruff check fnpredict tests benchmarks examples scripts
	$(PY) -m pytest -q $(PYTEST_WORKERS) tests -m "not integration"
	$(PY) scripts/gen_api_docs.py --check
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet --site-dir $(VENV)/site

docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

# Real servers on 127.0.0.1 only (PostgreSQL, Prometheus), started and stopped by
# the tests; installs Debian's prometheus (and postgresql) when missing, and fails
# loudly when it cannot.
integration-deps:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "make: installing Debian's prometheus"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null) \
	  || { echo "make test-integration: prometheus is missing and apt-get could not install it (need root)"; exit 1; }; }
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
	  echo "make: installing Debian's postgresql"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || { echo "make test-integration: PostgreSQL is missing and apt-get could not install it (need root)"; exit 1; }; }

test-integration: $(STAMP) integration-deps
	timeout --kill-after=30 $(INTEGRATION_TIMEOUT) $(PY) -m pytest -q $(PYTEST_WORKERS) -rP tests -m integration

$(PY312):
	@test -n "$(PYTHON312)" || { echo "make: no runnable python3.12 found (set PYTHON312=...)"; exit 1; }
	$(PYTHON312) -m venv $(VENV312)

$(STAMP312): $(PY312) requirements-py312.txt pyproject.toml
	$(PY312) -m pip install --quiet --upgrade pip
	$(PY312) -m pip install --quiet -r requirements-py312.txt
	$(PY312) -m pip install --quiet --no-deps -e .
	touch $(STAMP312)

print-python312:
	@echo "$(PYTHON312)"

# The newest-JAX leg: the marked subset (canary, parity, oracles) on requirements-py312.txt.
test-py312: $(STAMP312)
	$(PY312) -c "import jax; print('newest-JAX leg: jax', jax.__version__)"
	$(PY312) -m pytest -q $(PYTEST_WORKERS) tests -m "newest_jax and not integration"

bench: $(STAMP)
	$(PY) benchmarks/bench_step.py

clean:
	rm -rf $(VENV) $(VENV312) out site .pytest_cache
