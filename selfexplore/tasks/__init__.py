"""Tasks: how problems are loaded, prompted, split into steps, and graded.

Every task is a module with the same functions, returned by `get_task(name)`:

    load(split, cfg: TaskConfig) -> list[dict]    problems {id, question, solution, answer} of `train`,
                                                   `validation` (held out of train: `split_problems`) or `test`
    split_steps(solution) -> list[tuple[int, int]] character spans of the steps; together they cover `solution`
    extract_answer(text) -> str | None            the final answer of a solution or completion
    grade(completion, gold) -> bool               does the completion's final answer equal `gold`?

The prompt is the same for every task and every stage (training, sampling, exploration, eval, serving):
the question followed by one newline (the paper's format, without the original's eval-time mismatch).
"""

from __future__ import annotations

import importlib
import random
from types import ModuleType

from selfexplore.config import TaskConfig

TASKS = ("arith", "gsm8k", "math")
SPLITS = ("train", "validation", "test")


def get_task(name: str) -> ModuleType:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return importlib.import_module(f"selfexplore.tasks.{name}")


def source_split(split: str, task: str) -> str:
    """Where `split`'s problems come from: the test set, or (train and validation) the training set."""
    if split not in SPLITS:
        raise ValueError(f"{task} has splits {', '.join(SPLITS)}, not {split!r}")
    return "test" if split == "test" else "train"


def split_problems(problems: list[dict], split: str, cfg: TaskConfig) -> list[dict]:
    """`split` out of the problems of its `source_split`: the validation split is a fixed random
    `validation_fraction` of the training problems (by `validation_seed`), train the rest, in their order; then
    `max_train` / `max_test` apply."""
    if source_split(split, cfg.name) == "test":
        return problems[: cfg.max_test or None]
    count = round(len(problems) * cfg.validation_fraction)
    held_out = set(random.Random(cfg.validation_seed).sample(range(len(problems)), count))
    if split == "validation":
        return [p for i, p in enumerate(problems) if i in held_out]
    return [p for i, p in enumerate(problems) if i not in held_out][: cfg.max_train or None]


def format_prompt(question: str) -> str:
    return question.strip() + "\n"
