"""The whole pipeline on a quick preset, submitted as a Ray job to a two-node local cluster (the session's
`quick_run`, ~5 minutes); then the CLI on the same run (~1 minute).

Runs on: CPU, 2 cores.
"""

import json
from pathlib import Path

from selfexplore.cli import main as cli_main
from selfexplore.config import load_config
from selfexplore.io import read_jsonl
from selfexplore.run_dir import OUTCOME_PAIRS, STAGES, STEP_PAIRS, TRAINED_MODELS, RunDir, pipeline_stages, stage_fingerprint
from selfexplore.train.worker import hardware

def test_pipeline_job_writes_every_stage_and_the_report(quick_run):
    run_dir, logs = quick_run.run_dir, quick_run.logs
    for stage in pipeline_stages(load_config(run_dir.config)):
        manifest = run_dir.manifest(stage)
        assert manifest["stage"] == stage and manifest["wall_s"] >= 0
    for model in TRAINED_MODELS:
        assert (Path(run_dir.model_dir(model)) / "config.json").is_file()
        assert (Path(run_dir.model_dir(model)) / "model.safetensors").is_file()
    assert {model: json.loads(run_dir.eval_summary(model).read_text())["n"] for model in ("sft", "dpo-step")} == {"sft": 40, "dpo-step": 40}
    assert run_dir.manifest("eval-rft") is None  # not in `eval.models`
    samples = run_dir.manifest("sample")["metrics"]
    assert samples["problems"] == 64 and samples["samples"] == 64 * 8
    assert run_dir.manifest("select")["metrics"]["outcome_pairs"] == len(read_jsonl(run_dir.path(OUTCOME_PAIRS))) > 0
    explore = run_dir.manifest("explore")["metrics"]
    assert explore["step_pairs"] == len(read_jsonl(run_dir.path(STEP_PAIRS))) > 0 and explore["probes"] >= explore["rejected"]
    report = run_dir.report.read_text()
    assert "Self-Explore (step pairs)" in report and "95% CI" in report
    # Every training stage says what it trained on (the model depends on it), and the report repeats it.
    assert {run_dir.manifest(m)["metrics"]["hardware"][0] for m in TRAINED_MODELS} == {hardware()}
    assert f"Trained on: {hardware()}." in report
    assert "| Self-Explore (step pairs) |" in logs  # the job printed the accuracy table, and we followed its logs


def test_engines_and_training_workers_ran_on_both_nodes(quick_run):
    """Two nodes of one CPU each: two engine actors, or two training workers, cannot share a node. (`explore` has
    only a few batches here: the first engine ready may do them all.)"""
    everywhere = set()
    for stage in ("sample", "eval-sft", "eval-dpo-step", "sft", "rft", "dpo-outcome", "dpo-step"):
        nodes = quick_run.run_dir.manifest(stage)["metrics"]["nodes"]
        assert len(nodes) == 2, (stage, nodes)
        everywhere |= set(nodes)
    assert len(everywhere) == 2 and set(quick_run.run_dir.manifest("explore")["metrics"]["nodes"]) <= everywhere


def test_rerun_skips_finished_stages_and_config_changes_rerun_only_downstream(quick_run, capsys):
    overrides = quick_run.overrides
    assert cli_main(["run", "configs/tiny.yaml", *overrides]) == 0
    out = capsys.readouterr().out
    assert all(f"[{stage}] up to date" in out for stage in pipeline_stages(load_config(quick_run.run_dir.config)))
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
