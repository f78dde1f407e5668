"""Tasks: how problems are loaded, prompted, split into steps, and graded.

Every task is a module with the same functions, returned by `get_task(name)`:

    load(split, cfg: TaskConfig) -> list[dict]    problems {id, question, solution, answer}
    split_steps(solution) -> list[tuple[int, int]] character spans of the steps; together they cover `solution`
    extract_answer(text) -> str | None            the final answer of a solution or completion
    grade(completion, gold) -> bool               does the completion's final answer equal `gold`?

The prompt is the same for every task and every stage (training, sampling, exploration, eval, serving):
the question followed by one newline (the paper's format, without the original's eval-time mismatch).
"""

from __future__ import annotations

import importlib
from types import ModuleType

TASKS = ("arith", "gsm8k", "math")


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(f"selfexplore.tasks.{name}")


def format_prompt(question: str) -> str:
    return question.strip() + "\n"
