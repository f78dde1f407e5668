"""`gsm8k`: grade-school math word problems; solutions one step per line, last line `The answer is N`.

Rows come as Self-Explore files (`query`/`response`) or the original GSM8K (`question`/`answer`); either way the
solution's last line `#### N` becomes `The answer is N` (the paper's format). Answers are numbers, compared exactly
after normalisation; the `<<48/2=24>>` calculator annotations stay in the text and are never evaluated. `arith`
shares this module's extraction, grading and step splitting.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from selfexplore.config import TaskConfig
from selfexplore.errors import DataError
from selfexplore.tasks import source_split, split_problems
from selfexplore.tasks.sources import build_problems, problem_id, read_rows, text_field

_LINE_START = re.compile(r"^[^\S\n]*\S", re.MULTILINE)  # start of a line with something on it
_TAG = re.compile(r"the answer is|####", re.IGNORECASE)
# What may stand between the tag and the number: `:`, markdown bold, `$` / `\$`, a sign before or after the `$`.
# Digit groups must be whole (`1,234,567`); `12,34` or `0,100` is read up to its comma.
_NUMBER = re.compile(
    r"[\s:*]*(?:\\?\$\s*)?(?P<sign>[-−+]?)\s*(?:\\?\$\s*)?"
    r"(?P<digits>[1-9]\d{0,2}(?:,\d{3})+(?!,?\d)(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
)


def split_steps(solution: str) -> list[tuple[int, int]]:
    """One step per non-blank line, each span including its newline and any blank lines after it."""
    starts = [m.start() for m in _LINE_START.finditer(solution)]
    bounds = [0, *starts[1:], len(solution)]
    return list(zip(bounds, bounds[1:]))


def parse_number(text: str) -> str | None:
    """The number at the start of `text` in canonical form (`1,000.50` -> `1000.5`, `$-5` -> `-5`), or None.

    Anything after the number (units, `%`, a full stop) is ignored: `50%` is 50, as GSM8K's gold answers
    for percentage questions are the bare number.
    """
    match = _NUMBER.match(text)
    if not match:
        return None
    try:
        value = Decimal(match["digits"].replace(",", ""))
    except InvalidOperation:
        return None
    if match["sign"] in ("-", "−"):
        value = -value
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_answer(text: str) -> str | None:
    """The number right after the last `The answer is` (any case) or `####`; None when there is none."""
    last = None
    for last in _TAG.finditer(text):
        pass
    return parse_number(text[last.end() :]) if last else None


def grade(completion: str, gold: str) -> bool:
    """Numeric equality of the completion's final answer and the gold answer (a bare number such as `1,000`)."""
    pred = extract_answer(completion)
    return pred is not None and pred == parse_number(gold)


def load(split: str, cfg: TaskConfig) -> list[dict]:
    """Problems `{id, question, solution, answer}` of `split` from `cfg.train_path` (train, validation) or
    `cfg.test_path` (test)."""
    source = source_split(split, "gsm8k")
    return split_problems(build_problems(read_rows(cfg, source), lambda row, index: _problem(row, index, source)), split, cfg)


def _problem(row: dict, index: int, split: str) -> dict:
    question = text_field(row, ("query", "question")).strip()
    response = text_field(row, ("response", "answer"))
    tag = response.rfind("####")
    answer = parse_number(response[tag + 4 :]) if tag >= 0 else None
    if answer is None:
        raise DataError(f"the solution must end with a line `#### <number>`, got {response[-60:]!r}")
    # The paper's SFT target: the `####` tag becomes `The answer is`, everything else stays as written.
    solution = (response[:tag] + "The answer is " + response[tag + 4 :].lstrip()).strip()
    return {"id": problem_id(row, index, f"gsm8k-{split}"), "question": question, "solution": solution,
            "answer": answer}
