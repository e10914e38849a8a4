# The two ways in: `make demo` runs the collector on embedded ClickHouse plus a demo app;
# `make test` runs ruff and the test suite. Both build .venv from scratch when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# torch is pinned first so that pip takes the CPU build; a CUDA user installs their own torch.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[collector,presidio,dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check sdk collector tests bench dashboards
	$(BIN)/ruff format --check sdk collector tests bench dashboards

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/veil demo

clean:
	rm -rf $(VENV) .veil .pytest_cache .ruff_cache
