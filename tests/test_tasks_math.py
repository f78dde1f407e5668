"""MATH task: loaders, the answer line, step splitting (clean and the paper's), extraction, and grading that is
bounded in time in any thread and never runs model text. Runs on: CPU (grading starts a ~1 s worker process)."""

import json
import logging
import threading
import time
from pathlib import Path

import pytest

from selfexplore.config import TaskConfig
from selfexplore.errors import DataError
from selfexplore.tasks import math as math_task
from selfexplore.tasks import deadline_pool
from selfexplore.tasks.deadline_pool import DeadlinePool, WorkerError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "MATH_test.jsonl").is_file(), reason=f"MATH files not in {DATA}")


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def config(train: str = "", test: str = "", **kw) -> TaskConfig:
    return TaskConfig(name="math", train_path=train, test_path=test, **kw)


def pieces(text: str, mode: str = "clean") -> list[str]:
    spans = math_task.split_steps(text, mode)
    assert "".join(text[a:b] for a, b in spans) == text  # the one invariant every caller relies on
    return [text[a:b] for a, b in spans]


# --------------------------------------------------------------------------------------------------- loading


def test_math_release_rows_gain_the_answer_line_and_keep_level_and_subject(tmp_path):
    row = {"id": "test/algebra/1", "problem": "Find $x$.", "level": "Level 2", "type": "Algebra",
           "solution": "We get $x = \\boxed{\\frac{1}{2}}$."}
    (p,) = math_task.load("test", config(test=write_jsonl(tmp_path / "m.jsonl", [row])))
    assert p == {"id": "test/algebra/1", "question": "Find $x$.", "answer": "\\frac{1}{2}", "level": "Level 2",
                 "subject": "Algebra", "solution": "We get $x = \\boxed{\\frac{1}{2}}$.\nThe answer is \\frac{1}{2}"}


def test_math500_and_self_explore_formats(tmp_path):
    rows = [
        {"unique_id": "test/precalculus/807.json", "problem": "P", "solution": "So $\\boxed{3}$.", "answer": "3",
         "subject": "Precalculus", "level": 4},
        {"query": "Q", "response": "Thus $y=2$.\nThe answer is 2"},
    ]
    a, b = math_task.load("test", config(test=write_jsonl(tmp_path / "m.jsonl", rows)))
    assert (a["id"], a["answer"]) == ("test/precalculus/807.json", "3")
    assert (a["level"], a["subject"]) == ("Level 4", "Precalculus")
    # An answer line already there is not repeated; rows without level/subject simply lack those keys.
    assert b == {"id": "math-test-1", "question": "Q", "solution": "Thus $y=2$.\nThe answer is 2", "answer": "2"}


def test_a_question_asking_for_several_answers_gets_all_the_boxes_of_the_last_paragraph(tmp_path):
    rows = [
        {"problem": "Enter all the solutions, separated by commas.",
         "solution": "So $x = \\boxed{3}$ or $x = \\boxed{\\frac{2}{5}}$."},
        {"problem": "Find $x$.", "solution": "First $\\boxed{2}$, but in fact $x = \\boxed{3}$."},  # one answer asked
        {"problem": "Find all $x$.", "solution": "We try $\\boxed{2}$.\n\nSo $x = \\boxed{3}$."},  # other paragraph
    ]
    problems = math_task.load("test", config(test=write_jsonl(tmp_path / "m.jsonl", rows)))
    assert [p["answer"] for p in problems] == ["3, \\frac{2}{5}", "3", "3"]
    assert problems[0]["solution"].endswith("$.\nThe answer is 3, \\frac{2}{5}")
    assert math_task.grade("The answer is \\frac{2}{5}, 3", problems[0]["answer"])
    assert not math_task.grade("The answer is 3", problems[0]["answer"])


def test_rows_without_an_answer_are_left_out_loudly_and_bad_rows_are_errors(tmp_path, caplog):
    rows = [{"problem": "P", "solution": "so $\\boxed{4}$"},
            {"problem": "P", "solution": "there are $\\boxed{}$ primes"}]
    with caplog.at_level(logging.WARNING):
        problems = math_task.load("train", config(train=write_jsonl(tmp_path / "m.jsonl", rows)))
    assert [p["answer"] for p in problems] == ["4"]
    assert "left out 1 of 2 rows" in caplog.text and "m.jsonl:2: no answer" in caplog.text
    bad = write_jsonl(tmp_path / "bad.jsonl", [rows[0], {"problem": "P", "solution": ["not", "text"]}])
    with pytest.raises(DataError, match=r"bad.jsonl:2: field `solution` must be a non-empty string"):
        math_task.load("train", config(train=bad))


# --------------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, answer",
    [
        ("so $x = \\boxed{\\frac{\\sqrt{3}}{2}}$.", "\\frac{\\sqrt{3}}{2}"),  # nested braces
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last box
        ("\\fbox{7}", "7"),
        ("our answer is $\\boxed 9$.", "9"),  # LaTeX boxes a single token without braces
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces are characters, not groups
        ("\\boxed{3} and then \\boxed{\\frac{1}{", "3"),  # a box cut off by the token limit is not an answer
        ("Thus $y=2$.\nThe answer is $\\dfrac{1}{2}$.\n", "\\dfrac{1}{2}"),
        ("The answer is: 4\\text{ cm}", "4\\text{ cm}"),
        ("\\boxed{ \\begin{pmatrix} 1 \\\\\n 2 \\end{pmatrix} }", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
        ("the answer is $\\boxed{}$.", None),  # an empty box says nothing
        ("so $x = \\boxed{-2}$ or $x = \\boxed{1}$.\nThe answer is -2, 1", "-2, 1"),  # a last answer line wins
        ("Hence $5$.\nThe answer is $\\boxed{5}$.", "5"),
        ("We find $x = 5$.", None),
    ],
)
def test_extract_answer(text, answer):
    assert math_task.extract_answer(text) == answer


def test_extraction_is_linear_on_pathological_text():
    started = time.perf_counter()
    assert math_task.extract_answer("\\boxed{" * 20_000) is None
    assert math_task.extract_answer("The answer is " * 20_000 + "5") == "5"
    assert time.perf_counter() - started < 1.0


# --------------------------------------------------------------------------------------------------- steps


SOLUTION = (
    "Let $r,$ $s$ be the roots of $x^2 - 3x + 1 = 0.$  Then by Vieta's formulas, $r + s = 3.$\n\n"
    "Hence,\n\\[r^2 + s^2 = (r + s)^2 - 2rs = 9 - 2 = 7.\\]Squaring once more, $r^4 + s^4 = 49 - 2 = \\boxed{47}$.\n"
    "The answer is 47"
)


def test_clean_steps_are_sentences_and_paragraphs_never_inside_math():
    assert pieces(SOLUTION) == [
        "Let $r,$ $s$ be the roots of $x^2 - 3x + 1 = 0.$  ",
        "Then by Vieta's formulas, $r + s = 3.$\n\n",
        "Hence,\n\\[r^2 + s^2 = (r + s)^2 - 2rs = 9 - 2 = 7.\\]",  # a fragment (`Hence,`) joins the next step
        "Squaring once more, $r^4 + s^4 = 49 - 2 = \\boxed{47}$.\n",
        "The answer is 47",
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        # `e.g.`, decimals and list numbers are no sentence ends; `$..$`, `\begin..\end` and [asy] are never cut.
        ("We use e.g. the value 3.5 here, which is long enough. Next we go on and on.",
         ["We use e.g. the value 3.5 here, which is long enough. ", "Next we go on and on."]),
        ("First we note that\n\\begin{align*}\na &= 1. \\\\\nb &= 2.\n\\end{align*} So the sum is three.",
         ["First we note that\n\\begin{align*}\na &= 1. \\\\\nb &= 2.\n\\end{align*} ", "So the sum is three."]),
        ("A long first sentence about it. [asy]\ndraw((0,0)--(1,1));\n\nlabel(\"A. B\");\n[/asy] Then more text.",
         ["A long first sentence about it. ",
          "[asy]\ndraw((0,0)--(1,1));\n\nlabel(\"A. B\");\n[/asy] Then more text."]),
        # A stray `$` cannot swallow the rest: the formula ends at the paragraph break.
        ("Cost is $5 per item, so far.\n\nThe next part starts here.",
         ["Cost is $5 per item, so far.\n\n", "The next part starts here."]),
        ("", [""]),
    ],
)
def test_clean_steps_cases(text, expected):
    assert pieces(text) == expected


def test_the_answer_line_is_its_own_step_even_with_full_stops_inside():
    text = "The area is $34$ square units, as computed.\nThe answer is 34\\text{ sq. units}"
    assert pieces(text)[-1] == "The answer is 34\\text{ sq. units}"


def test_paper_steps_follow_the_original_heuristic():
    text = "x" * 30 + ".$ " + "y" * 30 + "\n" + "z" * 30 + "\nThe answer is 5"
    # Cut after `.$ ` and at newlines; short pieces (the newlines) join the piece before; the answer split off.
    assert pieces(text, "paper") == ["x" * 30 + ".$ ", "y" * 30 + "\n", "z" * 30 + "\n", "The answer is 5"]
    long = "\n".join(f"Step {i} says something long enough to count." for i in range(20))
    assert len(pieces(long, "paper")) == 9  # at most 9 parts
    # With 3 parts or fewer, each long part is cut once at the most balanced connective.
    assert pieces("We have a value here, which gives the result we want.", "paper") == [
        "We have a value here, which", " gives the result we want."]
    with pytest.raises(ValueError, match="clean or paper"):
        math_task.split_steps("x", "sentences")


# --------------------------------------------------------------------------------------------------- grading


def test_grading_in_a_thread_and_a_malicious_answer_is_only_text(tmp_path):
    marker = tmp_path / "pwned"
    results = {}

    def grade_all():
        results["fraction"] = math_task.grade("so $x = \\boxed{\\dfrac{1}{2}}$", "0.5")
        results["code"] = math_task.grade(f"\\boxed{{__import__('os').system('touch {marker}')}}", "0")
        results["text"] = math_task.grade(f"The answer is __import__('os').system('touch {marker}')", "0")

    thread = threading.Thread(target=grade_all)  # SIGALRM-based timeouts would raise here
    thread.start()
    thread.join()
    assert results == {"fraction": True, "code": False, "text": False}
    assert not marker.exists()


def test_a_runaway_comparison_is_cut_at_the_cap_and_logged(caplog):
    started = time.perf_counter()
    with caplog.at_level(logging.WARNING):
        # 9^(9^9) is a 370-million-digit integer: sympy would compute for minutes inside one C call.
        assert not math_task.grade("The answer is 9^{9^{9}}", "5", timeout=1.0)
    assert time.perf_counter() - started < 3.0  # the cap + one worker start; without the cap: minutes
    assert "cut at the 1s cap (waited 1s for the result); counted incorrect" in caplog.text
    assert math_task.grade("The answer is \\frac{3}{6}", "0.5")  # the replacement worker grades on


def test_deadline_pool_reports_worker_errors_and_recovers():
    pool = DeadlinePool("json", "loads", max_workers=1)
    try:
        assert pool.call("[1, 2]", timeout=30) == [1, 2]
        with pytest.raises(WorkerError, match="JSONDecodeError"):
            pool.call("{", timeout=30)
        assert pool.call("3", timeout=30) == 3
    finally:
        pool.close()


def test_deadline_pool_serves_on_after_kills_long_after_its_start(monkeypatch):
    monkeypatch.setattr(deadline_pool, "STARTUP_TIMEOUT_S", 1.0)
    pool = DeadlinePool("time", "sleep", max_workers=1)
    try:
        pool.call(0, timeout=30)
        time.sleep(1.2)  # the worker is now older than its startup allowance
        started = time.perf_counter()
        with pytest.raises(TimeoutError):
            pool.call(60, timeout=0.3)
        assert time.perf_counter() - started < 1.0
        assert pool.call(0, timeout=30) is None  # a fresh server, forked by the worker's template
    finally:
        pool.close()


# --------------------------------------------------------------------------------------------------- real data


@needs_data
def test_every_gold_answer_extracts_grades_and_splits():
    cfg = config(train=str(DATA / "MATH_train.jsonl"), test=str(DATA / "MATH_test.jsonl"))
    problems = math_task.load("train", cfg) + math_task.load("validation", cfg) + math_task.load("test", cfg)
    assert len(problems) == 12_498  # 12,500 rows; train/number_theory/7115 and 7117 have an empty \boxed{}
    assert all(math_task.extract_answer(p["solution"]) == p["answer"] for p in problems)
    assert all(math_task.extract_answer(p["solution"].rsplit("\n", 1)[-1]) == p["answer"] for p in problems)
    assert all(math_task.grade(p["solution"], p["answer"]) for p in problems)
    for p in problems[::10]:
        for mode in ("paper", "clean"):
            spans = math_task.split_steps(p["solution"], mode)
            assert "".join(p["solution"][a:b] for a, b in spans) == p["solution"]
        assert p["solution"][spans[-1][0] :].startswith("The answer is")  # clean: the answer line is a step
    assert {p["level"] for p in problems} >= {f"Level {i}" for i in range(1, 6)}
    answers = {p["id"]: p["answer"] for p in problems}
    assert answers["test/algebra/1878"] == "-2, 1"  # "Find all solutions ... separated by comma(s)"
    assert len({p["subject"] for p in problems}) == 7
