"""Does Self-Explore help? The tiny pipeline over several seeds, with paired differences between its models.

    python bench/method.py                          # configs/tiny.yaml, seeds 0,1,2: ~70 minutes on 2 cores
    python bench/method.py --seeds 0,1,2,3,4 dpo.learning_rate=2e-5    # any override applies to every seed
    python bench/method.py dpo.beta=0.3 --output-dir runs/method-beta0.3 --start-from runs/method --out bench/results/method-beta0.3.json
    python bench/method.py task.arith.n_test=12000 --confirm-from 2000 --pair-formats full --out bench/results/method-confirm.json

A seed changes initialisation (`model.tiny.seed`), the training data order (`sft/rft/dpo.seed`) and every sample and
probe (`sample.seed`, `explore.seed`); everything else is the config's. Seed 0 is the config itself (`make demo`).
Each seed runs `selfexplore run` to `runs/method/seed-<s>` (finished stages are skipped on a rerun; with
`--start-from DIR` it starts as a copy of `DIR/seed-<s>`, so a DPO setting trains only DPO again); each further
step-pair format (`--pair-formats`, default `full,next_step`) runs on a copy of that run with
`explore.pair_format=<format>`, so only `dpo-step` and its eval run again. Then, from the per-problem eval rows:
- per model and split: accuracy per seed, mean and spread over seeds (`dpo-step` is the config's pair format,
  `dpo-step:<format>` the others);
- paired differences on the same problems, pooled over seeds (stratified paired bootstrap, 95% interval):
  `step-rft` (Self-Explore - RFT), `step-outcome` (Self-Explore - outcome DPO), `outcome-rft`, and for each other
  pair format `<format>-rft`, `<format>-outcome`, `<format>-step`; for the validation split (what settings are
  tuned on) and the test split (reported once);
- arith only: the share of problems solved with every step right (`selfexplore.tasks.arith.first_wrong_step`), per
  model, and the paired differences counted that way (`paired_every_step_right`, test): a lucky answer is no credit;
- what DPO did: final loss, reward margin and accuracy, pairs trained on;
- with `--confirm-from N`: the same test differences on test problems N.. alone (`paired_confirm`). arith draws
  its test problems after the training ones from one stream, so raising `task.arith.n_test` keeps the training
  data, the models and the first test problems, and adds problems no earlier run was scored on: a confirmatory
  test of a config chosen before they existed.

Writes `bench/results/method.json`.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import time
from pathlib import Path

from selfexplore.config import load_config
from selfexplore.io import read_jsonl
from selfexplore.run_dir import RunDir
from selfexplore.stats import paired_difference
from selfexplore.tasks.arith import solved_by_right_steps

from record import selfexplore, write_report  # bench/record.py

PAIRS = {"step-rft": ("rft", "dpo-step"), "step-outcome": ("dpo-outcome", "dpo-step"), "outcome-rft": ("rft", "dpo-outcome")}
MODELS = ("sft", "rft", "dpo-outcome", "dpo-step")


def seed_overrides(seed: int) -> list[str]:
    """Seed 0 leaves the config's seeds as they are (configs/tiny.yaml: model 0, training 42, sampling 0)."""
    if seed == 0:
        return []
    return [f"model.tiny.seed={seed}", *(f"{s}.seed={42 + seed}" for s in ("sft", "rft", "dpo")), f"sample.seed={seed}", f"explore.seed={seed}"]


def run_seed(config: str, seed: int, overrides: list[str], output_dir: Path, pair_format: str = "", copy_of: Path | None = None) -> RunDir:
    """`selfexplore run` for one seed (with `pair_format`: that step-pair format), starting from a copy of `copy_of`
    when given, so that only the stages whose settings differ run again."""
    name = f"seed-{seed}" + (f"-{pair_format}" if pair_format else "")
    args = [f"output_dir={output_dir}", f"name={name}", *seed_overrides(seed), *overrides, *([f"explore.pair_format={pair_format}"] if pair_format else [])]
    run_dir = RunDir.of(load_config(config, args))
    if copy_of is not None and copy_of.is_dir() and not run_dir.root.exists():
        shutil.copytree(copy_of, run_dir.root)
    start = time.time()
    selfexplore("run", config, *args, bench="method")
    print(f"{name}: {time.time() - start:.0f}s, {run_dir.root}", flush=True)
    return run_dir


def correct(run_dir: RunDir, model: str, split: str, every_step_right: bool = False) -> list[bool]:
    """Per problem: solved; with `every_step_right` (arith), solved with no wrong step."""
    rows = read_jsonl(run_dir.eval_results(model, split))
    if every_step_right:
        return [solved_by_right_steps(row["question"], row["completion"], row["answer"]) for row in rows]
    return [row["correct"] for row in rows]


def mean_difference(a: list[bool], b: list[bool]) -> float:
    """b - a on the same problems, without the bootstrap (`paired_difference` draws 10,000 resamples for its interval)."""
    return (sum(b) - sum(a)) / len(a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="key=value overrides for every seed")
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--output-dir", default="runs/method")
    parser.add_argument(
        "--start-from", default="",
        help="an earlier --output-dir: each seed's run starts as a copy of its run there, so only the stages the overrides change run again",
    )
    parser.add_argument("--pair-formats", default="full,next_step", help="explore.pair_format values; the first is the main one")
    parser.add_argument("--out", default="")
    parser.add_argument(
        "--confirm-from", type=int, default=0,
        help="also report the test differences on test problems from this index on (problems no earlier run was scored on)",
    )
    args = parser.parse_args()

    seeds = [int(s) for s in args.seeds.split(",")]
    main_format, *other_formats = args.pair_formats.split(",")
    start = time.time()
    # (model, seed) -> its run: the step DPO model of another pair format is `dpo-step:<format>`.
    runs: dict[tuple[str, int], tuple[RunDir, str]] = {}
    for seed in seeds:
        earlier = Path(args.start_from) / f"seed-{seed}" if args.start_from else None
        run_dir = run_seed(args.config, seed, [*args.overrides, f"explore.pair_format={main_format}"], Path(args.output_dir), copy_of=earlier)
        runs |= {(model, seed): (run_dir, model) for model in MODELS}
        for pair_format in other_formats:
            other = run_seed(args.config, seed, args.overrides, Path(args.output_dir), pair_format, copy_of=run_dir.root)
            runs[(f"dpo-step:{pair_format}", seed)] = (other, "dpo-step")

    @functools.cache  # read and graded once: every comparison below asks again
    def outcomes(model: str, seed: int, split: str, every_step_right: bool = False) -> tuple[bool, ...]:
        run_dir, stage_model = runs[(model, seed)]
        return tuple(correct(run_dir, stage_model, split, every_step_right))

    models = [*MODELS, *(f"dpo-step:{f}" for f in other_formats)]
    arith = load_config(args.config, args.overrides).task.name == "arith"  # steps that can be checked
    rows = {}
    for model in models:
        rows[model] = {}
        for split in ("validation", "test"):
            per_seed = [sum(c) / len(c) for c in (outcomes(model, s, split) for s in seeds)]
            mean = sum(per_seed) / len(per_seed)
            spread = (sum((a - mean) ** 2 for a in per_seed) / max(1, len(per_seed) - 1)) ** 0.5
            rows[model][split] = {"per_seed": per_seed, "mean": mean, "std": spread}
            if arith:
                right = [sum(c) / len(c) for c in (outcomes(model, s, split, every_step_right=True) for s in seeds)]
                rows[model][split]["every_step_right"] = {"per_seed": right, "mean": sum(right) / len(right)}
    pairs = dict(PAIRS)
    for f in other_formats:
        pairs |= {f"{f}-rft": ("rft", f"dpo-step:{f}"), f"{f}-outcome": ("dpo-outcome", f"dpo-step:{f}"), f"{f}-step": ("dpo-step", f"dpo-step:{f}")}
    paired, paired_validation, paired_every_step_right, paired_confirm = {}, {}, {}, {}
    comparisons = [("test", False, 0, paired), ("validation", False, 0, paired_validation)]
    if arith:
        comparisons.append(("test", True, 0, paired_every_step_right))
    if args.confirm_from:
        comparisons.append(("test", False, args.confirm_from, paired_confirm))
    for name, (a, b) in pairs.items():
        for split, right, first, out in comparisons:
            a_runs = [outcomes(a, s, split, right)[first:] for s in seeds]
            b_runs = [outcomes(b, s, split, right)[first:] for s in seeds]
            per_seed = [mean_difference(a_seed, b_seed) for a_seed, b_seed in zip(a_runs, b_runs)]
            out[name] = {**paired_difference(a_runs, b_runs), "per_seed": per_seed}
    keys = ("examples", "first_loss", "final_loss", "rewards/margins", "rewards/accuracies")
    dpo = {}
    for model in ("dpo-outcome", "dpo-step", *(f"dpo-step:{f}" for f in other_formats)):
        dpo[model] = []
        for s in seeds:
            run_dir, stage = runs[(model, s)]
            metrics = run_dir.manifest(stage)["metrics"]
            dpo[model].append({key: metrics[key] for key in keys if key in metrics})
    report = {
        "command": "python bench/method.py " + " ".join([
            f"--config {args.config}", f"--seeds {args.seeds}", f"--pair-formats {args.pair_formats}",
            *([f"--confirm-from {args.confirm_from}"] if args.confirm_from else []), *args.overrides,
        ]),
        "pair_format": main_format,
        "seeds": seeds,
        "wall_s": round(time.time() - start),
        "test_problems": len(outcomes("sft", seeds[0], "test")),
        "validation_problems": len(outcomes("sft", seeds[0], "validation")),
        "rows": rows,
        "paired": paired,
        "paired_validation": paired_validation,
        # arith: the same differences counting only problems solved with every step right (not by a lucky answer)
        "paired_every_step_right": paired_every_step_right,
        "dpo": dpo,
    }
    if args.confirm_from:
        report["confirm_from"] = args.confirm_from
        report["paired_confirm"] = paired_confirm
    write_report(report, "method", args.out)
    for title, results in (("test", paired), (f"test problems {args.confirm_from}..", paired_confirm)):
        for name, result in results.items():
            lo, hi = result["ci95"]
            print(f"{title}, {name}: {100 * result['mean']:+.1f} points (95% CI {100 * lo:+.1f} to {100 * hi:+.1f}), per seed {[round(100 * m, 1) for m in result['per_seed']]}")


if __name__ == "__main__":
    main()
