# searchlab: `make search` runs a search, `make serve` serves the model it found, `make test` runs the tests.
# Each sets up .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ARGS ?=
MODEL ?=
PYTEST_ARGS ?=

.PHONY: install search test lint ui server serve lock clean bench

install: $(STAMP)

# Re-installs when the dependencies change; pip reads exact versions from requirements.lock.
$(STAMP): pyproject.toml requirements.lock
	@command -v $(PYTHON) >/dev/null || { echo "searchlab needs $(PYTHON) (set PYTHON=/path/to/python3.11)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade "pip==26.3"
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test]"
	touch $(STAMP)

search: install
	$(BIN)/searchlab $(ARGS)

# Two test processes, each module's tests (and its module-scoped searches) in one of them: while one waits
# on a subprocess, a service or an import, the other trains (docs/results.md: two and three processes side by side).
test: install
	$(BIN)/python -m pytest -n 2 --dist loadscope $(PYTEST_ARGS)

# bench/ has no __init__.py: mypy names its scripts by file (compare, compare_budget, ...), so their
# imports of one another (`from compare_budget import ...`) resolve as they do when a script runs.
lint: install
	$(BIN)/ruff check searchlab tests bench examples
	$(BIN)/mypy searchlab bench

# searchlab against RandomizedSearchCV, KerasTuner Hyperband, HalvingRandomSearchCV and Optuna (hours; ARGS=--quick:
# minutes). Optuna comes from the `bench` extras, installed here only.
bench: install
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c requirements.lock -e ".[test,bench]"
	$(BIN)/python bench/compare.py $(ARGS)

ui: install
	$(BIN)/python -m searchlab.infra.ui $(ARGS)

# MLflow's model server on 127.0.0.1:5001 for MODEL (models:/<id>, models:/<name>@champion; default: the newest
# search's model in ./mlruns), from this venv without activating it. ARGS="--port 5002 --uri ...".
serve: install
	$(BIN)/python -m searchlab.infra.serve $(MODEL) $(ARGS)

# The team setup on this machine: PostgreSQL (Debian's postgresql) + `mlflow server` on 127.0.0.1:5000, data in
# mlruns/server/; searches use it with ARGS=tracking=server. ARGS="--port 5001 --workers 4"; Ctrl-C stops both.
server: install
	$(BIN)/python -m searchlab.infra.tracking_server $(ARGS)

# Refresh the pins after changing pyproject.toml's dependencies.
lock: install
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^pip==' > requirements.lock

clean:
	rm -rf $(VENV) *.egg-info
