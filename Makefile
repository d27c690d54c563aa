# The commands of the README: `make demo`, `make demo-train` and `make test`. Each builds .venv from nothing.
# `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TORCH_PIP_ARGS ?=

.PHONY: demo demo-train test lint install clean help

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU wheel of torch lies on disk on these machines; an unpinned torch would pull a CUDA build. Elsewhere,
	# on a CPU-only machine: make install TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
	$(PY) -m pip install -q torch==2.13.0 $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## build .venv (torch CPU wheel + stylex with the dev extras)

demo: $(STAMP) ## explain the shipped pepper-leaf classifier with the shipped pepper-64 model, no training -> runs/demo
	$(PY) -m stylex demo --out runs/demo

demo-train: $(STAMP) ## the whole chain from nothing: shapes -> classifier -> 5-min StylEx run -> report -> runs/demo-train
	$(PY) -m stylex demo --train --out runs/demo-train

test: $(STAMP) ## ruff, mypy + the whole test suite
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m mypy
	$(PY) -m pytest -q

lint: $(STAMP) ## ruff check and format check, then mypy on src/stylex
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m ruff format --check src tests benchmarks scripts
	$(PY) -m mypy

clean: ## remove .venv and runs/
	rm -rf $(VENV) runs

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:[^#]*## /\t/' | expand -t 14
