"""Symbolic equivalence of two bare answers with math-verify. Nothing here bounds its own time: the grader calls
`equivalent` inside `DeadlinePool` workers (bench/grade.py calls `parse_answer` directly, on trusted gold answers).

Only math-verify's LaTeX parser is used: its plain-expression extractor goes through sympy's `parse_expr`, which
executes its input as Python, so `__import__('os').system(...)` in a model's answer would run. Both of
math-verify's own timeouts are off (`None`): they rely on SIGALRM, and the pool bounds the time instead.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from math_verify import LatexExtractionConfig, parse, verify
from sympy import Expr, N

_LATEX_ONLY = [LatexExtractionConfig()]

# math-verify warns once per process that its timeout is off; here that is the design, not a hazard.
logging.getLogger("math_verify").setLevel(logging.ERROR)


# Spellings in MATH's gold answers that math-verify's parser misreads (found by bench/grade.py's parse count).
_REWRITES = [
    (re.compile(r"(?<=\d)(?:,\\!|\{,\})(?=\d{3})"), ""),  # digit groups: 29,\!322,\!216 -> 29322216
    (re.compile(r"\\[dt]?frac\s*(\\[a-zA-Z]+|\w)\s*(\\[a-zA-Z]+|\w)"), r"\\frac{\1}{\2}"),  # \frac\pi 2
    (re.compile(r"^\s*\\approx"), ""),  # \approx 8.24: the value is the number
]


@lru_cache(maxsize=4096)
def parse_answer(answer: str) -> list:
    """math-verify's reading of a bare answer: [sympy object, text], or [text] when it cannot parse it."""
    for pattern, replacement in _REWRITES:
        answer = pattern.sub(replacement, answer)
    # A bare answer is parsed as the content of \boxed{}, the anchor math-verify trusts most.
    return parse("\\boxed{" + answer + "}", extraction_config=_LATEX_ONLY, parsing_timeout=None)


def equivalent(pred: str, gold: str) -> bool:
    """Do the two answers denote the same value, set, interval, tuple, matrix or equation? (Not symmetric:
    `gold` decides, e.g. gold `5` accepts `x=5`.)"""
    gold_parsed, pred_parsed = parse_answer(gold), parse_answer(pred)
    if not verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return False
    return not _tiny_and_different(gold_parsed[0], pred_parsed[0])


def _tiny_and_different(gold, pred) -> bool:
    """math-verify compares numbers with an absolute tolerance (`evalf(chop=True)`, rounding to 6 decimals), under
    which 1/2^90 equals 1/2^98. Numbers that small must agree to 6 significant digits instead."""
    if not (isinstance(gold, Expr) and isinstance(pred, Expr) and gold.is_number and pred.is_number):
        return False
    try:
        g, p = N(gold, 30), N(pred, 30)
        scale = max(abs(g), abs(p))
        return bool(0 < scale < 1e-6 and abs(g - p) > 1e-6 * scale)
    except (TypeError, ValueError, ArithmeticError):  # nan, zoo, no ordering: math-verify's verdict stands
        return False


def warm_up() -> None:
    """Run by the worker template before it forks servers: the first parse builds math-verify's parser and
    imports sympy's lazy modules (~0.2 s), which every server then inherits."""
    equivalent("\\frac{1}{2}", "0.5")
