# fbt: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FBT_HOME ?= $(CURDIR)/.fbt
export FBT_HOME
STAMP := $(VENV)/.installed-stamp
INSTALL_LOG := $(FBT_HOME)/install.log

.PHONY: install demo test test-fast ui bench clean-state workers

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fbt needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@mkdir -p $(FBT_HOME)
	@echo "installing fbt and its dependencies into $(VENV) (first time: a few minutes; log: $(INSTALL_LOG))"
	@{ $(BIN)/python -m pip install --upgrade pip && $(BIN)/python -m pip install -e '.[dev]'; } > $(INSTALL_LOG) 2>&1 \
		|| { tail -n 40 $(INSTALL_LOG); echo "install failed: see $(INSTALL_LOG)"; exit 1; }
	@$(BIN)/python -c 'import fbt_pipelines.location.definitions' >/dev/null
	@touch $(STAMP)

install: $(STAMP)

## The whole asset graph on bundled sample data, through the Dagster instance in $(FBT_HOME)/dagster.
demo: $(STAMP)
	@$(BIN)/fbt demo

## The whole test suite (unit, integration against real Redis/DuckDB/MLflow, end-to-end).
test: $(STAMP)
	@mkdir -p $(FBT_HOME)/tmp
	TMPDIR=$(FBT_HOME)/tmp $(BIN)/python -m pytest -p no:cacheprovider --basetemp=$(FBT_HOME)/tmp/pytest $(PYTEST_ARGS)

## Everything but the slow end-to-end tests.
test-fast: PYTEST_ARGS := -m "not slow"
test-fast: test

## Dagster UI (:3000) and MLflow UI (:5000) on the local state.
ui: $(STAMP)
	@$(BIN)/fbt ui

## N Celery workers of this code location on this machine (logs, PIDs: $(FBT_HOME)/workers). Stop: fbt workers stop
workers: $(STAMP)
	@$(BIN)/fbt workers start -n $(or $(N),2)

bench: $(STAMP)
	@$(BIN)/python bench/bench_engine.py

## Remove local state (warehouse, MLflow, Dagster runs, sample data). Keeps .venv.
clean-state:
	rm -rf $(FBT_HOME)
