"""`explore`: find the first pit of every rejected solution with the RFT model, and build step-level pairs.

A rejected solution of M steps has prefixes 1..M (prefix j = question + steps 1..j). From a probed prefix the
explorer samples k completions; the prefix's Monte-Carlo value is how many of them reach the gold answer.
The **first pit** is the first step j after which none of the k completions is correct. The step pair is

    prompt   = question + steps 1..j-1
    chosen   = the shortest correct completion sampled from that prompt (for j = 1: the outcome pair's chosen,
               itself a correct sample from the bare question)
    rejected = step j alone (a partial solution: DPO gives it no end-of-sequence token)

Search strategies: `linear` probes 1, 2, ... and stops at the first pit (the paper's; no 20-step cap);
`binary` bisects [1, M] assuming values only fall to zero once (OmegaPRM), then probes j-1 for a chosen if needed.
Every probe's value is kept in `step_values.jsonl` (process-reward labels, Math-Shepherd style).

All probes of one rejected solution run on the same engine (one Ray Data row), and each engine call batches the
current probes of every solution in its batch: rounds of lockstep search.

Outputs in `explore/`: `probes/part-*.jsonl` (per rejected solution: steps, probes, pit), `gpairs.jsonl`,
`step_values.jsonl`, `stats.json`.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from selfexplore.config import ExploreConfig, RunConfig
from selfexplore.engines import SamplingParams
from selfexplore.io import read_jsonl, write_json, write_jsonl
from selfexplore.rollout import EngineWorker, run_rollout
from selfexplore.tasks import get_task


class PitSearch:
    """Which step prefix to probe next, for one rejected solution of `n_steps` steps."""

    def __init__(self, n_steps: int, strategy: str):
        self.n_steps, self.strategy = n_steps, strategy
        self.values: dict[int, int] = {}  # step -> number of correct completions
        self.low, self.high = 1, n_steps  # binary: the first pit, if any, lies in [low, high]

    @property
    def pit(self) -> int | None:
        zeros = [j for j, v in self.values.items() if v == 0]
        if self.strategy == "binary":
            return self.low if self.values.get(self.low) == 0 else None
        return min(zeros) if zeros else None

    def next_step(self) -> int | None:
        if self.strategy == "linear":
            if self.pit is not None or len(self.values) == self.n_steps:
                return None
            return len(self.values) + 1
        if self.low < self.high:
            return (self.low + self.high) // 2
        if self.low not in self.values:
            return self.low
        # Found the pit at `low`: the chosen completion comes from prefix low-1, probe it if not yet done.
        if self.values[self.low] == 0 and self.low > 1 and self.low - 1 not in self.values:
            return self.low - 1
        return None

    def record(self, step: int, n_correct: int) -> None:
        self.values[step] = n_correct
        if self.strategy == "binary" and self.low < self.high:
            if n_correct == 0:
                self.high = step
            else:
                self.low = step + 1


def explore_rejected(items: list[dict], engine, task, cfg: ExploreConfig, seed: int) -> list[dict]:
    """Run the pit search of every item (a rejected solution) in lockstep rounds of batched engine calls."""
    steps = [task.split_steps(item["rejected"]) for item in items]
    searches = [PitSearch(len(s), cfg.strategy) for s in steps]
    probes: list[dict[int, list[dict]]] = [{} for _ in items]
    for round_idx in range(sum(len(s) for s in steps) + 1):
        requests = [(i, j) for i, search in enumerate(searches) if (j := search.next_step()) is not None]
        if not requests:
            break
        # prefix j ends after step j; spans are character offsets into the rejected solution
        prefixes = [items[i]["rejected"][: steps[i][j - 1][1]] for i, j in requests]
        params = SamplingParams(
            n=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=seed + round_idx
        )
        outputs = engine.generate([items[i]["prompt"] + p for (i, _), p in zip(requests, prefixes)], params)
        for (i, j), prefix, completions in zip(requests, prefixes, outputs):
            # Grade the whole solution (prefix + completion): the answer may already stand in the prefix.
            graded = [{"text": c.text, "correct": task.grade(prefix + c.text, items[i]["answer"])} for c in completions]
            probes[i][j] = graded
            searches[i].record(j, sum(g["correct"] for g in graded))
    return [
        {
            "key": item["key"],
            "id": item["id"],
            "rejected_idx": item["rejected_idx"],
            "steps": steps[i],
            "probes": [{"step": j, "completions": probes[i][j]} for j in sorted(probes[i])],
            "pit": searches[i].pit,
        }
        for i, item in enumerate(items)
    ]


class ExploreWorker(EngineWorker):
    def process(self, items: list[dict]) -> list[dict]:
        cfg = self.settings["explore_cfg"]
        return explore_rejected(items, self.engine, self.task, cfg, cfg.seed + zlib.crc32(items[0]["key"].encode()))


def rejected_items(pairs: list[dict], answers: dict[str, str], limit: int = 0) -> list[dict]:
    """One exploration item per outcome pair (each rejected solution is used by one pair only)."""
    items, per_problem = [], {}
    for pair in pairs:
        idx = per_problem[pair["id"]] = per_problem.get(pair["id"], -1) + 1
        items.append(
            {
                "key": f"{pair['id']}/{idx}",
                "id": pair["id"],
                "rejected_idx": idx,
                "prompt": pair["prompt"],
                "chosen": pair["chosen"],
                "rejected": pair["rejected"],
                "answer": answers[pair["id"]],
            }
        )
    return items[:limit] if limit else items


def build_step_pairs(items: list[dict], results: list[dict]) -> tuple[list[dict], dict]:
    """Step pairs from the pits; per problem, no chosen is used twice and no (prompt, rejected) repeats."""
    pairs, used_chosen, used_rejected = [], set(), set()
    counts = {"no_pit": 0, "no_chosen": 0, "duplicate": 0}
    for item, result in zip(items, results):
        pit = result["pit"]
        if pit is None:  # every prefix can still reach the answer: not a mistake in the explorer's eyes
            counts["no_pit"] += 1
            continue
        start, end = result["steps"][pit - 1]
        prompt = item["prompt"] + item["rejected"][:start]
        rejected = item["rejected"][start:end]
        if pit == 1:
            candidates = [item["chosen"]]
        else:
            before = next(p for p in result["probes"] if p["step"] == pit - 1)
            candidates = sorted((c["text"] for c in before["completions"] if c["correct"]), key=len)
        candidates = [c for c in candidates if (item["id"], c) not in used_chosen]
        if not candidates:
            counts["no_chosen"] += 1
            continue
        if (item["id"], prompt, rejected) in used_rejected:
            counts["duplicate"] += 1
            continue
        used_chosen.add((item["id"], candidates[0]))
        used_rejected.add((item["id"], prompt, rejected))
        pairs.append(
            {"prompt": prompt, "chosen": candidates[0], "rejected": rejected, "id": item["id"], "kind": "step", "pit_step": pit}
        )
    return pairs, counts


def step_values(results: list[dict], k: int) -> list[dict]:
    return [
        {
            "id": r["id"],
            "rejected_idx": r["rejected_idx"],
            "step": p["step"],
            "k": k,
            "n_correct": sum(c["correct"] for c in p["completions"]),
        }
        for r in results
        for p in r["probes"]
    ]


def run(cfg: RunConfig, run_dir: Path) -> dict:
    out = run_dir / "explore"
    answers = {p["id"]: p["answer"] for p in get_task(cfg.task.name).load("train", cfg.task)}
    items = rejected_items(read_jsonl(run_dir / "sample" / "pairs.jsonl"), answers, cfg.explore.max_rejected)
    results = run_rollout(
        items,
        ExploreWorker,
        dict(model_dir=str(run_dir / "rft" / "model"), engine_cfg=cfg.engine, task_name=cfg.task.name, explore_cfg=cfg.explore),
        cfg.engine,
        out / "probes",
        key="key",
        what="rejected solutions explored",
    )
    pairs, dropped = build_step_pairs(items, results)
    values = step_values(results, cfg.explore.k)
    write_jsonl(out / "gpairs.jsonl", pairs)
    write_jsonl(out / "step_values.jsonl", values)
    pits = [r["pit"] for r in results if r["pit"] is not None]
    stats = {
        "rejected": len(items),
        "step_pairs": len(pairs),
        "dropped": dropped,
        "probes": len(values),
        "probes_per_rejected": len(values) / max(1, len(items)),
        "pit_histogram": {str(j): pits.count(j) for j in sorted(set(pits))},
    }
    write_json(out / "stats.json", stats)
    return stats
