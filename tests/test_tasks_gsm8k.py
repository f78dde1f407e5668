"""GSM8K task: loaders, the paper's solution format, line steps, answer extraction and grading. Runs on: CPU."""

import json
from pathlib import Path

import pytest

from selfexplore.config import TaskConfig
from selfexplore.errors import ConfigError, DataError
from selfexplore.tasks import arith, get_task, gsm8k

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "GSM8K_train.jsonl").is_file(), reason=f"GSM8K files not in {DATA}")


def write_jsonl(path: Path, rows: list) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def config(train: str = "", test: str = "", **kw) -> TaskConfig:
    return TaskConfig(name="gsm8k", train_path=train, test_path=test, **kw)


# --------------------------------------------------------------------------------------------------- loading


def test_self_explore_and_original_formats_give_the_same_problem(tmp_path):
    response = "Half of 48 is 48/2 = <<48/2=24>>24.\nSo 48+24 = <<48+24=72>>72.\n#### 1,072"
    ours = write_jsonl(tmp_path / "a.jsonl", [{"query": "How many? ", "response": response}])
    original = write_jsonl(tmp_path / "b.jsonl", [{"question": "How many? ", "answer": response}])
    (a,) = gsm8k.load("train", config(train=ours))
    (b,) = gsm8k.load("train", config(train=original))
    assert a == b == {
        "id": "gsm8k-train-0",
        "question": "How many?",
        "solution": "Half of 48 is 48/2 = <<48/2=24>>24.\nSo 48+24 = <<48+24=72>>72.\nThe answer is 1,072",
        "answer": "1072",
    }


def test_ids_are_the_rows_own_or_stable_positions(tmp_path):
    rows = [{"query": f"q{i}", "response": f"#### {i}"} for i in range(3)]
    rows[1]["id"] = "custom-7"
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    assert [p["id"] for p in gsm8k.load("test", config(test=path))] == ["gsm8k-test-0", "custom-7", "gsm8k-test-2"]
    assert len(gsm8k.load("test", config(test=path, max_test=2))) == 2


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"query": "q", "response": "4 apples"}', r"t.jsonl:3: the solution must end with a line `#### <number>`"),
        ('{"query": "q", "response": "#### many"}', r"t.jsonl:3: the solution must end with a line"),
        ('{"query": "q"}', r"t.jsonl:3: missing field `response` \(or answer\)"),
        ('{"query": 5, "response": "#### 5"}', r"t.jsonl:3: field `query` must be a non-empty string"),
        ('{"query": "q", "response": "#### 5", "id": "gsm8k-train-0"}', r"t.jsonl:3: id 'gsm8k-train-0' repeats .*:1"),
        ('{"query": "q", "response": "#### 5"', r"t.jsonl:3: malformed JSON"),
    ],
)
def test_a_malformed_row_names_its_file_and_line(tmp_path, line, message):
    # Line 2 is blank: the reported line is the file's, not the row's position.
    path = write_jsonl(tmp_path / "t.jsonl", [{"query": "q", "response": "#### 1"}, "", line])
    with pytest.raises(DataError, match=message):
        gsm8k.load("train", config(train=path))


def test_missing_or_empty_sources_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="task.train_path is empty"):
        gsm8k.load("train", config())
    with pytest.raises(DataError, match="data file not found: .*nope.jsonl"):
        gsm8k.load("train", config(train=str(tmp_path / "nope.jsonl")))
    with pytest.raises(DataError, match="no rows"):
        gsm8k.load("train", config(train=write_jsonl(tmp_path / "e.jsonl", [])))
    with pytest.raises(ValueError, match="splits train, validation, test"):
        gsm8k.load("dev", config(train="x"))


# --------------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, answer",
    [
        ("2 + 3 = 5\nThe answer is 5", "5"),
        ("The answer is $1,234.", "1234"),
        ("The answer is: 18 dollars", "18"),
        ("The answer is \\$7.50", "7.5"),
        ("The answer is -3", "-3"),
        ("The answer is -$4", "-4"),
        ("The answer is $-5", "-5"),
        ("The answer is $ -5.", "-5"),
        ("The answer is \\$-5", "-5"),
        ("The answer is - $5", "-5"),
        ("The answer is +7", "7"),
        ("The answer is $5.00.", "5"),
        ("The answer is 1,000,000.", "1000000"),
        ("The answer is 1,2345", "1"),  # a broken digit group is read up to its comma, as `12,34` is
        ("The answer is 0,100", "0"),  # no digit grouping starts with 0
        ("The answer is 12.0", "12"),
        ("The answer is .25", "0.25"),
        ("The answer is 40%", "40"),
        ("the answer is **9**", "9"),
        ("#### 72", "72"),
        ("The answer is 3.\nThe answer is 4.", "4"),  # the last one counts
        ("The answer is therefore 3.\n#### 8", "8"),  # GSM8K train row 5415's shape
        ("The answer is seven", None),  # the last tag has no number: no answer, not an earlier one
        ("So she has 5 apples.", None),
        ("The answer is 1e3", "1"),  # scientific notation is not GSM8K's; the number stops at `e`
    ],
)
def test_extract_answer(text, answer):
    assert gsm8k.extract_answer(text) == answer


def test_calculator_annotations_are_text_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    completion = f"<<__import__('os').system('touch {marker}')=5>>5\nThe answer is 5"
    assert gsm8k.grade(completion, "5") and not gsm8k.grade(completion, "6")
    assert not marker.exists()


def test_arith_shares_the_gsm8k_functions():
    assert get_task("arith").grade("3 + 4 = 7\nThe answer is 7", "7")
    assert arith.extract_answer is gsm8k.extract_answer and arith.split_steps is gsm8k.split_steps


@pytest.mark.parametrize(
    "solution",
    ["a\nb\nThe answer is 3", "a\n\nb\n", "single", "", "\n\nx\n\n\ny", "a\r\nb\nThe answer is 1\n"],
)
def test_line_steps_cover_the_solution_exactly(solution):
    spans = gsm8k.split_steps(solution)
    assert "".join(solution[a:b] for a, b in spans) == solution
    assert all(solution[a:b].strip() for a, b in spans) or solution.strip() == ""


def test_answer_line_is_the_last_step():
    solution = "48/2 = <<48/2=24>>24\n48+24 = 72\n\nThe answer is 72"
    assert [solution[a:b] for a, b in gsm8k.split_steps(solution)] == [
        "48/2 = <<48/2=24>>24\n",
        "48+24 = 72\n\n",
        "The answer is 72",
    ]


# --------------------------------------------------------------------------------------------------- real data


@needs_data
@pytest.mark.parametrize("split, rows", [("train", 7473), ("test", 1319)])
def test_every_gold_answer_extracts_and_grades(split, rows):
    # Every row: no validation split held out of train (its own test below).
    cfg = config(train=str(DATA / "GSM8K_train.jsonl"), test=str(DATA / "GSM8K_test.jsonl"), validation_fraction=0.0)
    problems = gsm8k.load(split, cfg)
    raw = [json.loads(line) for line in open(DATA / f"GSM8K_{split}.jsonl")]
    assert len(problems) == rows
    # The original evaluation's gold: int(response.split('#### ')[1].replace(',', '')).
    assert [p["answer"] for p in problems] == [str(int(r["response"].split("#### ")[1].replace(",", ""))) for r in raw]
    assert all(gsm8k.extract_answer(p["solution"]) == p["answer"] for p in problems)
    assert all(gsm8k.grade(p["solution"], p["answer"]) for p in problems)
    last_lines = [p["solution"].rsplit("\n", 1)[-1] for p in problems]
    assert last_lines == [f"The answer is {r['response'].split('#### ')[1]}" for r in raw]
    assert len({p["id"] for p in problems}) == rows


@needs_data
def test_validation_is_a_fixed_held_out_share_of_train():
    cfg = config(train=str(DATA / "GSM8K_train.jsonl"), test=str(DATA / "GSM8K_test.jsonl"))
    train, validation = gsm8k.load("train", cfg), gsm8k.load("validation", cfg)
    assert (len(train), len(validation)) == (7473 - 374, 374)  # 5% of 7,473
    assert not {p["id"] for p in train} & {p["id"] for p in validation}
    assert validation == gsm8k.load("validation", cfg)
    assert len(gsm8k.load("train", config(train=cfg.train_path, max_train=100))) == 100  # after holding out
