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

Prefixes live in token space: a rejected solution is the token ids the model sampled, cut at step boundaries, so
a probe continues exactly the tokens the model produced (re-tokenising a text prefix gives other tokens with BPE
and SentencePiece tokenisers). A step boundary inside a token moves to the start of that token. All probes of one
rejected solution run on the same engine (one Ray Data row), so the engine's prefix cache reuses their common
prefix, and each engine call batches the current probes of every solution in its batch: rounds of lockstep search.
Each probe is seeded by its solution and step alone.

Outputs in `explore/`: `probes/part-*.jsonl` (per rejected solution: steps, probes, pit), `gpairs.jsonl`,
`step_values.jsonl`, `stats.json`.
"""

from __future__ import annotations

from pathlib import Path

from selfexplore.config import ExploreConfig, RunConfig
from selfexplore.engines import SamplingParams, derive_seed
from selfexplore.io import read_jsonl, write_json, write_jsonl
from selfexplore.rollout import EngineWorker, iter_results, run_rollout
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


def step_cuts(tokenizer, token_ids: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """For each step, the number of tokens of the prefix that ends with it.

    The cut for a step ending at character `end` of the decoded solution is the most tokens whose text ends at or
    before `end` (found by bisection: decoded length grows with the number of tokens).
    """
    def text_length(n_tokens: int) -> int:
        return len(tokenizer.decode(token_ids[:n_tokens], skip_special_tokens=True))

    cuts, low = [], 0
    for _, end in spans:
        high = len(token_ids)
        while low < high:
            mid = (low + high + 1) // 2
            if text_length(mid) <= end:
                low = mid
            else:
                high = mid - 1
        cuts.append(low)
    return cuts


def explore_rejected(items: list[dict], engine, task, cfg: ExploreConfig) -> list[dict]:
    """Run the pit search of every item (a rejected solution) in lockstep rounds of batched engine calls."""
    tokenizer = engine.tokenizer
    solutions = [tokenizer.decode(item["rejected_token_ids"], skip_special_tokens=True) for item in items]
    cuts = [step_cuts(tokenizer, item["rejected_token_ids"], task.split_steps(text)) for item, text in zip(items, solutions)]
    prompt_ids = [engine.encode(item["prompt"]) for item in items]
    # prefix_texts[i][j]: the text of the first j steps' tokens (j = 0: empty)
    prefix_texts = [
        [""] + [tokenizer.decode(item["rejected_token_ids"][:cut], skip_special_tokens=True) for cut in item_cuts]
        for item, item_cuts in zip(items, cuts)
    ]
    searches = [PitSearch(len(c), cfg.strategy) for c in cuts]
    probes: list[dict[int, list[dict]]] = [{} for _ in items]
    while requests := [(i, j) for i, search in enumerate(searches) if (j := search.next_step()) is not None]:
        outputs = engine.generate(
            [prompt_ids[i] + items[i]["rejected_token_ids"][: cuts[i][j - 1]] for i, j in requests],
            [
                SamplingParams(
                    n=cfg.k,
                    temperature=cfg.temperature,
                    top_p=cfg.top_p,
                    max_tokens=cfg.max_tokens,
                    seed=derive_seed(cfg.seed, "explore", items[i]["key"], j),
                )
                for i, j in requests
            ],
        )
        for (i, j), completions in zip(requests, outputs):
            # Grade the whole solution (prefix + completion): the answer may already stand in the prefix.
            prefix = prefix_texts[i][j]
            graded = [{"text": c.text, "correct": task.grade(prefix + c.text, items[i]["answer"])} for c in completions]
            probes[i][j] = graded
            searches[i].record(j, sum(g["correct"] for g in graded))
    return [
        {
            "key": item["key"],
            "id": item["id"],
            "rejected_idx": item["rejected_idx"],
            # Step j's text as the tokens cut it: the DPO pair's rejected step, and its prompt's tail.
            "steps": [texts[j][len(texts[j - 1]) :] for j in range(1, len(texts))],
            "cuts": cuts[i],
            "probes": [{"step": j, "completions": probes[i][j]} for j in sorted(probes[i])],
            "pit": searches[i].pit,
        }
        for i, (item, texts) in enumerate(zip(items, prefix_texts))
    ]


class ExploreWorker(EngineWorker):
    def process(self, items: list[dict]) -> list[dict]:
        return explore_rejected(items, self.engine, self.task, self.settings["explore_cfg"])


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
                "rejected_token_ids": pair["rejected_token_ids"],
                "answer": answers[pair["id"]],
            }
        )
    return items[:limit] if limit else items


def pit_summary(result: dict) -> dict:
    """What pairing and the step values need of one explored solution: a few strings, not every completion."""
    pit = result["pit"]
    before = [p for p in result["probes"] if pit is not None and p["step"] == pit - 1]
    return {
        "key": result["key"],
        "id": result["id"],
        "rejected_idx": result["rejected_idx"],
        "pit": pit,
        "values": [[p["step"], sum(c["correct"] for c in p["completions"])] for p in result["probes"]],
        "steps_before_pit": "".join(result["steps"][: pit - 1]) if pit is not None else None,
        "pit_step": result["steps"][pit - 1] if pit is not None else None,
        # correct completions from the prefix before the pit, shortest first: the step pair's chosen
        "candidates": sorted((c["text"] for p in before for c in p["completions"] if c["correct"]), key=len),
    }


def build_step_pairs(items: list[dict], summaries: list[dict]) -> tuple[list[dict], dict]:
    """Step pairs from the pits; per problem, no chosen is used twice and no (prompt, rejected) repeats."""
    pairs, used_chosen, used_rejected = [], set(), set()
    counts = {"no_pit": 0, "no_chosen": 0, "duplicate": 0, "empty_step": 0}
    for item, summary in zip(items, summaries):
        pit = summary["pit"]
        if pit is None:  # every prefix can still reach the answer: not a mistake in the explorer's eyes
            counts["no_pit"] += 1
            continue
        prompt = item["prompt"] + summary["steps_before_pit"]
        rejected = summary["pit_step"]
        if not rejected.strip():  # two step ends inside one token: the pit step has no tokens of its own
            counts["empty_step"] += 1
            continue
        candidates = [item["chosen"]] if pit == 1 else summary["candidates"]
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


def step_values(summaries: list[dict], k: int) -> list[dict]:
    return [
        {"id": s["id"], "rejected_idx": s["rejected_idx"], "step": step, "k": k, "n_correct": n_correct}
        for s in summaries
        for step, n_correct in s["values"]
    ]


def run(cfg: RunConfig, run_dir: Path) -> dict:
    out = run_dir / "explore"
    answers = {p["id"]: p["answer"] for p in get_task(cfg.task.name).load("train", cfg.task)}
    items = rejected_items(read_jsonl(run_dir / "sample" / "pairs.jsonl"), answers, cfg.explore.max_rejected)
    worker_kwargs = dict(model_dir=str(run_dir / "rft" / "model"), engine_cfg=cfg.engine, task_name=cfg.task.name, explore_cfg=cfg.explore)
    run_rollout(items, ExploreWorker, worker_kwargs, cfg.engine, out / "probes", key="key", what="rejected solutions explored")
    # One shard of probes in memory at a time; each solution kept as its summary, in item order.
    index = {item["key"]: i for i, item in enumerate(items)}
    summaries: list[dict] = [{}] * len(items)
    for result in iter_results(out / "probes"):
        summaries[index[result["key"]]] = pit_summary(result)
    pairs, dropped = build_step_pairs(items, summaries)
    values = step_values(summaries, cfg.explore.k)
    write_jsonl(out / "gpairs.jsonl", pairs)
    write_jsonl(out / "step_values.jsonl", values)
    pits = [s["pit"] for s in summaries if s["pit"] is not None]
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
