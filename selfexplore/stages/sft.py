"""`sft`: fine-tune the base model on the gold solutions of the training set.

Rows are {prompt: question + "\\n", completion: solution}; the loss covers the solution tokens only (the
original also trained on the question, an unintended default).
"""

from __future__ import annotations

from selfexplore.config import RunConfig
from selfexplore.run_dir import BASE_MODEL, RunDir
from selfexplore.tasks import format_prompt, get_task
from selfexplore.train import train_sft


def gold_rows(problems: list[dict]) -> list[dict]:
    return [{"prompt": format_prompt(p["question"]), "completion": p["solution"]} for p in problems]


def run(cfg: RunConfig, run_dir: RunDir) -> dict:
    problems = get_task(cfg.task.name).load("train", cfg.task)
    return train_sft(
        gold_rows(problems), str(run_dir.path(BASE_MODEL)), run_dir.model_dir("sft"), cfg.sft, run_dir.train_storage("sft"), logs=run_dir.train_logs("sft")
    )
