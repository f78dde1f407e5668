"""`sample`: N solutions per training problem from the SFT model, graded; the RFT set and the outcome pairs.

Outputs in `sample/`:
- `samples/part-*.jsonl`  one record per problem with its N graded samples and their token ids (the resume unit)
- `rft.jsonl`             {id, prompt, completion}: distinct correct samples, at most `max_rft_per_problem` each
- `pairs.jsonl`           outcome pairs D_pair {prompt, chosen, rejected, id, kind: "outcome", pit_step: null}
- `stats.json`            accuracy per sample, pass@N, counts

Unlike the original code, selection is deterministic (sample order, never `set` order) and rejected solutions
are only complete ones with an answer: truncated or answer-less samples are junk negatives, not mistakes.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from selfexplore.config import RunConfig
from selfexplore.engines import SamplingParams, derive_seed
from selfexplore.io import write_json, write_jsonl
from selfexplore.rollout import EngineWorker, iter_results, run_rollout
from selfexplore.tasks import format_prompt, get_task


class SampleWorker(EngineWorker):
    def process(self, problems: list[dict]) -> list[dict]:
        cfg = self.settings["sample_cfg"]
        prompts = [format_prompt(p["question"]) for p in problems]
        params = [
            # Seeded by the problem alone: the same samples with any batch, engine count or resume point.
            SamplingParams(
                n=cfg.n,
                temperature=cfg.temperature,
                top_p=cfg.top_p,
                max_tokens=cfg.max_tokens,
                seed=derive_seed(cfg.seed, "sample", p["id"]),
            )
            for p in problems
        ]
        outputs = self.engine.generate([self.engine.encode(prompt) for prompt in prompts], params)
        results = []
        for problem, prompt, completions in zip(problems, prompts, outputs):
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
                    # Exploration continues exactly these tokens (re-tokenising the text can give others).
                    "token_ids": c.token_ids,
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


def run(cfg: RunConfig, run_dir: Path) -> dict:
    out = run_dir / "sample"
    problems = get_task(cfg.task.name).load("train", cfg.task)
    problems = problems[: cfg.sample.max_problems or None]
    worker_kwargs = dict(model_dir=str(run_dir / "sft" / "model"), engine_cfg=cfg.engine, task_name=cfg.task.name, sample_cfg=cfg.sample)
    run_rollout(problems, SampleWorker, worker_kwargs, cfg.engine, out / "samples", key="id", what="problems sampled")
    # One problem's samples in memory at a time; the selections are small and written in problem order.
    order = {p["id"]: i for i, p in enumerate(problems)}
    per_problem, stats = {}, SampleStats()
    for result in iter_results(out / "samples"):
        problem_rft = build_rft_set(result["samples"], cfg.sample.max_rft_per_problem)
        per_problem[order[result["id"]]] = (problem_rft, build_outcome_pairs(result["samples"], problem_rft))
        stats.add(result["samples"])
    rft_rows = [row for i in sorted(per_problem) for row in per_problem[i][0]]
    pairs = [pair for i in sorted(per_problem) for pair in per_problem[i][1]]
    write_jsonl(out / "rft.jsonl", rft_rows)
    write_jsonl(out / "pairs.jsonl", pairs)
    summary = stats.summary(rft_rows, pairs)
    write_json(out / "stats.json", summary)
    return summary


class SampleStats:
    """Counts over the samples, gathered one problem at a time."""

    def __init__(self):
        self.problems = self.samples = self.correct = self.solved = self.truncated = self.tokens = 0

    def add(self, samples: list[dict]) -> None:
        self.problems += 1
        self.samples += len(samples)
        self.correct += sum(s["correct"] for s in samples)
        self.solved += any(s["correct"] for s in samples)
        self.truncated += sum(s["finish_reason"] == "length" for s in samples)
        self.tokens += sum(s["n_tokens"] for s in samples)

    def summary(self, rft_rows: list[dict], pairs: list[dict]) -> dict:
        return {
            "problems": self.problems,
            "samples": self.samples,
            "sample_accuracy": self.correct / max(1, self.samples),
            "pass_at_n": self.solved / max(1, self.problems),
            "problems_without_correct": self.problems - self.solved,
            "truncated_samples": self.truncated,
            "generated_tokens": self.tokens,
            "rft_rows": len(rft_rows),
            "outcome_pairs": len(pairs),
        }
