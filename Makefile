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

.PHONY: help install run test bench lint clean

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

test: install  ## the layer contracts (import-linter), then the whole test suite
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

BENCH_DIR ?= runs/bench

bench: install  ## every benchmark on PRESET (default small); figures also in BENCH_DIR/*.json
	@mkdir -p $(BENCH_DIR)
	$(BIN)/haowu bench generate --preset $(PRESET)
	$(BIN)/haowu bench tier --preset $(PRESET)
	$(BIN)/haowu bench train --preset $(PRESET) --out $(BENCH_DIR)/train
	$(BIN)/haowu bench index --preset $(PRESET) --out $(BENCH_DIR)/index.json --diversity $(BENCH_DIR)/diversity
	$(BIN)/haowu bench batch --preset $(PRESET) --out $(BENCH_DIR)/batch.json
	$(BIN)/haowu bench brokers --preset $(PRESET)
	@test -f $(RUN_DIR)/.steps/_layout.json || $(MAKE) run
	$(BIN)/haowu bench serve --preset $(PRESET) --from $(RUN_DIR) --out $(BENCH_DIR)/serve.json

lint: install  ## ruff and the layer contracts
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:  ## remove the venv, runs and the local MLflow store
	rm -rf $(VENV) runs mlflow.db mlartifacts .pytest_cache .ruff_cache
