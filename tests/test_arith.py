"""The generated `arith` task: splits, format, steps and grading. Runs on: CPU."""

import hashlib
import json
import random

import pytest

from selfexplore.config import ArithConfig, TaskConfig
from selfexplore.tasks import format_prompt, get_task

arith = get_task("arith")


def test_splits_are_fixed_by_the_seeds_and_disjoint():
    cfg = TaskConfig(validation_fraction=0.1, arith=ArithConfig(n_train=300, n_test=50))
    train, validation, test = (arith.load(split, cfg) for split in ("train", "validation", "test"))
    assert train == arith.load("train", cfg) and (len(train), len(validation), len(test)) == (270, 30, 50)
    questions = [{p["question"] for p in split} for split in (train, validation, test)]
    assert not questions[0] & questions[1] and not questions[0] & questions[2] and not questions[1] & questions[2]
    assert len({p["id"] for p in train + validation + test}) == 350
    other = arith.load("validation", TaskConfig(validation_fraction=0.1, validation_seed=1, arith=cfg.arith))
    assert len(other) == 30 and other != validation  # the validation seed picks which problems are held out
    with pytest.raises(ValueError, match="splits train, validation, test, not 'dev'"):
        arith.load("dev", cfg)


def test_solutions_are_gsm8k_shaped_and_grade_correct():
    cfg = TaskConfig(arith=ArithConfig(min_ops=2, max_ops=5, max_operand=20, ops="+-*", n_train=200, n_test=0))
    for p in arith.load("train", cfg):
        lines = p["solution"].split("\n")
        assert 3 <= len(lines) <= 6 and lines[-1] == f"The answer is {p['answer']}"
        assert int(p["answer"]) >= 0
        assert arith.grade(p["solution"], p["answer"]) and arith.extract_answer(p["solution"]) == p["answer"]
        spans = arith.split_steps(p["solution"])
        assert len(spans) == len(lines) and "".join(p["solution"][s:e] for s, e in spans) == p["solution"]
        assert format_prompt(p["question"]).endswith("?\n")


def test_grading_is_numeric_and_uses_the_last_answer():
    assert arith.grade("1 + 1 = 2\nThe answer is 2", "2")
    assert arith.grade("The answer is 2.0", "2") and arith.grade("The answer is 1,000", "1000")
    assert not arith.grade("The answer is 3", "2") and not arith.grade("no answer here", "2")
    assert arith.grade("The answer is 5\nThe answer is 2", "2")


QUESTION = "Ana has 1 cups. Then she gets 2 more. Then she gets 4 more. Then she loses 1. How many cups does Ana have now?"


def test_operations_are_read_from_the_question():
    assert arith.operations(QUESTION) == (1, [("+", 2), ("+", 4), ("-", 1)])
    question = "Tom has 3 pens. Then he ends up with 4 times as many. Then he sells 2. How many pens does Tom have now?"
    assert arith.operations(question) == (3, [("*", 4), ("-", 2)])


@pytest.mark.parametrize(
    "solution, wrong",
    [
        ("1 + 2 = 3\n3 + 4 = 7\n7 - 1 = 6\nThe answer is 6", None),
        ("2+1=3\n4 + 3 = 7\n\n7 - 1 = 6\nThe answer is 6.\nThe answer is 6", None),  # spelling and repeats are free
        ("1 + 2 = 3\n3 + 4 = 7\n", None),  # stops after right steps: nothing it says is wrong
        ("1 + 2 = 3\n3 + 4", 2),  # cut off inside a step: that step is unfinished, so wrong
        ("1 + 2 = 3\n3 + 4 = 8\n8 - 1 = 7\nThe answer is 7", 2),  # arithmetic slip
        ("1 + 2 = 3\n3 + 4 = 8\n8 - 2 = 6\nThe answer is 6", 2),  # right final answer, wrong intermediate step
        ("1 + 2 = 3\n3 + 5 = 8\n8 - 2 = 6\nThe answer is 6", 2),  # true arithmetic, an operand from nowhere
        ("1 + 2 = 3\n3 - 1 = 2\nThe answer is 2", 2),  # skips an operation
        ("1 + 2 = 3\n3 + 4 = 7\n1 - 7 = -6\nThe answer is 6", 3),  # subtraction's operands swapped
        ("1 + 2 = 3\n3 + 4 = 7\n7 - 1 = 6\nThe answer is 7", 4),  # right steps, wrong answer line
        ("1 + 2 = 3\nThe answer is 3", 2),  # answers early
        ("1 + 2 = 3\n3 + 4 = 7\n7 - 1 = 6\n6 + 1 = 7\nThe answer is 7", 4),  # an operation the question lacks
    ],
)
def test_first_wrong_step(solution, wrong):
    assert arith.first_wrong_step(QUESTION, solution) == wrong


def test_gold_solutions_have_no_wrong_step_and_a_changed_result_is_found():
    cfg = TaskConfig(arith=ArithConfig(min_ops=2, max_ops=5, max_operand=20, ops="+-*", n_train=200, n_test=0))
    rng = random.Random(0)
    for p in arith.load("train", cfg):
        assert arith.first_wrong_step(p["question"], p["solution"]) is None
        lines = p["solution"].split("\n")
        step = rng.randrange(len(lines) - 1)  # an equation line: change its result
        lhs, result = lines[step].split(" = ")
        lines[step] = f"{lhs} = {int(result) + 1}"
        assert arith.first_wrong_step(p["question"], "\n".join(lines)) == step + 1


def test_the_seed_gives_the_problems_it_gave_before_swap_operands_existed():
    cfg = TaskConfig(arith=ArithConfig(ops="+-*", n_train=300, n_test=50))
    digest = {split: hashlib.sha256(json.dumps(arith.load(split, cfg)).encode()).hexdigest()[:16] for split in ("train", "test")}
    assert digest == {"train": "afc3263fff7ff9a2", "test": "7985ca57d19466a9"}  # computed at f429687


def test_swapped_operands_vary_the_gold_solutions_and_nothing_else():
    plain = TaskConfig(arith=ArithConfig(ops="+-*", n_train=300, n_test=50))
    swapped = TaskConfig(arith=ArithConfig(ops="+-*", n_train=300, n_test=50, swap_operands=0.5))
    for split in ("train", "test"):
        before, after = arith.load(split, plain), arith.load(split, swapped)
        assert [{**p, "solution": ""} for p in before] == [{**p, "solution": ""} for p in after]
        changed = [(p, q) for p, q in zip(before, after) if p["solution"] != q["solution"]]
        assert 0.2 * len(before) < len(changed) < 0.9 * len(before)
        for p, q in changed:
            assert arith.first_wrong_step(q["question"], q["solution"]) is None and arith.grade(q["solution"], q["answer"])
            for old, new in zip(p["solution"].split("\n"), q["solution"].split("\n")):
                if old != new:  # the same equation with its operands swapped, never a subtraction
                    a, op, b, _, result = old.split()
                    assert op in "+*" and new == f"{b} {op} {a} = {result}"


def test_a_question_of_another_task_is_an_error():
    with pytest.raises(ValueError, match="not an arith question"):
        arith.first_wrong_step("What is 2 + 2?", "2 + 2 = 4")
