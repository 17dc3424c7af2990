# kdcli: `make run` and `make test` work on a fresh machine (they create .venv and install).
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kdcli-installed
# pip's notes about local package indexes that lack a package are noise here
QUIET_PIP := { grep -v "^WARNING: Location" || true; }

.PHONY: help setup run test test-fast lint format bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install kdcli (editable) with the test tools

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e ".[dev]" 2>&1 | $(QUIET_PIP)
	$(PY) -c "import kdcli, torch, torchvision, hydra"
	touch $(STAMP)

run: setup ## run `kd train` on the embedded default (digits, resnet8x4 -> smallcnn)
	$(VENV)/bin/kd train

test: setup ## run the whole test suite (two workers: the end-to-end tests are mostly process start-up)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2

test-fast: setup ## the unit tests: everything but the end-to-end (e2e) and slow ones, under a minute
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 -m "not e2e and not slow"

lint: setup ## ruff check and format check, then mypy on kdcli/ (pyproject.toml's [tool.mypy])
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup ## apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup ## the benchmarks in scripts/ (they print ratios measured in one run)
	for script in scripts/bench_*.py; do $(PY) $$script; done

clean: ## remove build outputs and caches (not .venv, not outputs/)
	rm -rf build dist .pytest_cache .ruff_cache .mypy_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
