"""Grading: gold answers of every data set, and MATH grading throughput with pathological inputs.

    python bench/grade.py                       # ../shared/data, 10,000 MATH predictions, 2 threads, 5 s cap
    python bench/grade.py --items 2000 --timeout 2

1. Gold answers: for GSM8K train/test and MATH train/test, how many rows yield a gold answer, whether the answer
   extracted from every gold solution equals it, and whether grading every gold solution against its own answer
   gives 100%. GSM8K is also checked against the original evaluation's `int(response.split('#### ')[1])`. For
   MATH, how many gold answers math-verify parses into a sympy object (the rest compare as normalised text).
2. Throughput: 10,000 MATH predictions graded by `selfexplore.tasks.math.grade` from 2 threads (2 cores):
   gold solutions, the gold answer respelled (`\\displaystyle x`: equal, but only sympy can tell), perturbed answers
   (a digit changed: not equal) and pathological completions (10,000-character expressions, 2,000-deep nested
   braces, power towers like 9^{9^{9}}, unclosed boxes, code). Reports items/s, the slowest item, every item over
   the cap, and accuracy per kind. Writes `bench/results/grade.json`.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import platform
import random
import re
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

from selfexplore.config import TaskConfig
from selfexplore.io import write_json
from selfexplore.tasks import gsm8k
from selfexplore.tasks import math as math_task

ROOT = Path(__file__).resolve().parents[1]


def gold_checks(data: Path) -> dict:
    results = {}
    cfg = TaskConfig(name="gsm8k", train_path=str(data / "GSM8K_train.jsonl"), test_path=str(data / "GSM8K_test.jsonl"))
    for split in ("train", "test"):
        raw = [json.loads(line) for line in open(data / f"GSM8K_{split}.jsonl")]
        problems = gsm8k.load(split, cfg)
        results[f"GSM8K {split}"] = {
            "rows": len(raw),
            "problems": len(problems),
            # The original evaluation's gold: int(response.split('#### ')[1].replace(',', '')).
            "gold_equals_original_eval": sum(
                p["answer"] == str(int(r["response"].split("#### ")[1].replace(",", "")))
                for p, r in zip(problems, raw)
            ),
            "extracted_from_solution": sum(gsm8k.extract_answer(p["solution"]) == p["answer"] for p in problems),
            "graded_correct": sum(gsm8k.grade(p["solution"], p["answer"]) for p in problems),
        }
    from selfexplore.tasks.symbolic import parse_answer  # imports sympy: only to count what it understands

    cfg = TaskConfig(name="math", train_path=str(data / "MATH_train.jsonl"), test_path=str(data / "MATH_test.jsonl"))
    for split in ("train", "test"):
        rows = sum(1 for line in open(data / f"MATH_{split}.jsonl") if line.strip())
        problems = math_task.load(split, cfg)
        parsed = [parse_answer(p["answer"]) for p in problems]
        results[f"MATH {split}"] = {
            "rows": rows,
            "problems": len(problems),
            "extracted_from_solution": sum(math_task.extract_answer(p["solution"]) == p["answer"] for p in problems),
            "extracted_from_answer_line": sum(
                math_task.extract_answer(p["solution"].rsplit("\n", 1)[-1]) == p["answer"] for p in problems),
            "graded_correct": sum(math_task.grade(p["solution"], p["answer"]) for p in problems),
            "parsed_by_sympy": sum(bool(result) and not isinstance(result[0], str) for result in parsed),
            "not_parsed_examples": [p["answer"] for p, result in zip(problems, parsed)
                                    if not result or isinstance(result[0], str)][:15],
        }
    return results


def pathological(rng: random.Random, i: int) -> str:
    """Completions that must neither stall the grader nor run anything."""
    kind = i % 12
    if kind == 0:
        return "The answer is " + "+".join(str(rng.randint(1, 99)) for _ in range(3400))[:10_000]
    if kind == 1:
        depth = rng.choice([200, 500, 1000, 2000])
        return "\\boxed{" + "{" * depth + "1" + "}" * depth + "}"
    if kind == 2:
        return "\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}"
    if kind == 3:
        return "The answer is " + "(" * 1000 + "x" + ")" * 1000
    if kind == 4:
        return f"\\boxed{{{rng.randint(5, 9)}^{{{rng.randint(5, 9)}^{{{rng.randint(7, 9)}}}}}}}"
    if kind == 5:
        return f"\\boxed{{({rng.randint(10, 99)}^{{6}})!}}"
    if kind == 6:
        return "\\boxed{" + "".join(rng.choice("0123456789") for _ in range(10_000)) + "}"
    if kind == 7:
        return "\\boxed{" * 5000 + "1"
    if kind == 8:
        return f"\\boxed{{__import__('os').system('touch /tmp/selfexplore-pwned-{i}')}}"
    if kind == 9:
        return "Let us think. " * 7000 + "\\boxed{" + str(rng.randint(0, 9)) + "}"
    if kind == 10:
        return "\\boxed{" + "".join(rng.choice("\\{}^_$&%#x1+") for _ in range(10_000)) + "}"
    return "The answer is " + "x^{" * 2000 + "2" + "}" * 2000


def perturbed(answer: str, rng: random.Random) -> str:
    digits = [m.start() for m in re.finditer(r"\d", answer)]
    if digits:
        at = rng.choice(digits)
        return answer[:at] + str((int(answer[at]) + rng.randint(1, 9)) % 10) + answer[at + 1 :]
    return answer + "+1"


def predictions(data: Path, count: int, seed: int) -> list[tuple[str, str, str, bool | None]]:
    """(kind, completion, gold, expected) — expected None for pathological items (only time and safety matter)."""
    rng = random.Random(seed)
    cfg = TaskConfig(name="math", train_path=str(data / "MATH_train.jsonl"), test_path=str(data / "MATH_test.jsonl"))
    problems = math_task.load("test", cfg) + math_task.load("train", cfg)
    rng.shuffle(problems)
    shares = {"gold": 0.3, "respelled": 0.25, "perturbed": 0.35, "pathological": 0.1}
    items = []
    for kind, share in shares.items():
        for i in range(round(count * share)):
            p = problems[len(items) % len(problems)]
            if kind == "gold":
                items.append((kind, p["solution"], p["answer"], True))
            elif kind == "respelled":
                respelled = f"So we get this.\nThe answer is $\\displaystyle {p['answer']}$."
                items.append((kind, respelled, p["answer"], True))
            elif kind == "perturbed":
                items.append((kind, f"The answer is {perturbed(p['answer'], rng)}", p["answer"], False))
            else:
                items.append((kind, pathological(rng, i), p["answer"], None))
    rng.shuffle(items)
    return items


class CutReasons(logging.Handler):
    """Counts the grader's cap warnings by what the call was waiting for (a free worker, its start, the result)."""

    def __init__(self):
        super().__init__()
        self.counts = collections.Counter()

    def emit(self, record):
        if found := re.search(r"waited \S+ for ([a-z ]+)", record.getMessage()):
            self.counts[found[1]] += 1


def throughput(items: list, timeout: float, threads: int) -> dict:
    reasons = CutReasons()
    logging.getLogger("selfexplore.tasks.math").addHandler(reasons)

    def run(item):
        kind, completion, gold, expected = item
        started = time.perf_counter()
        correct = math_task.grade(completion, gold, timeout=timeout)
        return kind, expected, correct, time.perf_counter() - started, completion

    math_task.grade("\\boxed{\\frac{1}{2}}", "0.5", timeout=timeout)  # start the first worker outside the clock
    started = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        graded = list(pool.map(run, items))
    wall = time.perf_counter() - started
    by_kind = {}
    for kind in sorted({g[0] for g in graded}):
        rows = [g for g in graded if g[0] == kind]
        times = sorted(g[3] for g in rows)
        expected = [g for g in rows if g[1] is not None]
        by_kind[kind] = {
            "items": len(rows),
            "as_expected": sum(g[1] == g[2] for g in expected) if expected else None,
            "graded_correct": sum(g[2] for g in rows),
            "mean_ms": round(1000 * statistics.mean(times), 2),
            "p99_ms": round(1000 * times[int(0.99 * (len(times) - 1))], 2),
            "max_s": round(times[-1], 3),
        }
    slowest = max(graded, key=lambda g: g[3])
    over = [g for g in graded if g[3] > timeout]
    return {
        "items": len(graded),
        "threads": threads,
        "cap_s": timeout,
        "wall_s": round(wall, 1),
        "items_per_s": round(len(graded) / wall, 1),
        "slowest_item": {"kind": slowest[0], "seconds": round(slowest[3], 3), "completion": slowest[4][:80]},
        "items_over_cap": [{"kind": g[0], "seconds": round(g[3], 3), "completion": g[4][:80]} for g in over],
        "cut_at_cap_waiting_for": dict(reasons.counts),
        "by_kind": by_kind,
        "code_ran": any(Path(f"/tmp/selfexplore-pwned-{i}").exists() for i in range(len(items))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--timeout", type=float, default=5.0, help="per-item cap in seconds (task.grade_timeout)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "grade.json")
    args = parser.parse_args()

    started = time.perf_counter()
    golds = gold_checks(args.data)
    gold_s = time.perf_counter() - started
    for name, figures in golds.items():
        print(name, json.dumps(figures))
    print(f"gold checks: {gold_s:.1f}s")
    result = throughput(predictions(args.data, args.items, args.seed), args.timeout, args.threads)
    print(json.dumps(result, indent=2))
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    write_json(args.out, {"machine": machine, "gold": golds, "gold_checks_s": round(gold_s, 1), "throughput": result})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
