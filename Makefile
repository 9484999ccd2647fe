# haowu — every target calls the `haowu` CLI inside .venv.
# On a plain machine, torch==2.13.0 from PyPI is a multi-GB CUDA build; take the CPU build with
#   make install PIP_EXTRA="--extra-index-url https://download.pytorch.org/whl/cpu"
PYTHON    ?= python3
VENV      ?= .venv
BIN       := $(VENV)/bin
PIP_EXTRA ?=
STAMP     := $(VENV)/.install-stamp
PRESET    ?= small
RUN_DIR   ?= runs/demo
PYTEST_ARGS ?=
PIPELINE_ARGS ?=

export MLFLOW_DISABLE_TELEMETRY := true

.PHONY: help install run test test-all bench lint clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: $(STAMP)  ## create .venv and install haowu with its test extras (re-runs when pyproject.toml changes)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_EXTRA) -e '.[test]'
	@touch $(STAMP)

run: install  ## the whole pipeline on synthetic `small` data (PRESET=tiny for seconds; PIPELINE_ARGS=--force reruns)
	$(BIN)/haowu pipeline --preset $(PRESET) --out $(RUN_DIR) $(PIPELINE_ARGS)

test: install  ## the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install  ## performance benchmarks on PRESET (default small)
	$(BIN)/haowu bench generate --preset $(PRESET)

lint: install  ## ruff
	$(BIN)/ruff check .

clean:  ## remove the venv, runs and the local MLflow store
	rm -rf $(VENV) runs mlflow.db mlartifacts .pytest_cache .ruff_cache
