"""The driver at paper scale, without GPUs: what the `sample`, `select` and `explore` stages do on the driver once
their engines are done, timed and with its peak memory, on synthetic rollouts the size of the paper's MATH run.

    python bench/scale.py                      # 7,123 MATH training problems x 100 samples (the paper's scale)
    python bench/scale.py --problems 1024      # a slice
    python bench/scale.py --explore-only       # again, explore alone, on the samples and pairs of the last run

The engines are not part of this: the rollouts' shard files are written as a finished rollout's driver writes
them (one `part-*.jsonl` per batch of `engine.rows_per_batch` rows; here in input order, a real driver's in
completion order), then each stage's own `run` is called in a fresh process and finds every row done (the resume
path: seal the shards, then read them back). Synthetic samples: per problem a sample accuracy drawn from
Beta(0.6, 1.2) (mean 0.33); each completion is the gold solution's words with 10% replaced, stretched to
1,000-3,000 characters, ending in a boxed answer (the gold one when correct); one token id per 3.3 characters.
`select`'s time depends on how alike a problem's solutions are (difflib), so it holds for these texts, not
necessarily for a real model's. Exploration: every outcome pair's rejected solution, its first pit uniform over its
steps, each step up to the pit probed with k completions of 500-1,500 characters.

Reported per stage: wall seconds, the driver's resident memory before the stage and at its peak (VmHWM), and
what it made; for `select`, also the largest peak of its Ray worker processes (`--cpus` of them, local); for
`explore`, its input files (rows, bytes, seconds to write them; included in the stage's wall time and peak).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psutil
import ray

from selfexplore.config import load_config
from selfexplore.io import iter_jsonl, write_jsonl
from selfexplore.rollout import write_inputs
from selfexplore.run_dir import OUTCOME_PAIRS, PROBES, SAMPLES, RunDir
from selfexplore.stages import explore, sample, select
from selfexplore.tasks import get_task

from record import write_report  # bench/record.py

CHARS_PER_TOKEN = 3.3


def completion(rng: random.Random, words: list[str], answer: str, low: int, high: int) -> str:
    target, out = rng.randint(low, high), []
    while sum(len(w) + 1 for w in out) < target:
        out += [w if rng.random() > 0.1 else str(rng.randint(0, 99)) for w in words]
    return " ".join(out)[:target] + f"\nThe answer is $\\boxed{{{answer}}}$."


def token_ids(rng: random.Random, text: str) -> list[int]:
    return [rng.randrange(32000) for _ in range(int(len(text) / CHARS_PER_TOKEN))]


def write_samples(cfg, run_dir: RunDir, problems: list[dict]) -> dict:
    """The sample rollout's batch shards, as its driver writes them."""
    rng, n, batch, shard_dir = random.Random(0), cfg.sample.n, cfg.engine.rows_per_batch, run_dir.path(SAMPLES)
    for start in range(0, len(problems), batch):
        results = []
        for p in problems[start : start + batch]:
            accuracy, words = rng.betavariate(0.6, 1.2), p["solution"].split(" ")
            samples = []
            for i in range(n):
                correct = rng.random() < accuracy
                text = completion(rng, words, p["answer"] if correct else str(rng.randint(1000, 9999)), 1000, 3000)
                samples.append(
                    {"id": p["id"], "sample_idx": i, "prompt": p["question"] + "\n", "completion": text, "pred": "x",
                     "correct": correct, "finish_reason": "stop", "n_tokens": int(len(text) / CHARS_PER_TOKEN),
                     "token_ids": token_ids(rng, text)}
                )
            results.append({"id": p["id"], "samples": samples})
        write_jsonl(shard_dir / f"part-{start // batch:05d}.jsonl", results)
    return {"problems": len(problems), "samples": len(problems) * n, "bytes": sum(f.stat().st_size for f in shard_dir.iterdir())}


def write_probes(cfg, run_dir: RunDir, problems: list[dict]) -> dict:
    """The explore rollout's batch shards: every rejected solution explored up to a first pit."""
    shutil.rmtree(run_dir.path(PROBES).parent, ignore_errors=True)  # an earlier measurement's
    rng, k, batch = random.Random(1), cfg.explore.k, cfg.engine.rows_per_batch
    answers = {p["id"]: p["answer"] for p in problems}
    items = list(explore.rejected_items(iter_jsonl(run_dir.path(OUTCOME_PAIRS)), answers, cfg.explore.max_rejected))
    words = {p["id"]: p["solution"].split(" ") for p in problems}
    for start in range(0, len(items), batch):
        results = []
        for item in items[start : start + batch]:
            solution = completion(rng, words[item["id"]], "0", 1000, 3000)  # a rejected solution: steps of 200 chars
            steps = [solution[i : i + 200] for i in range(0, len(solution), 200)]
            pit = rng.randint(1, len(steps))
            probes = []
            for j in range(1, min(pit, len(steps) - 1) + 1):  # the last step is never probed
                texts = [completion(rng, words[item["id"]], answers[item["id"]], 500, 1500) for _ in range(k)]
                correct = [j < pit and rng.random() < 0.5 for _ in texts]
                probes.append({"step": j, "completions": [
                    {"text": t, "n_tokens": int(len(t) / CHARS_PER_TOKEN), "correct": c} for t, c in zip(texts, correct)
                ]})
            results.append({"key": item["key"], "id": item["id"], "rejected_idx": item["rejected_idx"], "steps": steps,
                            "cuts": list(range(1, len(steps) + 1)), "probes": probes, "pit": pit})
        write_jsonl(run_dir.path(PROBES) / f"part-{start // batch:05d}.jsonl", results)
    return {"rejected": len(items), "bytes": sum(f.stat().st_size for f in run_dir.path(PROBES).iterdir())}


def peak_mib(pid: int | str = "self") -> float:
    """A process's peak resident memory (VmHWM) in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def measure_stage(name: str, cfg_path: str, overrides: list[str], cpus: int) -> dict:
    """Run stage `name`'s `run` in this process (a fresh one); its wall time, the memory, its metrics."""
    cfg = load_config(cfg_path, overrides)
    run_dir = RunDir.of(cfg)
    before = rss_mib()
    if name == "select":
        ray.init(address="local", num_cpus=cpus, include_dashboard=False, runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    start, result = time.time(), {}
    if name == "explore":  # a first run writes every rejected solution to the engines' input files
        answers = {p["id"]: p["answer"] for p in get_task(cfg.task.name).load("train", cfg.task)}
        items = explore.rejected_items(iter_jsonl(run_dir.path(OUTCOME_PAIRS)), answers, cfg.explore.max_rejected)
        inputs_dir = run_dir.path(PROBES).parent / "inputs-measured"
        _, written = write_inputs(items, set(), "key", inputs_dir, cfg.engine.rows_per_batch)
        size = sum(f.stat().st_size for f in inputs_dir.iterdir())
        result["input_files"] = {"rows": written, "bytes": size, "wall_s": time.time() - start}
        shutil.rmtree(inputs_dir)
    metrics = {"sample": sample.run, "select": select.run, "explore": explore.run}[name](cfg, run_dir)
    result |= {"wall_s": time.time() - start, "driver_rss_before_mib": before, "driver_peak_rss_mib": peak_mib(), "metrics": metrics}
    if name == "select":  # the tasks ran in Ray workers: processes under this one's raylet, named `ray::...`
        workers = [p for p in psutil.Process().children(recursive=True) if p.cmdline()[:1] and p.cmdline()[0].startswith("ray::")]
        result["ray_worker_peak_rss_mib"] = max(peak_mib(p.pid) for p in workers)
        ray.shutdown()
    return result


def in_fresh_process(fn, *args):
    """`fn(*args)` in a new interpreter, so that its peak memory is its own."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def time_stage(name: str, cfg_path: str, overrides: list[str], cpus: int) -> dict:
    result = in_fresh_process(measure_stage, name, cfg_path, overrides, cpus)
    print(f"{name}: {result['wall_s']:.0f} s, driver {result['driver_rss_before_mib']:.0f} MiB before, peak "
          f"{result['driver_peak_rss_mib']:.0f} MiB" + (f", Ray workers' peak {result['ray_worker_peak_rss_mib']:.0f} MiB" if name == "select" else "")
          + f"; {result['metrics']}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/math-mistral-7b.yaml", help="a paper config (its task, n, k, batch size)")
    parser.add_argument("--problems", type=int, default=0, help="training problems (0: all)")
    parser.add_argument("--cpus", type=int, default=2, help="local CPUs for select's Ray tasks")
    parser.add_argument("--output-dir", default="runs/scale", help="where the synthetic run goes (replaced)")
    parser.add_argument("--out", default="", help="result file (default bench/results/scale-<problems>[-explore].json)")
    parser.add_argument("--explore-only", action="store_true", help="measure explore alone, reusing the samples and pairs in --output-dir")
    args = parser.parse_args()

    overrides = [f"output_dir={args.output_dir}", "name=paper-scale", f"sample.max_problems={args.problems}"]
    cfg = load_config(args.config, overrides)
    run_dir = RunDir.of(cfg)
    problems = get_task(cfg.task.name).load("train", cfg.task)[: args.problems or None]
    report = {"config": args.config, "problems": len(problems), "n": cfg.sample.n, "cpus_for_select": args.cpus, "stages": {}}
    if args.explore_only and not run_dir.path(OUTCOME_PAIRS).is_file():
        raise SystemExit(f"--explore-only: no {run_dir.path(OUTCOME_PAIRS)}; run `python bench/scale.py` first, with the same --problems")
    if not args.explore_only:
        shutil.rmtree(run_dir.root, ignore_errors=True)
        start = time.time()
        report["samples_written"] = write_samples(cfg, run_dir, problems)
        print(f"wrote {report['samples_written']} in {time.time() - start:.0f} s", flush=True)
        for name in ("sample", "select"):
            report["stages"][name] = time_stage(name, args.config, overrides, args.cpus)
    report["probes_written"] = write_probes(cfg, run_dir, problems)
    report["stages"]["explore"] = time_stage("explore", args.config, overrides, args.cpus)
    write_report(report, f"scale-{len(problems)}" + ("-explore" if args.explore_only else ""), args.out)


if __name__ == "__main__":
    main()
