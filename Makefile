# clirkit: `make demo` (install + embedded demo experiment), `make test` (install + test suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch is pinned in the same pip command as everything else: unpinned, pip would pull a
# multi-GB CUDA build; 2.13.0 is the CPU wheel this machine has.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0 -e ".[dev]"
	touch $(STAMP)

# The demo prints its run directory as stdout's last line; its scores must match the pinned ones.
demo: SHELL := /bin/bash
demo: .SHELLFLAGS := -eo pipefail -c
demo: setup
	out=$$(mktemp); trap 'rm -f "$$out"' EXIT; \
	$(BIN)/clirkit run experiments/demo.toml | tee "$$out"; \
	$(BIN)/clirkit check-expected "$$(tail -n 1 "$$out")" experiments/expected/demo.json

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check clirkit tests bench

# every bench script rewrites its own section of bench/results.md (bench/_results.py)
bench: setup
	$(BIN)/python bench/bench_encode.py
	$(BIN)/python bench/bench_startup.py
	$(BIN)/python bench/bench_ot.py
	$(BIN)/python bench/bench_perturb.py
	$(BIN)/python bench/bench_attack.py
	$(BIN)/python bench/bench_maxsim.py
	$(BIN)/python bench/bench_prepare_mmarco.py

clean:
	rm -rf $(VENV) experiments/runs experiments/cache
