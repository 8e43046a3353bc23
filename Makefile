# Entry points for a fresh Debian machine (as root): `make run`, `make test`.
PY ?= python3
CONFIG ?= sip_profiles/default.toml
VENV ?= .venv
BENCH_ARGS ?=

BIN := $(VENV)/bin
SETUP := PY=$(PY) VENV=$(abspath $(VENV)) bash scripts/setup.sh
LINT_PATHS := cms softphone scripts tests

.PHONY: all setup setup-bench run test lint typecheck bench clean distclean

all: test

setup:
	$(SETUP)

setup-bench:
	$(SETUP) --bench

run: setup
	CONFIG=$(CONFIG) bash scripts/run.sh

test: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy cms/sip
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)

typecheck: setup
	$(BIN)/mypy cms/sip

bench: setup-bench
	$(BIN)/python -m scripts.bench $(BENCH_ARGS)

# Caches and build leftovers; keeps .venv and the data in var/.
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also the virtualenv and the CMS data directory.
distclean: clean
	rm -rf $(VENV) var
