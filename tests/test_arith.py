"""The generated `arith` task: splits, format, steps and grading. Runs on: CPU."""

from selfexplore.config import ArithConfig, TaskConfig
from selfexplore.tasks import format_prompt, get_task

arith = get_task("arith")


def test_splits_are_fixed_by_the_seed_and_disjoint():
    cfg = TaskConfig(arith=ArithConfig(n_train=300, n_test=50))
    train, test = arith.load("train", cfg), arith.load("test", cfg)
    assert train == arith.load("train", cfg) and len(train) == 300 and len(test) == 50
    assert not {p["question"] for p in train} & {p["question"] for p in test}
    assert len({p["id"] for p in train + test}) == 350


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
