"""Pit search measured against the truth: `linear` and `binary` on the same rejected solutions of an arith run.

    python bench/explore.py runs/tiny                         # the demo's RFT model and outcome pairs
    python bench/explore.py runs/tiny --ks 4,8 --max-rejected 300
    python bench/explore.py runs/deep --ks 4,8 --out bench/results/tuning/explore-deep-pits.json  # deep pits (README)
    python bench/explore.py runs/long --ks 4 --model sft --out bench/results/tuning/explore-long-pits.json  # long (README)
    python bench/explore.py runs/long --ks 8,4 --max-rejected 0 --skip 300 --model sft  # the rest, held out from the above

An arith step is an equation that can be checked, so every rejected solution's true first wrong step is known
(`selfexplore.tasks.arith.first_wrong_step`). For each k and strategy, the explorer (the run's RFT model, or with
`--model sft` its SFT model, in the `hf` engine in this process; the run's explore settings otherwise, the same
per-probe seeds) searches every rejected solution; reported per strategy and k: probes and generated tokens per
rejected solution, pit agreement with the truth (exact, early = before the true step, late = after), and for
`binary` its agreement with `linear`. Also: how often a sample graded correct holds a wrong step (a lucky final
answer), from the run's samples.
Goal: binary <= 0.5x linear's generated tokens at >= 90% pit agreement with linear.

Writes `bench/results/explore.json`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch

from selfexplore.config import EngineConfig, RunConfig
from selfexplore.engines import load_engine
from selfexplore.io import read_jsonl
from selfexplore.rollout import iter_results
from selfexplore.run_dir import OUTCOME_PAIRS, SAMPLES, RunDir
from selfexplore.stages.eval import wilson_interval
from selfexplore.stages.explore import explore_rejected, rejected_items
from selfexplore.tasks import get_task
from selfexplore.tasks.arith import first_wrong_step

from record import write_report  # bench/record.py


def rejected_solutions(run: str, max_rejected: int, bench: str, skip: int = 0) -> tuple[RunDir, RunConfig, dict[str, str], list[dict]]:
    """A finished arith run, its training questions by id, and `max_rejected` rejected solutions of its outcome
    pairs (after the first `skip`) as the explorer's items."""
    run_dir, cfg = RunDir.open(run)
    if cfg.task.name != "arith":
        raise SystemExit(f"bench/{bench}.py: {run} is a `{cfg.task.name}` run; only arith steps can be checked")
    problems = get_task("arith").load("train", cfg.task)
    questions = {p["id"]: p["question"] for p in problems}
    every_item = rejected_items(read_jsonl(run_dir.path(OUTCOME_PAIRS)), {p["id"]: p["answer"] for p in problems})
    items = list(itertools.islice(every_item, skip, skip + max_rejected if max_rejected else None))
    if not items:
        raise SystemExit(f"bench/{bench}.py: {run} has no rejected solutions after the first {skip}; lower --skip")
    return run_dir, cfg, questions, items


def agreement(pits: list[int | None], reference: list[int | None]) -> dict:
    n, exact = len(pits), sum(p == r for p, r in zip(pits, reference))
    return {
        "exact": exact / n,
        "exact_ci95": wilson_interval(exact, n),
        "early": sum(p is not None and r is not None and p < r for p, r in zip(pits, reference)) / n,
        "late": sum(p is not None and r is not None and p > r for p, r in zip(pits, reference)) / n,
        "no_pit": sum(p is None for p in pits) / n,
    }


def lucky_samples(run_dir: RunDir, questions: dict[str, str]) -> dict:
    """Samples graded correct whose steps are not all right."""
    correct = lucky = 0
    for result in iter_results(run_dir.path(SAMPLES)):
        for sample in result["samples"]:
            if sample["correct"]:
                correct += 1
                lucky += first_wrong_step(questions[sample["id"]], sample["completion"]) is not None
    return {"correct_samples": correct, "with_a_wrong_step": lucky, "fraction": lucky / max(1, correct)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a finished arith run directory (its rft model and outcome pairs)")
    parser.add_argument("--ks", default="4,8", help="completions per probe, comma-separated")
    parser.add_argument("--max-rejected", type=int, default=300, help="rejected solutions to search (0 = all)")
    parser.add_argument("--skip", type=int, default=0,
                        help="leave out the first N rejected solutions (e.g. those an earlier, exploratory run measured)")
    parser.add_argument("--model", default="rft", choices=["rft", "sft"],
                        help="the explorer: the run's RFT model (the method's), or its SFT model where no RFT was trained")
    parser.add_argument("--out", default="")
    args = parser.parse_args()

    torch.set_num_threads(1)
    run_dir, cfg, questions, items = rejected_solutions(args.run, args.max_rejected, "explore", args.skip)
    engine = load_engine(run_dir.model_dir(args.model), EngineConfig(backend="hf", dtype="float32"))
    task = get_task("arith")
    truth = [first_wrong_step(questions[item["id"]], engine.tokenizer.decode(item["rejected_token_ids"], skip_special_tokens=True)) for item in items]

    results = {}
    for k in map(int, args.ks.split(",")):
        pits = {}
        for strategy in ("linear", "binary"):
            start = time.time()
            explored = explore_rejected(items, engine, task, dataclasses.replace(cfg.explore, k=k, strategy=strategy))
            pits[strategy] = [r["pit"] for r in explored]
            row = {
                "probes_per_rejected": sum(len(r["probes"]) for r in explored) / len(items),
                "generated_tokens_per_rejected": sum(c["n_tokens"] for r in explored for p in r["probes"] for c in p["completions"]) / len(items),
                "pit_agreement_with_truth": agreement(pits[strategy], truth)["exact"],
                "vs_truth": agreement(pits[strategy], truth),
                "wall_s": round(time.time() - start, 1),
            }
            if strategy == "binary":
                row["vs_linear"] = agreement(pits["binary"], pits["linear"])
                row["pit_agreement_with_linear"] = row["vs_linear"]["exact"]
                row["tokens_over_linear"] = row["generated_tokens_per_rejected"] / results[f"k{k}"]["linear"]["generated_tokens_per_rejected"]
            results.setdefault(f"k{k}", {})[strategy] = row
            print(f"k={k} {strategy}: {row}", flush=True)
    default_k = f"k{cfg.explore.k}" if f"k{cfg.explore.k}" in results else next(iter(results))
    report = {
        "command": f"python bench/explore.py {args.run} --ks {args.ks} --max-rejected {args.max_rejected} --skip {args.skip} --model {args.model}",
        "run": {"dir": str(run_dir.root), "model": args.model, "explore": dataclasses.asdict(cfg.explore), "rejected": len(items), "skipped": args.skip,
                "true_pit_histogram": {str(j): truth.count(j) for j in sorted({t for t in truth if t is not None})}},
        # The run's k: the keys the README quotes.
        "strategies": results[default_k],
        "by_k": results,
        "lucky_correct_samples": lucky_samples(run_dir, questions),
    }
    write_report(report, "explore", args.out)


if __name__ == "__main__":
    main()
