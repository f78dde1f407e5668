"""`gsm8k`: grade-school math word problems; solutions one step per line, last line `The answer is N`.

First version (issue 2): answer extraction and numeric grading shared with `arith`, and line-based steps.
"""

from __future__ import annotations

import re

_ANSWER = re.compile(r"(?:The answer is|####)\s*:?\s*\$?\s*(-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+)")


def split_steps(solution: str) -> list[tuple[int, int]]:
    """One step per line, each span including its newline; blank lines join the step before them."""
    spans, start = [], 0
    for i, ch in enumerate(solution):
        if ch == "\n" and solution[start:i].strip():
            spans.append((start, i + 1))
            start = i + 1
    if solution[start:].strip() or not spans:
        spans.append((start, len(solution)))
    else:
        spans[-1] = (spans[-1][0], len(solution))
    return spans


def normalize_number(text: str) -> str | None:
    text = text.replace(",", "").rstrip(".")
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value == int(value) else repr(value)


def extract_answer(text: str) -> str | None:
    matches = _ANSWER.findall(text)
    return normalize_number(matches[-1]) if matches else None


def grade(completion: str, gold: str) -> bool:
    pred = extract_answer(completion)
    return pred is not None and pred == normalize_number(gold)
