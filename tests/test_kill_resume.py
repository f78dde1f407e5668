"""Crash safety with real signals. Each rollout stage of the session's two-node run (`quick_run`) is run again on
a copy, locally with one engine and small batches, and SIGKILLed in the middle — the driver (with its whole
process group), or one engine actor; after a rerun its outputs equal the uninterrupted two-node run's byte for
byte: sample, probe and eval shards, pairs, step values, eval rows and summaries (`hf` engine).

Runs on: CPU, 2 cores, ~4 minutes after `quick_run`: `selfexplore stage` subprocesses, each with its own
in-process Ray.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from processes import session_processes  # tests/processes.py
from selfexplore.rollout import iter_results, shard_files
from selfexplore.run_dir import OUTCOME_PAIRS, PROBES, RFT_SET, SAMPLES, STEP_PAIRS, STEP_VALUES, RunDir

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLORE_QUIET": "1"}
# The quick preset has only a few rejected solutions to explore: one per batch there, so it can be cut mid-stage.
ROWS_PER_BATCH = {"explore": 1}


def stage(name: str, run_dir: RunDir, overrides: list[str]) -> subprocess.Popen:
    # Neither the engine count nor the batch size changes a stage's output (per-row seeds), so neither is in its
    # fingerprint: the copy's finished upstream stages stay current, and the rerun must reproduce the two-node run.
    local = ["engine.num_engines=1", f"engine.rows_per_batch={ROWS_PER_BATCH.get(name, 8)}"]
    # Last: the run's own overrides name the original run directory.
    where = [f"output_dir={run_dir.root.parent}", f"name={run_dir.root.name}"]
    args = [sys.executable, "-m", "selfexplore.cli", "stage", name, "configs/tiny.yaml", *overrides, *local, *where]
    return subprocess.Popen(args, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return output


def copy_without(quick_run, name: str, tmp_path: Path) -> RunDir:
    """A copy of the finished run with stage `name` gone, as if it had never run."""
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(quick_run.run_dir.root, copy.root)
    copy.discard(name)
    return copy


def wait_for_shards(process: subprocess.Popen, shard_dir: Path, n: int) -> None:
    deadline = time.time() + 600
    while len(list(shard_dir.glob("part-*.jsonl"))) < n:
        assert process.poll() is None and time.time() < deadline, "the stage ended before it could be killed"
        time.sleep(0.1)


def kill_driver_and_resume(copy: RunDir, name: str, shard_dir: Path, overrides: list[str]) -> None:
    process = stage(name, copy, overrides)
    wait_for_shards(process, shard_dir, 2)  # killed between finished batches, mid-stage
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert copy.manifest(name) is None  # a killed stage is never marked done
    assert "resuming" in finish(stage(name, copy, overrides))


def assert_same_shards(copy: Path, original: Path, key: str) -> None:
    """The same shard files, byte for byte, with every row once."""
    keys = [record[key] for record in iter_results(copy)]
    assert len(set(keys)) == len(keys), "a row was written twice"
    assert [p.name for p in shard_files(copy)] == [p.name for p in shard_files(original)]
    for mine, theirs in zip(shard_files(copy), shard_files(original)):
        assert mine.read_bytes() == theirs.read_bytes(), mine


def test_sample_killed_mid_stage_resumes_to_the_uninterrupted_result(quick_run, tmp_path):
    copy = copy_without(quick_run, "sample", tmp_path)
    kill_driver_and_resume(copy, "sample", copy.path(SAMPLES), quick_run.overrides)
    assert_same_shards(copy.path(SAMPLES), quick_run.run_dir.path(SAMPLES), "id")  # 64 problems, once each
    copy.discard("select")
    finish(stage("select", copy, quick_run.overrides))
    for artifact in (RFT_SET, OUTCOME_PAIRS):
        assert copy.path(artifact).read_bytes() == quick_run.run_dir.path(artifact).read_bytes(), artifact


def test_explore_killed_mid_stage_resumes_to_the_uninterrupted_result(quick_run, tmp_path):
    copy = copy_without(quick_run, "explore", tmp_path)
    kill_driver_and_resume(copy, "explore", copy.path(PROBES), quick_run.overrides)
    assert_same_shards(copy.path(PROBES), quick_run.run_dir.path(PROBES), "key")
    for artifact in (STEP_PAIRS, STEP_VALUES):
        assert copy.path(artifact).read_bytes() == quick_run.run_dir.path(artifact).read_bytes(), artifact


def test_eval_killed_mid_stage_resumes_to_the_uninterrupted_result(quick_run, tmp_path):
    copy = copy_without(quick_run, "eval-sft", tmp_path)
    kill_driver_and_resume(copy, "eval-sft", copy.shards("eval-sft"), quick_run.overrides)
    assert_same_shards(copy.shards("eval-sft"), quick_run.run_dir.shards("eval-sft"), "key")
    for path in (copy.eval_results("sft", "validation"), copy.eval_summary("sft", "validation"), copy.eval_results("sft"), copy.eval_summary("sft")):
        assert path.read_bytes() == (quick_run.run_dir.root / path.relative_to(copy.root)).read_bytes(), path


def test_a_killed_engine_actor_is_restarted_and_every_row_done_once(quick_run, tmp_path):
    copy = copy_without(quick_run, "eval-dpo-step", tmp_path)
    process = stage("eval-dpo-step", copy, quick_run.overrides)
    wait_for_shards(process, copy.shards("eval-dpo-step"), 1)
    actors = session_processes(process.pid, "EvalWorker")
    assert len(actors) == 1
    actors[0].send_signal(signal.SIGKILL)
    finish(process)
    assert_same_shards(copy.shards("eval-dpo-step"), quick_run.run_dir.shards("eval-dpo-step"), "key")
    for path in (copy.eval_results("dpo-step", "validation"), copy.eval_results("dpo-step"), copy.eval_summary("dpo-step")):
        assert path.read_bytes() == (quick_run.run_dir.root / path.relative_to(copy.root)).read_bytes(), path
