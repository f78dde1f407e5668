"""Crash safety with real signals: SIGKILL the driver in the middle of `sample`, run it again, and the result is
what an uninterrupted run writes — every problem once, the same samples, byte-identical RFT set and pairs.

Runs on: CPU, 2 cores, ~3 minutes: `selfexplore stage` subprocesses (each with its own in-process Ray, killed
with its whole process group), the quick preset, the `hf` engine.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfexplore.rollout import iter_results
from selfexplore.run_dir import OUTCOME_PAIRS, RFT_SET, SAMPLES, RunDir

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLORE_QUIET": "1"}


def stage(name: str, run_dir: Path, overrides: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "selfexplore.cli", "stage", name, "configs/tiny.yaml", f"output_dir={run_dir.parent}", f"name={run_dir.name}", *overrides]
    return subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return output


def samples(run_dir: Path) -> tuple[dict, int]:
    records = list(iter_results(RunDir(run_dir).path(SAMPLES)))
    return {r["id"]: r["samples"] for r in records}, len(records)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, quick_overrides):
    """A run with its base and SFT models, and the overrides that made it (8 problems per sample batch)."""
    run_dir = tmp_path_factory.mktemp("runs") / "kill"
    overrides = [*quick_overrides, "engine.rows_per_batch=8"]
    for name in ("base", "sft"):
        finish(stage(name, run_dir, overrides))
    return run_dir, overrides


def test_sample_killed_mid_stage_resumes_to_the_uninterrupted_result(trained, tmp_path):
    run_dir, overrides = trained
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for copy in (whole, killed):
        shutil.copytree(run_dir, copy)
    finish(stage("sample", whole, overrides))

    process = stage("sample", killed, overrides)
    shards = RunDir(killed).path(SAMPLES)
    deadline = time.time() + 600
    while len(list(shards.glob("part-*.jsonl"))) < 2:  # killed between finished batches, mid-stage
        assert process.poll() is None and time.time() < deadline, "the stage ended before it could be killed"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert RunDir(killed).manifest("sample") is None  # a killed stage is never marked done
    partial, _ = samples(killed)
    assert 0 < len(partial) < 64

    output = finish(stage("sample", killed, overrides))
    assert "resuming" in output
    resumed, records = samples(killed)
    expected, _ = samples(whole)
    assert records == len(resumed) == 64  # every problem once: none lost, none duplicated
    assert resumed == expected
    assert RunDir(killed).manifest("sample")["metrics"] == RunDir(whole).manifest("sample")["metrics"]
    for copy in (whole, killed):
        finish(stage("select", copy, overrides))
    for artifact in (RFT_SET, OUTCOME_PAIRS):
        assert RunDir(killed).path(artifact).read_bytes() == RunDir(whole).path(artifact).read_bytes(), artifact
