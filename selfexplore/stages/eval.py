"""`eval`: greedy decoding of every trained model on the test set, graded with the task's grader.

Writes `eval/<model>.jsonl` (one row per problem) and `eval/summary.json` (accuracy with a 95% Wilson interval
per model). `selfexplore eval --endpoint` writes the same two files from any OpenAI-compatible server.
"""

from __future__ import annotations

import math


def result_row(problem: dict, completion: str, n_tokens: int, finish_reason: str, task) -> dict:
    """The per-problem record shared by in-cluster and HTTP evaluation."""
    return {
        "id": problem["id"],
        "question": problem["question"],
        "answer": problem["answer"],
        "completion": completion,
        "pred": task.extract_answer(completion),
        "correct": task.grade(completion, problem["answer"]),
        "n_tokens": n_tokens,
        "finish_reason": finish_reason,
    }


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, center - half), min(1.0, center + half))


def summarize(results: list[dict]) -> dict:
    """Accuracy of one model's per-problem results (plus per level/subject when the rows carry them)."""
    n, correct = len(results), sum(r["correct"] for r in results)
    low, high = wilson_interval(correct, n)
    summary = {"n": n, "correct": correct, "accuracy": correct / n if n else 0.0, "ci95": [low, high]}
    for key in ("level", "subject"):
        groups: dict[str, list[dict]] = {}
        for r in results:
            if key in r:
                groups.setdefault(str(r[key]), []).append(r)
        if groups:
            summary[f"by_{key}"] = {g: summarize(rows) for g, rows in sorted(groups.items())}
    return summary
