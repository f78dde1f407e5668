"""On-policy pairs: both DPO stages' pairs sampled from the RFT model, the policy DPO starts from, not from SFT.

    python bench/onpolicy.py runs/method-confirm --out-dir runs/onpolicy-prep      # seeds 0,1,2 of a method.py run
    python bench/method.py task.arith.n_test=12000 --pair-formats full --confirm-from 2000 \
        --start-from runs/onpolicy-prep --output-dir runs/onpolicy --out bench/results/tuning/onpolicy-rft-samples.json

The paper (and the pipeline) pair the SFT model's samples; `bench/decisions.py` found that RFT already prefers the
chosen character at 71-83% of those pairs, so they push against characters RFT would not write. Here each seed's
run (`DIR/seed-<s>`) is copied up to `rft` to `OUT_DIR/seed-<s>`; the RFT model samples the same training problems
with the run's `sample` settings (the `sample` stage's own code, pointed at the RFT model); the outcome pairs are
built from those samples by the `select` stage's functions and put in place of `select/pairs.jsonl`. The copy's
`explore`, `dpo-*` and their evaluations are left out, so `bench/method.py --start-from OUT_DIR` runs them on the
new pairs: step pairs are explored from RFT's own rejected solutions, outcome DPO trains on RFT's own pairs, and
both are compared with the same RFT model as before.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from selfexplore.config import load_config
from selfexplore.io import write_json, write_jsonl
from selfexplore.pipeline import init_ray
from selfexplore.rollout import iter_results
from selfexplore.run_dir import OUTCOME_PAIRS, SAMPLES, RunDir, model
from selfexplore.stages import sample
from selfexplore.stages.select import build_outcome_pairs, build_rft_set

DOWNSTREAM = ("explore", "dpo-outcome", "dpo-step", "eval/dpo-outcome", "eval/dpo-step", "report", "report.md")


def prepare(source: Path, target: Path) -> dict:
    """Copy `source` without the stages after `rft`, sample from its RFT model, and replace the outcome pairs."""
    shutil.copytree(source, target, ignore=lambda d, names: [n for n in names if os.path.relpath(Path(d) / n, source) in DOWNSTREAM])
    cfg = load_config(str(target / "config.yaml"), [])
    # A run root of its own whose "SFT model" is the RFT model: the sample stage then samples from RFT.
    policy = RunDir(target / "rft-samples")
    policy.path(model("sft")).parent.mkdir(parents=True)
    policy.path(model("sft")).symlink_to(RunDir(target).path(model("rft")).resolve())
    init_ray(cfg)
    metrics = sample.run(cfg, policy)
    pairs = []
    for result in iter_results(policy.path(SAMPLES)):
        pairs += build_outcome_pairs(result["samples"], build_rft_set(result["samples"], cfg.select.max_rft_per_problem))
    write_jsonl(RunDir(target).path(OUTCOME_PAIRS), pairs)
    summary = {**metrics, "outcome_pairs": len(pairs), "problems_with_pairs": len({p["id"] for p in pairs})}
    write_json(policy.root / "summary.json", summary)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a bench/method.py --output-dir: its seed-<s> runs, finished up to rft")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out-dir", default="runs/onpolicy-prep")
    args = parser.parse_args()
    for seed in args.seeds.split(","):
        target = Path(args.out_dir) / f"seed-{seed}"
        if (target / "rft-samples" / "summary.json").is_file():
            print(f"seed {seed}: done before, {target}")
            continue
        shutil.rmtree(target, ignore_errors=True)
        summary = prepare(Path(args.runs) / f"seed-{seed}", target)
        print(f"seed {seed}: RFT samples {summary['sample_accuracy']:.3f} correct, {summary['outcome_pairs']} outcome pairs, {target}", flush=True)


if __name__ == "__main__":
    main()
