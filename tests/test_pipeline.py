"""The whole pipeline on a quick preset, submitted as a Ray job to a local Ray head; then the CLI on the same run.

Runs on: CPU, 2 cores, ~5 minutes. Starts its own Ray head (`ray start --head --block` on free ports) and stops
only the processes it started.
"""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient

from selfexplore.cli import main as cli_main
from selfexplore.config import load_config
from selfexplore.io import read_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, STAGES, STEP_PAIRS, TRAINED_MODELS, RunDir, stage_fingerprint
from selfexplore.submit import submit_pipeline

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head(tmp_path_factory):
    gcs_port, dashboard_port = free_port(), free_port()
    # Its own temp dir: a later `ray.init()` in this process must not find and join this head.
    temp_dir = f"/tmp/ray-test-{gcs_port}"
    ray_bin = Path(sys.executable).parent / "ray"
    head = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", f"--port={gcs_port}", f"--dashboard-port={dashboard_port}",
         "--dashboard-host=127.0.0.1", "--num-cpus=2", "--disable-usage-stats", "--include-dashboard=true", f"--temp-dir={temp_dir}"],
        # A loopback-only test cluster: no token auth (Ray turns it on when ~/.ray/auth_token exists).
        env={**os.environ, "OMP_NUM_THREADS": "1", "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    address = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.time() + 90
    while True:
        try:
            JobSubmissionClient(address).list_jobs()
            break
        except Exception:
            if time.time() > deadline or head.poll() is not None:
                os.killpg(head.pid, signal.SIGKILL)
                raise RuntimeError("the local Ray head did not come up")
            time.sleep(1)
    yield address
    os.killpg(head.pid, signal.SIGTERM)  # `ray start --block` stops the node's processes on SIGTERM
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def finished_run(ray_head, tmp_path_factory, quick_overrides):
    """`selfexplore submit` of the quick preset: JobSubmissionClient, the job's logs followed to the end."""
    output_dir = tmp_path_factory.mktemp("runs")
    overrides = [f"output_dir={output_dir}", "name=quick", *quick_overrides]
    logs = io.StringIO()
    with contextlib.chdir(REPO), contextlib.redirect_stdout(logs):
        code = submit_pipeline("configs/tiny.yaml", overrides, load_config("configs/tiny.yaml", overrides), ray_head, python=sys.executable)
    assert code == 0, logs.getvalue()[-5000:]
    return RunDir(output_dir / "quick"), overrides, logs.getvalue()


def test_pipeline_job_writes_every_stage_and_the_report(finished_run):
    run_dir, _, logs = finished_run
    for stage in STAGES:
        manifest = run_dir.manifest(stage)
        assert manifest["stage"] == stage and manifest["wall_s"] >= 0
    for model in TRAINED_MODELS:
        assert (Path(run_dir.model_dir(model)) / "config.json").is_file()
        assert (Path(run_dir.model_dir(model)) / "model.safetensors").is_file()
        assert json.loads(run_dir.eval_summary(model).read_text())["n"] == 40
    samples = run_dir.manifest("sample")["metrics"]
    assert samples["problems"] == 64 and samples["samples"] == 256
    assert run_dir.manifest("select")["metrics"]["outcome_pairs"] == len(read_jsonl(run_dir.path(OUTCOME_PAIRS))) > 0
    explore = run_dir.manifest("explore")["metrics"]
    assert explore["step_pairs"] == len(read_jsonl(run_dir.path(STEP_PAIRS))) > 0 and explore["probes"] >= explore["rejected"]
    report = run_dir.report.read_text()
    assert "Self-Explore (step pairs)" in report and "95% CI" in report
    assert "| Self-Explore (step pairs) |" in logs  # the job printed the accuracy table, and we followed its logs


def test_rerun_skips_finished_stages_and_config_changes_rerun_only_downstream(finished_run, capsys):
    run_dir, overrides, _ = finished_run
    assert cli_main(["run", "configs/tiny.yaml", *overrides]) == 0
    out = capsys.readouterr().out
    assert all(f"[{stage}] up to date" in out for stage in STAGES)
    assert "| SFT |" in out

    cfg = load_config("configs/tiny.yaml", overrides)
    changed = load_config("configs/tiny.yaml", [*overrides, "dpo.beta=0.2"])
    stale = [s for s in STAGES if stage_fingerprint(cfg, s) != stage_fingerprint(changed, s)]
    assert stale == ["dpo-outcome", "dpo-step", "eval-dpo-outcome", "eval-dpo-step"]
    reselect = load_config("configs/tiny.yaml", [*overrides, "select.max_rft_per_problem=1"])
    stale = [s for s in STAGES if stage_fingerprint(cfg, s) != stage_fingerprint(reselect, s)]
    assert "sample" not in stale and stale[0] == "select"


def test_bad_inputs_are_one_clear_error_and_mark_nothing_done(tmp_path, capsys):
    def run(*args):
        code = cli_main(["run", *args])
        return code, capsys.readouterr().err.strip()

    code, err = run("configs/tiny.yaml", f"output_dir={tmp_path}", "sft.learnig_rate=1")
    assert code == 2 and err.count("\n") == 0 and "unknown key `sft.learnig_rate`" in err

    code, err = run("configs/tiny.yaml", f"output_dir={tmp_path}", "name=nomodel", "model.path=/nonexistent/model")
    assert code == 2 and "model directory not found: /nonexistent/model" in err
    assert RunDir(tmp_path / "nomodel").manifest("base") is None

    bad = tmp_path / "train.jsonl"
    bad.write_text('{"query": "1+1?", "response": "2\\n#### 2"}\n{"query": "broken\n')
    code, err = run("configs/tiny.yaml", f"output_dir={tmp_path}", "name=baddata", "task.name=gsm8k", f"task.train_path={bad}", f"task.test_path={bad}")
    assert code == 2 and f"{bad}:2" in err
    assert not any((tmp_path / "baddata").glob("*/manifest.json"))
