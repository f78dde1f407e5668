"""What a user sees: our own lines on the terminal, what Ray, DeepSpeed and transformers print in the run's logs.

Runs on: CPU, 2 cores, ~1.5 minutes: `selfexplore stage base` and a 6-step `stage sft` in subprocesses whose
output is a pipe (as in CI or a Ray job's log), `stage base --verbose`, and a failing stage in-process.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

from selfexplore import console, pipeline
from selfexplore.cli import main as cli_main
from selfexplore.io import read_jsonl
from selfexplore.run_dir import RunDir

REPO = Path(__file__).resolve().parents[1]
ENV = {key: value for key, value in os.environ.items() if key != "SELFEXPLORE_QUIET"} | {"OMP_NUM_THREADS": "1"}
SMALL = ["task.arith.n_train=128", "sft.max_steps=6", "sft.logging_steps=2"]
# Our lines: a stage's start / end, a progress line; nothing else reaches the terminal.
OURS = re.compile(r"^(\[(base|sft)\] (running|done in \d+s: .+)|  training: .+)$")


def selfexplore(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "selfexplore.cli", *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)


def test_piped_output_is_our_lines_only_and_the_logs_hold_the_libraries(tmp_path):
    run = [f"output_dir={tmp_path}", "name=console", *SMALL]
    out = ""
    for stage in ("base", "sft"):
        done = selfexplore("stage", stage, "configs/tiny.yaml", *run)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == ""
        out += done.stdout
    assert "\r" not in out and "\x1b" not in out  # no carriage returns, no colours
    assert all(OURS.match(line) for line in out.splitlines()), out
    assert "[sft] done in" in out and "6 steps, loss" in out

    run_dir = RunDir(tmp_path / "console")
    sft_log = run_dir.stage_log("sft").read_text()
    assert "Started a local Ray instance" in sft_log  # Ray's own lines
    assert "(RayTrainWorker pid=" in sft_log and "[sft] step 6/6 loss" in sft_log  # the workers' output
    assert [row["step"] for row in read_jsonl(run_dir.train_logs("sft").metrics)] == [1, 2, 4, 6]
    # A run built stage by stage is a run like any other: it holds its config, so `status` (and `eval --run`,
    # `serve`) can open it.
    status = selfexplore("status", str(run_dir.root))
    assert status.returncode == 0, status.stderr
    assert re.search(r"^sft +done ", status.stdout, re.M) and re.search(r"^sample +not started", status.stdout, re.M)


def test_verbose_brings_the_libraries_back(tmp_path):
    done = selfexplore("stage", "base", "configs/tiny.yaml", f"output_dir={tmp_path}", "name=verbose", "--verbose")
    assert done.returncode == 0, done.stderr
    assert "Started a local Ray instance" in done.stdout + done.stderr
    assert not RunDir(tmp_path / "verbose").logs.exists()


def test_a_failed_stage_says_what_failed_and_where_its_log_is(tmp_path, monkeypatch, capsys):
    def broken(cfg, run_dir):
        raise RuntimeError("the engine caught fire")

    monkeypatch.setitem(pipeline.RUNNERS, "base", broken)
    monkeypatch.setattr(pipeline, "init_ray", lambda cfg: None)
    code = cli_main(["stage", "base", str(REPO / "configs/tiny.yaml"), f"output_dir={tmp_path}", "name=failed"])
    err = capsys.readouterr().err.splitlines()
    log = RunDir(tmp_path / "failed").stage_log("base")
    assert code == 2
    assert err == [f"[base] failed; full log: {log}", "selfexplore: error: stage base: the engine caught fire"]
    assert "Traceback" in log.read_text() and "the engine caught fire" in log.read_text()
    assert RunDir(tmp_path / "failed").manifest("base") is None


def test_progress_away_from_a_terminal_is_a_plain_line_at_most_every_few_seconds(monkeypatch, capsys):
    monkeypatch.delenv("SELFEXPLORE_QUIET", raising=False)
    with console.Progress("problems sampled", total=64) as progress:
        progress.update(32)  # within LINE_EVERY_S of the start: no line
        monkeypatch.setattr(console, "LINE_EVERY_S", 0.0)
        progress.update(64, note="done")
    assert re.fullmatch(r"  problems sampled: 100% 64/64 \[00:00<00:00, +[\d.]+row/s, done\]\n", capsys.readouterr().out)
