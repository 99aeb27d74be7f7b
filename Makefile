# drbfr developer tasks. `make install` creates .venv with everything; `make test` runs the suite.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint format bench gpu-check clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade uv

install: $(BIN)/python
	$(BIN)/uv pip install --compile-bytecode --python $(BIN)/python -e ".[test,bench,identity,ray]"

# The demo takes weights and real photos from ../shared (or $DRBFR_SHARED) when it is there;
# otherwise weights come from the registry cache (downloaded once) and only the astronaut is shown.
SHARED ?= $(or $(DRBFR_SHARED),../shared)
DEMO_ARGS := $(if $(wildcard $(SHARED)/weights),--weights-dir $(SHARED)/weights) \
	$(if $(wildcard $(SHARED)/data/real_lq),--extra $(SHARED)/data/real_lq)

demo: install
	rm -rf out/demo
	$(BIN)/drbfr demo -o out/demo $(DEMO_ARGS)

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python -m bench.harness.suite

# The prepared check for a lent GPU (8 minutes): one JSON line per result in $(OUT)/gpu_check.jsonl.
OUT ?= out/gpu-check
gpu-check: install
	$(BIN)/python bench/gpu-check --out $(OUT)

clean:
	rm -rf $(VENV) build dist .pytest_cache .ruff_cache
