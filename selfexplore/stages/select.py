"""`select`: the RFT set and the outcome pairs, chosen from the samples (seconds; never samples again).

Writes `select/rft.jsonl` ({id, prompt, completion}: distinct correct samples, at most `max_rft_per_problem` per
problem) and `select/pairs.jsonl` (outcome pairs D_pair {prompt, chosen, rejected, rejected_token_ids, id,
kind: "outcome", pit_step: null}), both in problem order.

Unlike the original code, selection is deterministic (sample order, never `set` order) and rejected solutions
are only complete ones with an answer: truncated or answer-less samples are junk negatives, not mistakes.
"""

from __future__ import annotations

import difflib

from selfexplore.config import RunConfig
from selfexplore.io import write_jsonl
from selfexplore.rollout import iter_results
from selfexplore.run_dir import OUTCOME_PAIRS, RFT_SET, SAMPLES, RunDir
from selfexplore.tasks import get_task


def build_rft_set(samples: list[dict], max_per_problem: int) -> list[dict]:
    """Distinct correct solutions of one problem, in sample order, at most `max_per_problem`."""
    seen, rows = set(), []
    for s in samples:
        text = s["completion"].strip()
        if s["correct"] and text not in seen and len(rows) < max_per_problem:
            seen.add(text)
            rows.append({"id": s["id"], "prompt": s["prompt"], "completion": text})
    return rows


def build_outcome_pairs(samples: list[dict], rft_rows: list[dict]) -> list[dict]:
    """Pair each correct solution with the least similar complete wrong one; each wrong one is used once."""
    pool: dict[str, list[int]] = {}  # wrong solution text -> the tokens that produced it, in sample order
    for s in samples:
        text = s["completion"].strip()
        complete = s["finish_reason"] == "stop" and s["pred"] is not None
        if not s["correct"] and complete and text not in pool:
            pool[text] = s["token_ids"]
    pairs = []
    for row in rft_rows:
        if not pool:
            break
        rejected = min(pool, key=lambda text: difflib.SequenceMatcher(None, row["completion"], text).ratio())
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": row["completion"],
                "rejected": rejected,
                "rejected_token_ids": pool.pop(rejected),
                "id": row["id"],
                "kind": "outcome",
                "pit_step": None,
            }
        )
    return pairs


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    # Shards come back in completion order; the selections are written in problem order.
    order = {p["id"]: i for i, p in enumerate(get_task(cfg.task.name).load("train", cfg.task))}
    per_problem = {}
    for result in iter_results(run_dir.path(SAMPLES)):
        problem_rft = build_rft_set(result["samples"], cfg.select.max_rft_per_problem)
        per_problem[order[result["id"]]] = (problem_rft, build_outcome_pairs(result["samples"], problem_rft))
    rft_rows = [row for i in sorted(per_problem) for row in per_problem[i][0]]
    pairs = [pair for i in sorted(per_problem) for pair in per_problem[i][1]]
    write_jsonl(run_dir.path(RFT_SET), rft_rows)
    write_jsonl(run_dir.path(OUTCOME_PAIRS), pairs)
    return {"rft_rows": len(rft_rows), "outcome_pairs": len(pairs), "problems_with_pairs": len({p["id"] for p in pairs})}
