"""`math`: competition mathematics (Hendrycks et al.'s MATH), LaTeX solutions, answers graded symbolically.

Rows come as the MATH release (`problem`/`solution`/`level`/`type`, optional `id`), MATH-500 style (`answer`,
`subject`, `unique_id`) or Self-Explore files (`query`/`response`). The gold answer is the last `\\boxed{}` of the
solution (the MATH convention; all boxes of the last paragraph when the question asks for several answers), and
the solution gains a last line `The answer is <answer>`, the paper's format. Problem rows carry `level` and
`subject` when the data has them, for the per-level and per-subject eval report. See docs/grading.md.

Grading compares the completion's final answer with the gold answer: identical strings or equal integers are
decided here at once (most samples); anything else goes to math-verify (sympy) in a worker process with a
per-item deadline (`deadline_pool`), so no completion can stall a rollout, whatever thread grades it.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from selfexplore.config import TaskConfig
from selfexplore.errors import DataError
from selfexplore.tasks.deadline_pool import DeadlinePool, WorkerError
from selfexplore.tasks.math_steps import clean_steps, paper_steps
from selfexplore.tasks import source_split, split_problems
from selfexplore.tasks.sources import SkippedRow, build_problems, problem_id, read_rows, text_field

logger = logging.getLogger(__name__)

GRADE_TIMEOUT_S = 5.0
"""Per-item cap on symbolic grading, in seconds; past it the item counts as incorrect and is logged."""

ANSWER_TAG = "The answer is"

_POOL = DeadlinePool("selfexplore.tasks.symbolic", "equivalent")

# ------------------------------------------------------------------------------------------- answer extraction

_BOX = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])\s*")
_BRACE = re.compile(r"\\[{}]|[{}]")  # escaped braces are literal characters, not groups
_TAG = re.compile(re.escape(ANSWER_TAG), re.IGNORECASE)
_BARE_TOKEN = re.compile(r"\\[a-zA-Z]+|[^\s{}\\]")  # `\boxed 2`, `\boxed\pi`: LaTeX boxes the next token
_DOLLAR = re.compile(r"(?<!\\)\$")  # a math delimiter; `\$` is a dollar sign
_LIST_REQUEST = re.compile(
    r"separated by (?:a )?(?:commas?|semicolons?)|comma\(s\)|\b(?:enter|list|find) all\b|all possible values"
    r"|all (?:the )?solutions",
    re.IGNORECASE,
)


def _matching_braces(text: str) -> dict[int, int]:
    """Position of every `{` -> position of its `}`, in one pass (unbalanced ones are left out)."""
    pairs, stack = {}, []
    for m in _BRACE.finditer(text):
        if m[0] == "{":
            stack.append(m.start())
        elif m[0] == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _complete_boxes(text: str) -> list[tuple[int, str]]:
    """(position, content) of every complete `\\boxed{...}` / `\\fbox{...}`, nested braces allowed. A box cut off
    by the token limit is no answer and is left out."""
    boxes = list(_BOX.finditer(text))
    if not boxes:
        return []
    pairs, found = _matching_braces(text), []
    for box in boxes:
        start = box.end()
        if start < len(text) and text[start] == "{":
            if start in pairs:
                found.append((box.start(), text[start + 1 : pairs[start]]))
        elif token := _BARE_TOKEN.match(text, start):
            found.append((box.start(), token[0]))
    return found


def last_boxed(text: str) -> str | None:
    """Content of the last complete `\\boxed{...}` / `\\fbox{...}`, else None."""
    boxes = _complete_boxes(text)
    return boxes[-1][1] if boxes else None


def _clean(answer: str) -> str:
    """One line, no surrounding space, math delimiters or final full stop: `$x = 5$.` -> `x = 5`."""
    answer = " ".join(answer.split())
    answer = answer.removeprefix(":").strip().rstrip(".,;").strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if answer.startswith(left) and answer.endswith(right) and len(answer) >= len(left) + len(right):
            answer = answer[len(left) : len(answer) - len(right)].strip().rstrip(".").strip()
            break
    return answer


def _after_tag(line: str) -> str | None:
    """The answer stated by a `The answer is ...` line: a box in it, else the rest of the line as math."""
    boxed = last_boxed(line)
    if boxed is not None:
        return _clean(boxed) or None
    # The rest of the line is text with math in it (`$5$ and $6$.`): the delimiters go, the math stays.
    return _clean(_DOLLAR.sub("", line)) or None


def extract_answer(text: str) -> str | None:
    """The final answer of a solution or completion, in this order:

    1. a last line `The answer is ...` (the format every model here is trained to end with; for a multi-answer
       problem it holds the whole list, while the boxes before it hold its parts);
    2. else the last complete `\\boxed{}` / `\\fbox{}` (an empty one is an explicit non-answer: None);
    3. else the rest of the line after the last `The answer is` anywhere; else None.
    """
    last_line = text.rstrip().rsplit("\n", 1)[-1].lstrip()
    if _TAG.match(last_line):
        return _after_tag(last_line[_last_tag(last_line).end() :])
    boxed = last_boxed(text)
    if boxed is not None:
        return _clean(boxed) or None
    last = _last_tag(text)
    return _after_tag(text[last.end() :].split("\n", 1)[0]) if last else None


def _last_tag(text: str) -> re.Match | None:
    last = None
    for last in _TAG.finditer(text):
        pass
    return last


def gold_answer(question: str, solution: str) -> str | None:
    """The answer of a MATH gold solution: its final answer, except that when the question asks for several
    answers (`Enter all the solutions, separated by commas`) and the last paragraph boxes each of them
    (`$x = \\boxed{3}$ or $x = \\boxed{\\frac{2}{5}}$`), it is all of them: `3, \\frac{2}{5}` (18 of MATH's 12,500)."""
    answer = extract_answer(solution)
    if answer is None or not _LIST_REQUEST.search(question):
        return answer
    boxes = _complete_boxes(solution)
    paragraph = solution.rfind("\n\n", 0, boxes[-1][0]) if boxes else -1
    parts = list(dict.fromkeys(_clean(content) for start, content in boxes if start > paragraph))
    return ", ".join(parts) if len(parts) > 1 and all(parts) else answer


# ------------------------------------------------------------------------------------------------------ grading

_SPACING = re.compile(r"(?:\\[,;: ]|\s)+")  # LaTeX spaces and whitespace; `\!` is a digit-group spelling
_SPACE_NOT_AFTER_COMMA = re.compile(r"(?<!,) ")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigl|bigr|Bigl|Bigr)(?![a-zA-Z])")
_INTEGER = re.compile(r"-?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)")  # `1,234`; `0,100` is no digit grouping
_BRACKETS = re.compile(r"[{}()\[\]]")
_BASE = re.compile(r"(?<![A-Za-z\\])(?=[0-9A-F]*\d)[0-9A-F]+_\{?(\d+)\}?")  # 1242_5, 141_{12}: base subscripts

MAX_SYMBOLIC_CHARS = 1000
"""Longer predicted answers are compared as text only. MATH's longest gold answer has 159 characters."""
MAX_SYMBOLIC_NESTING = 12
"""Answers with brackets nested deeper are compared as text only. MATH's gold answers nest at most 3 deep."""


def _integer_key(integer: str) -> str:
    """`-1,012` -> `-1012`, `007` -> `7`: compared as text, because int() refuses numbers over 4,300 digits."""
    digits = integer.replace(",", "").lstrip("-").lstrip("0") or "0"
    return "-" + digits if integer.startswith("-") and digits != "0" else digits


def _canonical(answer: str) -> str:
    """A spelling-insensitive form for the fast path; only rewrites that never change the value. Spacing goes,
    except one space after a comma: it tells a list (`1, 234`, `0, 100`) from a number's digit groups (`1,234`)."""
    answer = _SPACE_NOT_AFTER_COMMA.sub("", _SPACING.sub(" ", answer.replace("\\!", "")))
    answer = _SIZING.sub("", answer).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return answer.replace("{,}", ",").strip("$").rstrip(".").strip()


def answers_equal(pred: str, gold: str, timeout: float = GRADE_TIMEOUT_S) -> bool:
    """Is the predicted answer equivalent to the gold answer? Fast exact checks first, then math-verify."""
    pred_c, gold_c = _canonical(pred), _canonical(gold)
    if not pred_c or not gold_c:
        return False
    if pred_c == gold_c:
        return True
    if _INTEGER.fullmatch(pred_c) and _INTEGER.fullmatch(gold_c):
        return _integer_key(pred_c) == _integer_key(gold_c)
    if len(pred) > MAX_SYMBOLIC_CHARS or _nesting(pred) > MAX_SYMBOLIC_NESTING:
        return False  # no MATH answer looks like this; sympy would only spend the whole cap on it
    pred_bases, gold_bases = _BASE.findall(pred_c), _BASE.findall(gold_c)
    if pred_bases and gold_bases and sorted(pred_bases) != sorted(gold_bases):
        return False  # math-verify drops base subscripts: 141_{12} would equal 141_{13}
    try:
        return _symbolically_equal(pred, gold, timeout)
    except TimeoutError as e:
        logger.warning("MATH grading cut at the %gs cap (%s); counted incorrect: pred=%.200r gold=%.200r",
                       timeout, e, pred, gold)
    except WorkerError as e:
        logger.warning("MATH grading failed (%s); counted incorrect: pred=%.200r gold=%.200r", e, pred, gold)
    return False


@lru_cache(maxsize=1 << 16)
def _symbolically_equal(pred: str, gold: str, timeout: float) -> bool:
    # Cached: the 100 samples of one problem repeat the same few answers. A timeout raises, so is never cached:
    # a busy machine must not turn an answer wrong for good.
    return _POOL.call(pred, gold, timeout=timeout)


def _nesting(text: str) -> int:
    depth = deepest = 0
    for bracket in _BRACKETS.findall(text):
        depth = depth + 1 if bracket in "{([" else max(0, depth - 1)
        deepest = max(deepest, depth)
    return deepest


def grade(completion: str, gold: str, *, timeout: float = GRADE_TIMEOUT_S) -> bool:
    """Does the completion's final answer equal `gold` (a bare answer such as `\\frac{1}{2}`)? At most about
    `timeout` seconds; a comparison that needs longer counts as incorrect and is logged."""
    pred = extract_answer(completion)
    return pred is not None and answers_equal(pred, gold, timeout)


# ------------------------------------------------------------------------------------------------------ loading


def load(split: str, cfg: TaskConfig) -> list[dict]:
    """Problems `{id, question, solution, answer}` (+ `level`, `subject` when known) of `split`.

    A row whose solution states no answer (no box, or an empty one: two rows of the MATH train set) is left out
    with a warning naming it; a malformed row is a `DataError` naming its file and line.
    """
    source = source_split(split, "math")
    return split_problems(build_problems(read_rows(cfg, source), lambda row, index: _problem(row, index, source)), split, cfg)


def _problem(row: dict, index: int, split: str) -> dict:
    question = text_field(row, ("problem", "query", "question"))
    solution = text_field(row, ("solution", "response")).rstrip()
    if "answer" in row:
        answer = row["answer"]
        if not isinstance(answer, str):
            raise DataError(f"field `answer` must be a string, got {answer!r:.80}")
        answer = _clean(answer)
    else:
        answer = gold_answer(question, solution)
    if not answer:
        raise SkippedRow(f"no answer in the solution (no `\\boxed{{...}}` with content): ...{solution[-80:]!r}")
    last_line = solution.rsplit("\n", 1)[-1]
    if not (last_line.startswith(ANSWER_TAG) and extract_answer(last_line) == answer):
        solution += f"\n{ANSWER_TAG} {answer}"
    problem = {"id": problem_id(row, index, f"math-{split}"), "question": question.strip(), "solution": solution,
               "answer": answer}
    if "level" in row:
        level = row["level"]
        problem["level"] = f"Level {level}" if isinstance(level, int) and not isinstance(level, bool) else str(level)
    for name in ("type", "subject"):
        if name in row:
            problem["subject"] = str(row[name])
            break
    return problem


# ------------------------------------------------------------------------------------------------- step splitting


def split_steps(solution: str, mode: str = "clean") -> list[tuple[int, int]]:
    """Character spans of the solution's steps; together they cover `solution` exactly.

    `clean` (default): paragraphs, then sentences that end outside math; display math, `\\begin..\\end` blocks
    and `[asy]` pictures are never cut; a last line `The answer is ...` is its own step.
    `paper`: the original Self-Explore heuristic (reference §5.1), at most 9 steps before the answer split.
    """
    if mode == "clean":
        return clean_steps(solution)
    if mode == "paper":
        return paper_steps(solution)
    raise ValueError(f"unknown MATH step-splitting mode {mode!r}; choose clean or paper")
