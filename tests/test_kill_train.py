"""Training survives crashes, with real signals: SIGKILL one Ray Train worker mid-SFT and Ray Train restarts the
group from the last checkpoint; SIGKILL the driver mid-SFT and the next run resumes from it, not from step 0.
Either way the final model loads, the manifest says where training picked up and `metrics.jsonl` holds every
logged step once.

Runs on: CPU, 2 cores, ~3 minutes: `selfexplore stage sft` subprocesses (each with its own in-process Ray,
killed with its whole process group), the quick preset with a checkpoint every 10 of 30 steps, two workers.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers import AutoModelForCausalLM

from processes import session_processes  # tests/processes.py
from selfexplore.io import read_jsonl
from selfexplore.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLORE_QUIET": "1"}
SAVE_STEPS = 10
STEPS = 30


def stage(name: str, run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "selfexplore.cli", "stage", name, "configs/tiny.yaml", f"output_dir={run_dir.parent}", f"name={run_dir.name}", *overrides]
    return subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return output


def wait_for_checkpoint(process: subprocess.Popen, run_dir: Path) -> None:
    """Until Ray Train has registered a periodic checkpoint of the SFT run (its checkpoint manager's snapshot names
    one: a checkpoint directory alone may still be mid-report), and training goes on."""
    storage = RunDir(run_dir).train_storage("sft")
    deadline = time.time() + 600

    def registered() -> bool:
        snapshots = list(storage.glob("*/checkpoint_manager_snapshot.json"))
        return bool(snapshots) and json.loads(snapshots[0].read_text()).get("latest_checkpoint_result") is not None

    while not registered():
        assert process.poll() is None and time.time() < deadline, "training ended before a checkpoint was registered"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def base(tmp_path_factory, quick_overrides):
    run_dir = tmp_path_factory.mktemp("runs") / "train"
    # 30 steps: three checkpoints, and 20 steps left to kill training in after the first one.
    overrides = [*quick_overrides, f"sft.max_steps={STEPS}", f"sft.save_steps={SAVE_STEPS}", "sft.logging_steps=10"]
    finish(stage("base", run_dir, overrides))
    return run_dir, overrides


def sft_past_a_checkpoint(base: tuple[Path, list[str]], tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """`stage sft` on a copy of the base run, once it has registered a checkpoint."""
    base_dir, overrides = base
    run_dir = tmp_path / "train"
    shutil.copytree(base_dir, run_dir)
    process = stage("sft", run_dir, overrides)
    wait_for_checkpoint(process, run_dir)
    return process, run_dir


def check_resumed_model(run_dir: Path) -> dict:
    metrics = RunDir(run_dir).manifest("sft")["metrics"]
    assert metrics["steps"] == STEPS
    assert metrics["resumed_from_step"] >= SAVE_STEPS and metrics["resumed_from_step"] % SAVE_STEPS == 0
    AutoModelForCausalLM.from_pretrained(RunDir(run_dir).model_dir("sft"))
    # metrics.jsonl holds every logged step once: the restart dropped the steps logged after its checkpoint.
    assert [row["step"] for row in read_jsonl(RunDir(run_dir).train_logs("sft").metrics)] == [1, 10, 20, 30]
    return metrics


def test_a_killed_training_worker_restarts_from_the_last_checkpoint(base, tmp_path):
    process, run_dir = sft_past_a_checkpoint(base, tmp_path)
    workers = session_processes(process.pid, "RayTrainWorker")
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGKILL)
    output = finish(process)
    check_resumed_model(run_dir)
    assert not session_processes(process.pid, "RayTrainWorker"), "no training worker outlives its stage"
    assert "[sft] done" in output


def test_a_killed_driver_resumes_training_from_the_checkpoint(base, tmp_path):
    process, run_dir = sft_past_a_checkpoint(base, tmp_path)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert RunDir(run_dir).manifest("sft") is None  # never marked done

    _, overrides = base
    output = finish(stage("sft", run_dir, overrides))
    assert "resuming" in output
    check_resumed_model(run_dir)
