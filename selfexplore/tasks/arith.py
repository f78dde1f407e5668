"""`arith`: generated GSM8K-shaped word problems of multi-step arithmetic.

A problem is a short story of `min_ops..max_ops` operations on a starting count; its solution has one line per
operation (`5 + 3 = 8`) and a last line `The answer is N`, exactly the shape of GSM8K solutions, so every stage
runs unchanged on it. Difficulty is set in the config (`task.arith`); a tiny model trained from scratch on a CPU
makes step-level mistakes on it that are worth exploring. Answers are integers, graded like GSM8K.

Every step can be checked against the question, so the first wrong step of any solution is known
(`first_wrong_step`): the truth to measure the explorer's pits against.
"""

from __future__ import annotations

import operator
import random
import re

from selfexplore.config import ArithConfig, TaskConfig
from selfexplore.tasks import source_split, split_problems
from selfexplore.tasks.gsm8k import extract_answer, grade, split_steps  # noqa: F401  (same format, same grader)

NAMES = ["Tom", "Ana", "Lee", "Sam", "Mia", "Raj", "Eva", "Max", "Ivy", "Ben", "Zoe", "Kai"]
OBJECTS = ["apples", "coins", "books", "pens", "cards", "shells", "stamps", "marbles", "cups", "kites"]
PHRASES = {
    "+": ["Then {p} gets {n} more.", "Then {p} finds {n} more.", "Then {p} buys {n} more."],
    "-": ["Then {p} gives away {n}.", "Then {p} loses {n}.", "Then {p} sells {n}."],
    "*": ["Then {p} ends up with {n} times as many."],
}
APPLY = {"+": operator.add, "-": operator.sub, "*": operator.mul}


def generate_problem(rng: random.Random, cfg: ArithConfig, order_rng: random.Random) -> dict:
    """One problem from `rng`; `order_rng` alone decides which `+`/`*` steps of the gold solution are written with
    their operands swapped (`task.arith.swap_operands`), so that setting changes no question."""
    name, obj = rng.choice(NAMES), rng.choice(OBJECTS)
    pronoun = "she" if name in ("Ana", "Mia", "Eva", "Ivy", "Zoe") else "he"
    value = rng.randint(1, cfg.max_operand)
    sentences = [f"{name} has {value} {obj}."]
    lines = []
    for _ in range(rng.randint(cfg.min_ops, cfg.max_ops)):
        # Keep every intermediate count non-negative, as a story about objects must be.
        op = rng.choice([o for o in cfg.ops if o != "-" or value >= 1])
        operand = rng.randint(1, value if op == "-" else cfg.max_operand)
        result = APPLY[op](value, operand)
        sentences.append(rng.choice(PHRASES[op]).format(p=pronoun, n=operand))
        first, second = (operand, value) if op != "-" and order_rng.random() < cfg.swap_operands else (value, operand)
        lines.append(f"{first} {op} {second} = {result}")
        value = result
    sentences.append(f"How many {obj} does {name} have now?")
    lines.append(f"The answer is {value}")
    return {"question": " ".join(sentences), "solution": "\n".join(lines), "answer": str(value)}


def load(split: str, cfg: TaskConfig) -> list[dict]:
    """The `train`, `validation` (held out of the generated training problems) or `test` split. Test questions
    never appear in train; all are fixed by `cfg.arith.seed` (settings checked by `config.check_run`)."""
    source = source_split(split, "arith")
    acfg = cfg.arith
    rng, order_rng = random.Random(acfg.seed), random.Random(f"{acfg.seed}:operand-order")
    seen: set[str] = set()
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    for name, size in (("train", acfg.n_train), ("test", acfg.n_test)):
        attempts = 0
        while len(splits[name]) < size:
            attempts += 1
            if attempts > 50 * (size + 10):
                raise ValueError(f"task.arith: cannot generate {size} distinct {name} problems at this difficulty")
            problem = generate_problem(rng, acfg, order_rng)
            if problem["question"] in seen:
                continue
            seen.add(problem["question"])
            splits[name].append({"id": f"arith-{name}-{len(splits[name])}", **problem})
    return split_problems(splits[source], split, cfg)


# ------------------------------------------------------------------------------------------------- step truth

_START = re.compile(r"\bhas (\d+) ")
EQUATION = re.compile(r"(\d+)\s*([-+*])\s*(\d+)\s*=\s*(\d+)")


def _phrase_pattern(template: str) -> str:
    return re.escape(template).replace(re.escape("{p}"), "(?:he|she)").replace(re.escape("{n}"), r"(\d+)")


_PHRASES = [(op, re.compile("|".join(map(_phrase_pattern, templates)))) for op, templates in PHRASES.items()]


def operations(question: str) -> tuple[int, list[tuple[str, int]]]:
    """The starting count of a generated question and its operations `(op, operand)` in the order told."""
    start = _START.search(question)
    if not start:
        raise ValueError(f"not an arith question: {question[:80]!r}")
    found = sorted(
        (match.start(), op, int(next(group for group in match.groups() if group)))
        for op, pattern in _PHRASES
        for match in pattern.finditer(question)
    )
    return int(start[1]), [(op, operand) for _, op, operand in found]


def first_wrong_step(question: str, solution: str) -> int | None:
    """The 1-based index of the first wrong step of `solution` (steps as `split_steps` cuts them, as the explorer
    numbers its pits), or None when no step is wrong.

    With v0 the starting count and v_i = v_{i-1} op_i n_i, step i <= m (m operations) is right only if it is the
    equation `v_{i-1} op_i n_i = v_i` (spacing free; the operands of + and * in either order). So a step is wrong
    when its arithmetic is false, when it uses a number that is neither the previous result nor the operation's
    operand, when it skips or reorders an operation, and when it is anything else (an early answer, an unfinished
    equation). Every later step must state the answer v_m (`The answer is 6`, repeated or not). A solution that
    stops after right steps has none wrong: None, though it reaches no answer.
    """
    value, ops = operations(question)
    for i, (start, end) in enumerate(split_steps(solution), 1):
        step = solution[start:end].strip()
        if i > len(ops):
            if extract_answer(step) != str(value):
                return i
            continue
        op, operand = ops[i - 1]
        result = APPLY[op](value, operand)
        right = {(value, op, operand, result)} | ({(operand, op, value, result)} if op != "-" else set())
        equation = EQUATION.fullmatch(step)
        if not equation or (int(equation[1]), equation[2], int(equation[3]), int(equation[4])) not in right:
            return i
        value = result
    return None


def solved_by_right_steps(question: str, completion: str, gold: str) -> bool:
    """Correct for the right reasons: the final answer is `gold` and no step is wrong (not a lucky answer)."""
    return grade(completion, gold) and first_wrong_step(question, completion) is None
