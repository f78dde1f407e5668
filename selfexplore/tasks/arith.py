"""`arith`: generated GSM8K-shaped word problems of multi-step arithmetic.

A problem is a short story of `min_ops..max_ops` operations on a starting count; its solution has one line per
operation (`5 + 3 = 8`) and a last line `The answer is N`, exactly the shape of GSM8K solutions, so every stage
runs unchanged on it. Difficulty is set in the config (`task.arith`); a tiny model trained from scratch on a CPU
makes step-level mistakes on it that are worth exploring. Answers are integers, graded like GSM8K.
"""

from __future__ import annotations

import random

from selfexplore.config import ArithConfig, TaskConfig
from selfexplore.tasks.gsm8k import extract_answer, grade, split_steps  # noqa: F401  (same format, same grader)

NAMES = ["Tom", "Ana", "Lee", "Sam", "Mia", "Raj", "Eva", "Max", "Ivy", "Ben", "Zoe", "Kai"]
OBJECTS = ["apples", "coins", "books", "pens", "cards", "shells", "stamps", "marbles", "cups", "kites"]
PHRASES = {
    "+": ["Then {p} gets {n} more.", "Then {p} finds {n} more.", "Then {p} buys {n} more."],
    "-": ["Then {p} gives away {n}.", "Then {p} loses {n}.", "Then {p} sells {n}."],
    "*": ["Then {p} ends up with {n} times as many."],
}


def generate_problem(rng: random.Random, cfg: ArithConfig) -> dict:
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    pronoun = "she" if name in ("Ana", "Mia", "Eva", "Ivy", "Zoe") else "he"
    value = rng.randint(1, cfg.max_operand)
    sentences = [f"{name} has {value} {obj}."]
    lines = []
    for _ in range(rng.randint(cfg.min_ops, cfg.max_ops)):
        # Keep every intermediate count non-negative, as a story about objects must be.
        op = rng.choice([o for o in cfg.ops if o != "-" or value >= 1])
        operand = rng.randint(1, value if op == "-" else cfg.max_operand)
        result = {"+": value + operand, "-": value - operand, "*": value * operand}[op]
        sentences.append(rng.choice(PHRASES[op]).format(p=pronoun, n=operand))
        lines.append(f"{value} {op} {operand} = {result}")
        value = result
    sentences.append(f"How many {obj} does {name} have now?")
    lines.append(f"The answer is {value}")
    return {"question": " ".join(sentences), "solution": "\n".join(lines), "answer": str(value)}


def load(split: str, cfg: TaskConfig) -> list[dict]:
    """The `train` or `test` split. Test questions never appear in train; both are fixed by `cfg.arith.seed`."""
    if split not in ("train", "test"):
        raise ValueError(f"arith has splits train and test, not {split!r}")
    acfg = cfg.arith
    if not (1 <= acfg.min_ops <= acfg.max_ops) or acfg.max_operand < 1 or not set(acfg.ops) <= set("+-*") or not acfg.ops:
        raise ValueError(f"task.arith: invalid difficulty settings {acfg}")
    rng = random.Random(acfg.seed)
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for name, size in (("train", acfg.n_train), ("test", acfg.n_test)):
        attempts = 0
        while len(splits[name]) < size:
            attempts += 1
            if attempts > 50 * (size + 10):
                raise ValueError(f"task.arith: cannot generate {size} distinct {name} problems at this difficulty")
            problem = generate_problem(rng, acfg)
            if problem["question"] in seen:
                continue
            seen.add(problem["question"])
            splits[name].append({"id": f"arith-{name}-{len(splits[name])}", **problem})
    limit = cfg.max_train if split == "train" else cfg.max_test
    return splits[split][:limit] if limit else splits[split]
