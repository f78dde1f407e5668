# Two commands to start: `make demo` (the embedded pipeline) and `make test` (the test suite).
# Both create .venv on first use. CPU machines get the CPU build of torch; on GPU machines set
# TORCH=torch==2.13.0 (CUDA build) or install into your own environment with `pip install -e .[dev]`.

PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0+cpu
BIN    := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test bench clean

install: $(VENV)/.installed

# Torch first and pinned: left to the resolver, an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: install
	$(BIN)/selfexplore run configs/tiny.yaml

test: install
	$(BIN)/python -m pytest -q tests

bench: install
	$(BIN)/python bench/grade.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf runs .pytest_cache
