# facenas: `make demo` runs the main job on embedded defaults, `make test` runs every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.facenas-installed

.PHONY: setup test lint typecheck unit demo bench clean protos

setup: $(STAMP)

# torch is pinned to the CPU wheel 2.13.0; archai 1.0.0 goes in without its heavy dependency tree
# (ray, tensorboard): pyproject.toml lists the few packages its config search space needs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps archai==1.0.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

# Generated code is committed; tests/unit/test_protos.py fails when it drifts from protos/.
protos: setup
	$(BIN)/python -m facenas.protogen

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q

test: lint typecheck unit

demo: setup
	$(BIN)/facenas demo

bench: setup
	$(BIN)/python bench/latency_stability.py

clean:
	rm -rf runs .pytest_cache .mypy_cache .ruff_cache
