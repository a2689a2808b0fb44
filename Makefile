# fbt: the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FBT_HOME ?= $(CURDIR)/.fbt
export FBT_HOME
STAMP := $(VENV)/.installed-stamp
# pip on some machines warns about every missing local index folder; keep the log readable
PIPQUIET := grep -v "is ignored: it is neither a file nor a directory" || true

.PHONY: install demo test test-fast ui bench clean-state

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "fbt needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing fbt and its dependencies into $(VENV) (first time: a few minutes)"
	@$(BIN)/python -m pip install -q --upgrade pip 2>&1 | $(PIPQUIET)
	@$(BIN)/python -m pip install -q -e '.[dev]' 2>&1 | $(PIPQUIET)
	@$(BIN)/python -c 'import fbt_pipelines.definitions' >/dev/null
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

bench: $(STAMP)
	@$(BIN)/python bench/bench_engine.py

## Remove local state (warehouse, MLflow, Dagster runs, sample data). Keeps .venv.
clean-state:
	rm -rf $(FBT_HOME)
