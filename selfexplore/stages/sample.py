"""`sample`: N solutions per training problem from the SFT model, graded; the RFT set and the outcome pairs.

Outputs in `sample/`:
- `samples/part-*.jsonl`  one record per problem with its N graded samples (the resume unit)
- `rft.jsonl`             {id, prompt, completion}: distinct correct samples, at most `max_rft_per_problem` each
- `pairs.jsonl`           outcome pairs D_pair {prompt, chosen, rejected, id, kind: "outcome", pit_step: null}
- `stats.json`            accuracy per sample, pass@N, counts

Unlike the original code, selection is deterministic (sample order, never `set` order) and rejected solutions
are only complete ones with an answer: truncated or answer-less samples are junk negatives, not mistakes.
"""

from __future__ import annotations

import difflib
import zlib
from pathlib import Path

from selfexplore.config import RunConfig
from selfexplore.engines import SamplingParams
from selfexplore.io import write_json, write_jsonl
from selfexplore.rollout import EngineWorker, run_rollout
from selfexplore.tasks import format_prompt, get_task


class SampleWorker(EngineWorker):
    def process(self, problems: list[dict]) -> list[dict]:
        cfg = self.settings["sample_cfg"]
        params = SamplingParams(
            n=cfg.n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_tokens=cfg.max_tokens,
            seed=cfg.seed + zlib.crc32(problems[0]["id"].encode()),
        )
        prompts = [format_prompt(p["question"]) for p in problems]
        results = []
        for problem, prompt, completions in zip(problems, prompts, self.engine.generate(prompts, params)):
            samples = [
                {
                    "id": problem["id"],
                    "sample_idx": idx,
                    "prompt": prompt,
                    "completion": c.text,
                    "pred": self.task.extract_answer(c.text),
                    "correct": self.task.grade(c.text, problem["answer"]),
                    "finish_reason": c.finish_reason,
                    "n_tokens": c.n_tokens,
                }
                for idx, c in enumerate(completions)
            ]
            results.append({"id": problem["id"], "samples": samples})
        return results


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
    pool, seen = [], set()
    for s in samples:
        text = s["completion"].strip()
        complete = s["finish_reason"] == "stop" and s["pred"] is not None
        if not s["correct"] and complete and text not in seen:
            seen.add(text)
            pool.append(text)
    pairs = []
    for row in rft_rows:
        if not pool:
            break
        rejected = min(pool, key=lambda text: difflib.SequenceMatcher(None, row["completion"], text).ratio())
        pool.remove(rejected)
        pairs.append(
            {
                "prompt": row["prompt"],
                "chosen": row["completion"],
                "rejected": rejected,
                "id": row["id"],
                "kind": "outcome",
                "pit_step": None,
            }
        )
    return pairs


def run(cfg: RunConfig, run_dir: Path) -> dict:
    out = run_dir / "sample"
    problems = get_task(cfg.task.name).load("train", cfg.task)
    problems = problems[: cfg.sample.max_problems or None]
    results = run_rollout(
        problems,
        SampleWorker,
        dict(model_dir=str(run_dir / "sft" / "model"), engine_cfg=cfg.engine, task_name=cfg.task.name, sample_cfg=cfg.sample),
        cfg.engine,
        out / "samples",
        key="id",
        what="problems sampled",
    )
    rft_rows, pairs = [], []
    for result in results:
        problem_rft = build_rft_set(result["samples"], cfg.sample.max_rft_per_problem)
        rft_rows += problem_rft
        pairs += build_outcome_pairs(result["samples"], problem_rft)
    write_jsonl(out / "rft.jsonl", rft_rows)
    write_jsonl(out / "pairs.jsonl", pairs)
    stats = sample_stats(results, rft_rows, pairs)
    write_json(out / "stats.json", stats)
    return stats


def sample_stats(results: list[dict], rft_rows: list[dict], pairs: list[dict]) -> dict:
    samples = [s for r in results for s in r["samples"]]
    solved = sum(any(s["correct"] for s in r["samples"]) for r in results)
    return {
        "problems": len(results),
        "samples": len(samples),
        "sample_accuracy": sum(s["correct"] for s in samples) / max(1, len(samples)),
        "pass_at_n": solved / max(1, len(results)),
        "problems_without_correct": len(results) - solved,
        "truncated_samples": sum(s["finish_reason"] == "length" for s in samples),
        "generated_tokens": sum(s["n_tokens"] for s in samples),
        "rft_rows": len(rft_rows),
        "outcome_pairs": len(pairs),
    }

