"""`eval-<model>`: greedy decoding of one trained model on the validation and test sets, graded with the task's
grader.

One stage per model (`eval-sft`, `eval-rft`, ...), so retraining one model re-evaluates only that one. Both splits
go through one rollout, so the engines load once per model (on a GPU cluster a vLLM engine takes a minute or more
to start). Per split, writes `eval/<model>/<split>.jsonl` (one row per problem, in the split's order) and
`<split>.summary.json` (accuracy with a 95% Wilson interval, and per level and subject where the task has them).
Settings are tuned on the validation split; the test split is what the report gives. `selfexplore eval --endpoint`
writes the same rows and summary from any OpenAI-compatible server.
"""

from __future__ import annotations

import math
from pathlib import Path

from selfexplore.config import EngineConfig, RunConfig
from selfexplore.engines import SamplingParams
from selfexplore.io import write_json, write_jsonl
from selfexplore.rollout import EngineWorker, ordered_results, rollout_nodes, run_rollout
from selfexplore.run_dir import RunDir
from selfexplore.tasks import format_prompt, get_task

GROUP_KEYS = ("level", "subject")


def result_row(problem: dict, completion: str, n_tokens: int, finish_reason: str, task) -> dict:
    """The per-problem record shared by in-cluster and HTTP evaluation."""
    row = {
        "id": problem["id"],
        "question": problem["question"],
        "answer": problem["answer"],
        "completion": completion,
        "pred": task.extract_answer(completion),
        "correct": task.grade(completion, problem["answer"]),
        "n_tokens": n_tokens,
        "finish_reason": finish_reason,
    }
    row.update({key: problem[key] for key in GROUP_KEYS if key in problem})
    return row


class EvalWorker(EngineWorker):
    def process(self, problems: list[dict]) -> list[dict]:
        params = [SamplingParams(n=1, temperature=0.0, max_tokens=self.settings["max_tokens"])] * len(problems)
        outputs = self.engine.generate([self.engine.encode(format_prompt(p["question"])) for p in problems], params)
        return [
            {"key": p["key"], **result_row(p, c.text, c.n_tokens, c.finish_reason, self.task)}
            for p, (c,) in zip(problems, outputs)
        ]


def evaluate_model(model_dir: str, splits: dict[str, list[dict]], task_name: str, engine_cfg: EngineConfig, max_tokens: int, shard_dir: Path) -> dict[str, list[dict]]:
    """Each split's graded rows, in the split's order. The rollout's rows are keyed `<split>/<id>`: ids are unique
    within a split, not necessarily across splits."""
    keyed = {split: [{**problem, "key": f"{split}/{problem['id']}"} for problem in problems] for split, problems in splits.items()}
    worker_kwargs = dict(model_dir=model_dir, engine_cfg=engine_cfg, task_name=task_name, max_tokens=max_tokens)
    run_rollout((row for rows in keyed.values() for row in rows), EvalWorker, worker_kwargs, engine_cfg, shard_dir, key="key", what="problems")
    results = {split: ordered_results(shard_dir, rows, key="key") for split, rows in keyed.items()}
    for rows in results.values():
        for row in rows:
            del row["key"]  # the rollout's: the result files hold the rows `selfexplore eval --endpoint` writes
    return results


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, center - half), min(1.0, center + half))


def accuracy(results: list[dict]) -> dict:
    n, correct = len(results), sum(r["correct"] for r in results)
    low, high = wilson_interval(correct, n)
    return {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "ci95": [low, high]}


def summarize(results: list[dict]) -> dict:
    """Accuracy of one model's per-problem results, overall and per level / subject when rows carry them."""
    summary = accuracy(results)
    for key in GROUP_KEYS:
        groups: dict[str, list[dict]] = {}
        for r in results:
            if key in r:
                groups.setdefault(str(r[key]), []).append(r)
        if groups:
            summary[f"by_{key}"] = {name: accuracy(rows) for name, rows in sorted(groups.items())}
    return summary


def run(cfg: RunConfig, run_dir: RunDir, model_stage: str) -> dict:
    task = get_task(cfg.task.name)
    splits = {split: task.load(split, cfg.task) for split in ("validation", "test")}
    shards = run_dir.shards(f"eval-{model_stage}")
    results = evaluate_model(run_dir.model_dir(model_stage), splits, cfg.task.name, cfg.engine, cfg.eval.max_tokens, shards)
    metrics: dict = {"nodes": rollout_nodes(shards)}
    for split, rows in results.items():
        write_jsonl(run_dir.eval_results(model_stage, split), rows)
        summary = summarize(rows)
        write_json(run_dir.eval_summary(model_stage, split), summary)
        metrics[split] = {key: summary[key] for key in ("n", "correct", "accuracy", "ci95")}
    return metrics
