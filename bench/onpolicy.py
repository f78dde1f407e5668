"""On-policy pairs: both DPO stages' pairs sampled from the RFT model, the policy DPO starts from, not from SFT.

    python bench/onpolicy.py runs/method-confirm --out-dir runs/onpolicy-prep      # seeds 0,1,2 of a method.py run
    python bench/method.py task.arith.n_test=12000 --pair-formats full --confirm-from 2000 \
        --start-from runs/onpolicy-prep --output-dir runs/onpolicy --out bench/results/tuning/onpolicy-rft-samples.json
    python bench/onpolicy.py runs/onpolicy-prep --rejected greedy --out-dir runs/onpolicy-greedy-prep   # RFT's samples reused

The paper (and the pipeline with `select.rejected_from: samples`) pair the SFT model's samples; `bench/decisions.py` found that RFT already prefers the
chosen character at 71-83% of those pairs, so they push against characters RFT would not write. Here each seed's
run (`DIR/seed-<s>`) is copied up to `rft` to `OUT_DIR/seed-<s>`; the RFT model samples the same training problems
with the run's `sample` settings (the `sample` stage's own code, pointed at the RFT model); the outcome pairs are
built from those samples by the `select` stage's functions and put in place of `select/pairs.jsonl`. The copy's
`explore`, `dpo-*` and their evaluations are left out, so `bench/method.py --start-from OUT_DIR` runs them on the
new pairs: step pairs are explored from RFT's own rejected solutions, outcome DPO trains on RFT's own pairs, and
both are compared with the same RFT model as before.

With `--rejected greedy`, each problem's rejected solution is RFT's greedy one (when wrong and complete), paired
with the first distinct correct sample: at the pairs above RFT still prefers the chosen character at 71-79% of them
(a sample at 0.7 slips where greedy decoding would not), while a greedy error is by construction the character
greedy decoding writes. One pair per problem at most. (The pipeline's `select.rejected_from: rft_greedy` does the
same with the chosen side from the SFT samples, sparing this second sampling: `selfexplore.stages.rft_greedy`.)

Since session 25 the pipeline does the first of these itself, inside a run: `select.rejected_from: rft_samples`
(`selfexplore.stages.rft_sample`). This script stays to reproduce session 18's arms as they were made.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from selfexplore.config import RunConfig, SampleConfig, load_config
from selfexplore.io import write_json, write_jsonl
from selfexplore.pipeline import init_ray
from selfexplore.rollout import iter_results
from selfexplore.run_dir import OUTCOME_PAIRS, SAMPLES, RunDir, model
from selfexplore.stages import sample
from selfexplore.stages.select import build_outcome_pairs, build_rft_set

DOWNSTREAM = ("explore", "dpo-outcome", "dpo-step", "eval/dpo-outcome", "eval/dpo-step", "report", "report.md")


def sample_from_rft(cfg: RunConfig, target: Path, root: str, sample_cfg: SampleConfig) -> tuple[RunDir, dict]:
    """The `sample` stage's samples, from the RFT model of the run at `target`, in `target/root`."""
    # A run root of its own whose "SFT model" is the RFT model: the sample stage then samples from RFT.
    policy = RunDir(target / root)
    if not policy.path(model("sft")).exists():  # a copy of an earlier preparation has it, and its samples: resumed
        policy.path(model("sft")).parent.mkdir(parents=True)
        policy.path(model("sft")).symlink_to(RunDir(target).path(model("rft")).resolve())
    return policy, sample.run(dataclasses.replace(cfg, sample=sample_cfg), policy)


def build_pairs(sampled: RunDir, rejected_from: RunDir, max_rft_per_problem: int) -> list[dict]:
    """Outcome pairs: chosen from `sampled`'s correct samples, rejected from `rejected_from`'s wrong ones (the same
    run, or the greedy solutions). Both are sealed, so in problem order."""
    pairs = []
    for result, candidates in zip(iter_results(sampled.path(SAMPLES)), iter_results(rejected_from.path(SAMPLES)), strict=True):
        pairs += build_outcome_pairs(candidates["samples"], build_rft_set(result["samples"], max_rft_per_problem))
    return pairs


def prepare(source: Path, target: Path, rejected: str) -> dict:
    """Copy `source` without the stages after `rft`, sample from its RFT model, and replace the outcome pairs."""
    shutil.copytree(source, target, ignore=lambda d, names: [n for n in names if os.path.relpath(Path(d) / n, source) in DOWNSTREAM])
    cfg = load_config(str(target / "config.yaml"), [])
    init_ray(cfg)
    policy, metrics = sample_from_rft(cfg, target, "rft-samples", cfg.sample)
    rejected_from = policy
    if rejected == "greedy":
        rejected_from, greedy_metrics = sample_from_rft(cfg, target, "rft-greedy", dataclasses.replace(cfg.sample, n=1, temperature=0.0))
        metrics["greedy_accuracy"] = greedy_metrics["sample_accuracy"]
    pairs = build_pairs(policy, rejected_from, cfg.select.max_rft_per_problem)
    write_jsonl(RunDir(target).path(OUTCOME_PAIRS), pairs)
    summary = {**metrics, "outcome_pairs": len(pairs), "problems_with_pairs": len({p["id"] for p in pairs})}
    write_json(policy.root / "summary.json", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a bench/method.py --output-dir: its seed-<s> runs, finished up to rft")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-dir", default="runs/onpolicy-prep")
    parser.add_argument("--rejected", choices=("sampled", "greedy"), default="sampled", help="the rejected solutions: RFT's samples, or its greedy solution")
    args = parser.parse_args()
    for seed in args.seeds.split(","):
        target = Path(args.out_dir) / f"seed-{seed}"
        if (target / "rft-samples" / "summary.json").is_file():
            print(f"seed {seed}: done before, {target}")
            continue
        shutil.rmtree(target, ignore_errors=True)
        summary = prepare(Path(args.runs) / f"seed-{seed}", target, args.rejected)
        print(f"seed {seed}: RFT samples {summary['sample_accuracy']:.3f} correct, {summary['outcome_pairs']} outcome pairs, {target}", flush=True)


if __name__ == "__main__":
    main()
