"""Does Self-Explore help? The tiny pipeline over several seeds, with paired differences between its models.

    python bench/method.py                          # configs/tiny.yaml, seeds 0,1,2: ~45 minutes on 2 cores
    python bench/method.py --seeds 0,1,2,3,4 dpo.learning_rate=2e-5    # any override applies to every seed

A seed changes initialisation (`model.tiny.seed`), the training data order (`sft/rft/dpo.seed`) and every sample and
probe (`sample.seed`, `explore.seed`); everything else is the config's. Seed 0 is the config itself (`make demo`).
Each seed runs `selfexplore run` to `runs/method/seed-<s>` (finished seeds are skipped on a rerun). Then, from the
per-problem eval rows:
- per model and split: accuracy per seed, mean and spread over seeds;
- paired differences on the same problems, pooled over seeds (stratified paired bootstrap, 95% interval):
  `step-rft` (Self-Explore - RFT), `step-outcome` (Self-Explore - outcome DPO), `outcome-rft`; for the validation
  split (what settings are tuned on) and the test split (reported once);
- what DPO did: final loss, reward margin and accuracy, pairs trained on.

Writes `bench/results/method.json`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from selfexplore.config import load_config
from selfexplore.io import read_jsonl, write_json
from selfexplore.run_dir import TRAINED_MODELS, RunDir
from selfexplore.stats import paired_difference

REPO = Path(__file__).resolve().parents[1]
PAIRS = {"step-rft": ("rft", "dpo-step"), "step-outcome": ("dpo-outcome", "dpo-step"), "outcome-rft": ("rft", "dpo-outcome")}


def seed_overrides(seed: int) -> list[str]:
    """Seed 0 leaves the config's seeds as they are (configs/tiny.yaml: model 0, training 42, sampling 0)."""
    if seed == 0:
        return []
    return [f"model.tiny.seed={seed}", *(f"{s}.seed={42 + seed}" for s in ("sft", "rft", "dpo")), f"sample.seed={seed}", f"explore.seed={seed}"]


def run_seed(config: str, seed: int, overrides: list[str], output_dir: Path) -> RunDir:
    args = [f"output_dir={output_dir}", f"name=seed-{seed}", *seed_overrides(seed), *overrides]
    run_dir = RunDir.of(load_config(config, args))
    start = time.time()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "selfexplore.cli", "run", config, *args], cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench/method.py: seed {seed} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    print(f"seed {seed}: {time.time() - start:.0f}s, {run_dir.root}", flush=True)
    return run_dir


def correct(run_dir: RunDir, model: str, split: str) -> list[bool]:
    return [row["correct"] for row in read_jsonl(run_dir.eval_results(model, split))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every seed")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output-dir", default="runs/method")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "method.json"))
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    start = time.time()
    runs = {seed: run_seed(args.config, seed, args.overrides, Path(args.output_dir)) for seed in seeds}
    rows = {}
    for model in TRAINED_MODELS:
        rows[model] = {}
        for split in ("validation", "test"):
            per_seed = [sum(c) / len(c) for c in (correct(runs[s], model, split) for s in seeds)]
            mean = sum(per_seed) / len(per_seed)
            spread = (sum((a - mean) ** 2 for a in per_seed) / max(1, len(per_seed) - 1)) ** 0.5
            rows[model][split] = {"per_seed": per_seed, "mean": mean, "std": spread}
    paired, paired_validation = {}, {}
    for name, (a, b) in PAIRS.items():
        for split, out in (("test", paired), ("validation", paired_validation)):
            pooled = paired_difference([correct(runs[s], a, split) for s in seeds], [correct(runs[s], b, split) for s in seeds])
            per_seed = [paired_difference([correct(runs[s], a, split)], [correct(runs[s], b, split)])["mean"] for s in seeds]
            out[name] = {**pooled, "per_seed": per_seed}
    dpo = {
        kind: [{key: runs[s].manifest(kind)["metrics"].get(key) for key in ("examples", "first_loss", "final_loss", "rewards/margins", "rewards/accuracies")} for s in seeds]
        for kind in ("dpo-outcome", "dpo-step")
    }
    report = {
        "command": "python bench/method.py " + " ".join([f"--config {args.config}", f"--seeds {args.seeds}", *args.overrides]),
        "seeds": seeds,
        "wall_s": round(time.time() - start),
        "test_problems": len(correct(runs[seeds[0]], "sft", "test")),
        "validation_problems": len(correct(runs[seeds[0]], "sft", "validation")),
        "rows": rows,
        "paired": paired,
        "paired_validation": paired_validation,
        "dpo": dpo,
    }
    write_json(Path(args.out), report)
    for name, result in paired.items():
        lo, hi = result["ci95"]
        print(f"{name}: {100 * result['mean']:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), per seed {[round(100 * m, 1) for m in result['per_seed']]}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
