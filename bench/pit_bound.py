"""How few tokens can any pit search spend? `linear`, `binary` and the best search order, played on true pits.

    python bench/pit_bound.py runs/deep runs/long runs/method-rft-samples/seed-0 --out bench/results/tuning/pit-bound.json

`bench/explore.py` measures the explorer with the model; this asks how far its goal (binary <= 0.5x linear's
generated tokens) can be reached at all on the same rejected solutions. No model runs: the true first wrong step
t of a rejected arith solution is known, so a search that reads every prefix's value without error (> 0 before
t, 0 from t on) plays out exactly, under the explorer's rules (a prefix holding the whole solution has value 0
without a probe). A probe of prefix j costs k completions about as long as the rest of the rejected solution,
k * (L - cut_j) tokens (the printed `linear` and `binary` figures can be checked against bench/explore.py's
measured ones). Searches:

- `linear`, `binary`: `PitSearch` itself.
- `weighted`: bisection by cost: the probe that minimises the expected cost of the search when every step of the
  bracket is equally likely to be the pit, so that cheaper (later) prefixes are probed first when that pays.
- `best`: per solution, the search with the least expected cost when its pit follows the distribution of true
  pits measured on these very solutions with as many steps. A rule for which prefix to probe next, knowing no
  more than a solution's steps, can hardly spend less: the bound that a better split rule could approach.

And on a model of longer solutions (`uniform_pits`: n equal steps, pits spread evenly), the step count from which
bisection pays half of linear's tokens.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools

from transformers import AutoTokenizer

from selfexplore.stages.explore import PitSearch, step_cuts
from selfexplore.tasks import get_task
from selfexplore.tasks.arith import first_wrong_step

from explore import rejected_solutions  # bench/explore.py
from record import write_report  # bench/record.py


@dataclasses.dataclass(frozen=True)
class SolutionShape:
    """What the searches' costs and outcome depend on, for one rejected solution."""

    cuts: list[int]
    """Tokens of the prefix that ends with each step."""
    length: int
    """Tokens of the whole solution."""
    free_zero: int
    """The first step whose prefix holds the whole solution: value 0 without a probe."""
    pit: int
    """The pit a search without errors finds: the true first wrong step, or `free_zero`."""

    def probe_cost(self, step: int, k: int) -> int:
        return k * (self.length - self.cuts[step - 1])


def solution_shape(item: dict, tokenizer, question: str) -> SolutionShape:
    text = tokenizer.decode(item["rejected_token_ids"], skip_special_tokens=True)
    cuts = step_cuts(tokenizer, item["rejected_token_ids"], get_task("arith").split_steps(text))
    free_zero = next(j for j, cut in enumerate(cuts, 1) if cut == cuts[-1])
    truth = first_wrong_step(question, text)
    return SolutionShape(cuts, len(item["rejected_token_ids"]), free_zero, free_zero if truth is None else min(truth, free_zero))


def play_pit_search(shape: SolutionShape, strategy: str, k: int) -> tuple[int, int]:
    """(probes, tokens) of `PitSearch` on error-free values."""
    search = PitSearch(len(shape.cuts), strategy)
    for j in range(shape.free_zero, len(shape.cuts) + 1):
        search.record(j, 0)
    probes = tokens = 0
    while (step := search.next_step()) is not None:
        search.record(step, int(step < shape.pit))
        probes, tokens = probes + 1, tokens + shape.probe_cost(step, k)
    assert search.pit == shape.pit, (search.pit, shape)
    return probes, tokens


def play_cost_tree(shape: SolutionShape, prior: collections.Counter, k: int) -> tuple[int, int]:
    """(probes, tokens) of the search tree with the least expected cost when the pit follows `prior` (weights by
    step); the pit is always in the bracket (lo, hi], lo known positive (0: the question), hi known 0."""

    def mass(lo: int, hi: int) -> float:
        return sum(prior[j] for j in range(lo + 1, hi + 1))

    @functools.cache
    def best(lo: int, hi: int) -> tuple[float, int | None]:
        if hi - lo <= 1 or mass(lo, hi) == 0:
            return 0.0, None
        choices = []
        for m in range(lo + 1, hi):
            left = mass(lo, m) / mass(lo, hi)
            choices.append((shape.probe_cost(m, k) + left * best(lo, m)[0] + (1 - left) * best(m, hi)[0], m))
        return min(choices)

    lo, hi, probes, tokens = 0, shape.free_zero, 0, 0
    while hi - lo > 1:
        step = best(lo, hi)[1] or lo + 1  # no prior mass left in the bracket: scan it
        probes, tokens = probes + 1, tokens + shape.probe_cost(step, k)
        lo, hi = (lo, step) if step >= shape.pit else (step, hi)
    assert hi == shape.pit
    return probes, tokens


def bound(run: str, max_rejected: int) -> dict:
    run_dir, cfg, questions, items = rejected_solutions(run, max_rejected, "pit_bound")
    tokenizer = AutoTokenizer.from_pretrained(run_dir.model_dir("sft"))  # every trained model keeps the base's tokenizer
    shapes = [solution_shape(item, tokenizer, questions[item["id"]]) for item in items]
    pits_by_steps = collections.defaultdict(collections.Counter)
    for shape in shapes:
        pits_by_steps[len(shape.cuts)][shape.pit] += 1
    k = cfg.explore.k
    played = {
        "linear": [play_pit_search(s, "linear", k) for s in shapes],
        "binary": [play_pit_search(s, "binary", k) for s in shapes],
        "weighted": [play_cost_tree(s, collections.Counter(range(1, s.free_zero + 1)), k) for s in shapes],
        "best": [play_cost_tree(s, pits_by_steps[len(s.cuts)], k) for s in shapes],
    }
    linear_tokens = sum(t for _, t in played["linear"])
    strategies = {
        name: {
            "probes_per_rejected": sum(p for p, _ in rows) / len(shapes),
            "generated_tokens_per_rejected": sum(t for _, t in rows) / len(shapes),
            "tokens_over_linear": sum(t for _, t in rows) / linear_tokens,
        }
        for name, rows in played.items()
    }
    for name, row in strategies.items():
        print(f"{run} k={k} {name}: {row}", flush=True)
    return {
        "rejected": len(shapes),
        "k": k,
        "steps_mean": sum(len(s.cuts) for s in shapes) / len(shapes),
        "pit_mean": sum(s.pit for s in shapes) / len(shapes),
        "pit_histogram": {str(j): c for j, c in sorted(collections.Counter(s.pit for s in shapes).items())},
        "strategies": strategies,
    }


def uniform_pits(step_counts: list[int], step_tokens: int = 10) -> dict:
    """binary's and weighted's tokens over linear's on a model of long solutions: n steps of equal length and an
    answer step, each of the n steps the pit of one solution. Where pits spread so, bisection pays from n of
    about 12 on; arith's pits lie early in short solutions."""
    ratios = {}
    for n in step_counts:
        cuts = [step_tokens * j for j in range(1, n + 2)]
        shapes = [SolutionShape(cuts, cuts[-1], n + 1, pit) for pit in range(1, n + 1)]
        linear = sum(play_pit_search(s, "linear", 1)[1] for s in shapes)
        ratios[str(n)] = {
            "binary_over_linear": sum(play_pit_search(s, "binary", 1)[1] for s in shapes) / linear,
            "weighted_over_linear": sum(play_cost_tree(s, collections.Counter(range(1, n + 2)), 1)[1] for s in shapes) / linear,
        }
    print(f"uniform pits, steps -> tokens over linear: {ratios}")
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="arith run directories with outcome pairs (select done)")
    parser.add_argument("--max-rejected", type=int, default=300, help="the first N rejected solutions, as bench/explore.py")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    report = {
        "command": f"python bench/pit_bound.py {' '.join(args.runs)} --max-rejected {args.max_rejected}",
        "runs": {run: bound(run, args.max_rejected) for run in args.runs},
        "uniform_pits": uniform_pits([4, 8, 12, 16, 20, 30]),
    }
    write_report(report, "pit-bound", args.out)


if __name__ == "__main__":
    main()
