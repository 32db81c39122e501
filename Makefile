# Two commands do everything on a fresh machine with Python 3.11+:
#   make run    set up .venv and run the watcher on the shipped watcher.toml, with a local receiver
#   make test   lint, type-check and run the whole test suite (with the MLflow version matrix)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pytest workers for the suites that wait on servers and daemons more than they compute: every
# worker starts its own MLflow server. PYTEST_JOBS=0 runs in one process (pdb, -x).
PYTEST_JOBS ?= 3
PYTEST := $(BIN)/pytest -q -n $(PYTEST_JOBS) --dist loadgroup --durations=25

.PHONY: run test lint verify-units unit e2e compat bench chaos screenshots dist constraints clean

# Every dependency at the version constraints.txt pins: the same set CI and the image get.
$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is needed: make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

# The receiver and the watcher share a signing secret made once per checkout.
.watcher/dev-secret:
	@mkdir -p .watcher && chmod 700 .watcher
	@$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@ && chmod 600 $@

run: $(STAMP) .watcher/dev-secret
	@test -f mlflow.db || $(BIN)/mlflow db upgrade sqlite:///mlflow.db >/dev/null 2>&1
	@WATCHER_WEBHOOK_SECRET="$$(cat .watcher/dev-secret)"; export WATCHER_WEBHOOK_SECRET; \
	$(BIN)/mlflow-watcher receive --port 8765 --secret-env WATCHER_WEBHOOK_SECRET & \
	receiver=$$!; trap 'kill $$receiver 2>/dev/null' EXIT INT TERM; \
	sleep 0.5; $(BIN)/mlflow-watcher run --config watcher.toml

# Style, types, and the module boundaries (the import contracts in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check watcher tests $(wildcard bench)
	$(BIN)/ruff format --check watcher tests $(wildcard bench)
	$(BIN)/mypy
	$(BIN)/lint-imports --no-logo

# systemd-analyze verify on every unit in systemd/ (skipped with a message where systemd is not
# installed, except in CI, where .ci/run installs it).
verify-units:
	@systemd/verify

# The slowest tests are listed at the end (--durations): the place to look when the suite grows.
test: lint verify-units
	$(PYTEST)

# Two workers: about a quarter faster than one on 2 cores; more only add start-up.
unit: $(STAMP)
	$(BIN)/pytest -q -n 2 -m 'not e2e'

e2e: $(STAMP)
	$(PYTEST) -m 'e2e and not compat'

# The MLflow version matrix (tests/compat): 2.9 and 2.22 servers from venvs built once under
# .compat-venvs/ (about a minute each on a cold cache), the project's MLflow 3 server, basic
# auth, the file store and direct databases. `make test` runs it too.
compat: $(STAMP)
	$(PYTEST) -m compat

# The benchmark of issue #5 (bench/README.md): 10k and 100k versions over 1,000 models against a
# real mlflow server, a table on stdout and bench/results.json. BENCH_SIZES="2000" for a quick look.
bench: $(STAMP)
	$(BIN)/python -m bench.run

# The README's pictures of the console (docs/img/console-*.png), from a real MLflow server,
# receiver and daemon, taken in headless Chromium.
screenshots: $(STAMP)
	$(BIN)/python -m tests.e2e.screenshots

# The sdist and the wheel in dist/, their metadata checked as an index would
# (tests/e2e/test_packaging.py installs the wheel into a fresh venv).
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Re-pins constraints.txt from a fresh venv of pyproject.toml's dependencies (their newest
# versions within its ranges), for the interpreter $(PYTHON) is: run it with Python 3.11.
constraints:
	rm -rf .constraints-venv
	$(PYTHON) -m venv .constraints-venv
	.constraints-venv/bin/pip install --quiet --upgrade pip
	.constraints-venv/bin/pip install --quiet '.[dev]'
	{ grep '^#' constraints.txt; .constraints-venv/bin/pip freeze --exclude mlflow-registry-watcher; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .constraints-venv

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .compat-venvs .hypothesis build dist \
		*.egg-info .constraints-venv .bench-venvs

# Issue #12's randomised run: three replicas on one PostgreSQL state (a private cluster in a
# temporary directory) under kills, pauses and cuts, against a real MLflow server and receiver;
# prints what it injected and what it checked. CHAOS_ARGS="--transitions 300 --seed 7" to vary.
chaos: $(STAMP)
	$(BIN)/python -m tests.e2e.chaos $(CHAOS_ARGS)
