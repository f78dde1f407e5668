"""Training survives crashes, with real signals, in one SFT run: SIGKILL the driver mid-SFT and the next run
resumes from its last checkpoint, not from step 0; then SIGKILL one Ray Train worker and Ray Train restarts the
group from the checkpoint after that, and the stage finishes. The final model loads, the manifest says where
training last picked up and `metrics.jsonl` holds every logged step once.

Runs on: CPU, 2 cores, ~2 minutes: `selfexplore stage sft` subprocesses (each with its own in-process Ray,
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


def latest_checkpoint(run_dir: Path) -> tuple[str, int] | None:
    """The checkpoint Ray Train has registered last for the SFT run (directory name, training step): its checkpoint
    manager's snapshot names it (a checkpoint directory alone may still be mid-report)."""
    snapshots = list(RunDir(run_dir).train_storage("sft").glob("*/checkpoint_manager_snapshot.json"))
    latest = json.loads(snapshots[0].read_text()).get("latest_checkpoint_result") if snapshots else None
    return (latest["checkpoint_dir_name"], latest["metrics"]["step"]) if latest else None


def next_checkpoint(process: subprocess.Popen, run_dir: Path) -> int:
    """The step of the next checkpoint Ray Train registers (training goes on); so a run that restarted from a
    checkpoint must name the step after it, and one that restarted from step 0 the first step again."""
    before = latest_checkpoint(run_dir)
    deadline = time.time() + 600
    while (latest := latest_checkpoint(run_dir)) is None or latest == before:
        assert process.poll() is None and time.time() < deadline, "training ended before a checkpoint was registered"
        time.sleep(0.2)
    return latest[1]


@pytest.fixture(scope="module")
def base(tmp_path_factory, quick_overrides):
    run_dir = tmp_path_factory.mktemp("runs") / "train"
    # 30 steps: three checkpoints, and 10 steps after each of the first two to kill training in.
    overrides = [*quick_overrides, f"sft.max_steps={STEPS}", f"sft.save_steps={SAVE_STEPS}", "sft.logging_steps=10"]
    finish(stage("base", run_dir, overrides))
    return run_dir, overrides


def test_a_killed_driver_then_a_killed_worker_each_resume_from_the_last_checkpoint(base, tmp_path):
    base_dir, overrides = base
    run_dir = tmp_path / "train"
    shutil.copytree(base_dir, run_dir)

    # The driver, with its whole process group, once the first checkpoint is registered.
    process = stage("sft", run_dir, overrides)
    assert next_checkpoint(process, run_dir) == SAVE_STEPS
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert RunDir(run_dir).manifest("sft") is None  # never marked done

    # The next run picks up there: its first checkpoint is the one after it.
    process = stage("sft", run_dir, overrides)
    assert next_checkpoint(process, run_dir) == 2 * SAVE_STEPS
    # Then one training worker: Ray Train restarts the group from that checkpoint, within the same run.
    workers = session_processes(process.pid, "RayTrainWorker")
    assert len(workers) == 2
    workers[-1].send_signal(signal.SIGKILL)
    output = finish(process)
    assert "resuming" in output and "[sft] done" in output
    assert not session_processes(process.pid, "RayTrainWorker"), "no training worker outlives its stage"

    metrics = RunDir(run_dir).manifest("sft")["metrics"]
    assert (metrics["steps"], metrics["resumed_from_step"]) == (STEPS, 2 * SAVE_STEPS)  # the worker restart's
    AutoModelForCausalLM.from_pretrained(RunDir(run_dir).model_dir("sft"))
    # metrics.jsonl holds every logged step once: each restart dropped the steps logged after its checkpoint.
    assert [row["step"] for row in read_jsonl(RunDir(run_dir).train_logs("sft").metrics)] == [1, 10, 20, 30]
