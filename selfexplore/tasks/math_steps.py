"""Splitting MATH solutions into steps, as character spans that together cover the solution exactly.

Exploration cuts a solution after each step and lets the model continue from there, so a step boundary must be a
place where a person would pause: never inside a formula. Two splitters:

- `clean_steps` (default): paragraphs, then sentences that end outside math; `$..$`, `$$..$$`, `\\(..\\)`, `\\[..\\]`,
  `\\begin{..}..\\end{..}` and `[asy]..[/asy]` are never cut; a line starting `The answer is` is its own step.
- `paper_steps`: the original Self-Explore heuristic (`get_final_steps`, reference §5.1): cut at newlines and at
  `.$ ` / `$. `, merge short parts, at most 9 parts, the answer line split off, and a further split of each part
  at a connective when there are 3 parts or fewer. Reproduced exactly, for comparison runs.
"""

from __future__ import annotations

import re

# ------------------------------------------------------------------------------------------------------ clean

_ABBREVIATIONS = ("i.e.", "e.g.", "ex.", "cf.", "vs.", "Mr.", "Mrs.", "Ms.", "Dr.")
_FRAGMENT_CHARS = 20
_NOT_A_SENTENCE_END = re.compile(r"(?:^|\n)[ \t]*\(?(?:\d{1,2}|[a-zA-Z])[.)]$|[0-9)!]!$|\s\.$")
"""`1.` / `(a)` numbering a list, `8!` a factorial, ` .` in an ellipsis `. . .`; matched against the text so far."""
_BLANK_LINE = re.compile(r"\n[ \t]*\n\s*")
_WHITESPACE = re.compile(r"\s+")
_CLOSERS = re.compile(r"[\"')\]]*")
_BEGIN = re.compile(r"\\begin\{([^{}]*)\}")
_ANSWER_LINE = re.compile(r"^The answer is", re.MULTILINE)


def clean_steps(text: str) -> list[tuple[int, int]]:
    """Paragraphs, then sentences ending outside math, fragments merged, the answer line alone."""
    cuts = {cut for cut in _cuts(text) if 0 < cut < len(text)}
    answer_line = None
    for answer_line in _ANSWER_LINE.finditer(text):
        pass
    answer_start = answer_line.start() if answer_line else -1
    if answer_start >= 0:
        # The answer line is one step, whatever full stops it holds (`34\text{ sq. units}`).
        line_end = text.find("\n", answer_start)
        cuts = {cut for cut in cuts if not answer_start < cut <= (len(text) if line_end < 0 else line_end)}
        if answer_start > 0:
            cuts.add(answer_start)
    bounds = [0, *sorted(cuts), len(text)]
    return _merge_fragments(text, list(zip(bounds, bounds[1:])), answer_start) or [(0, 0)]


def _merge_fragments(text: str, spans: list[tuple[int, int]], answer_start: int) -> list[tuple[int, int]]:
    """A fragment (under 20 visible characters) is no step of its own: a lower-case one ends the sentence before
    it (`feet.`) and joins it; any other (`Thus,`, `- OR -`, `We see that` before a display) joins the next step.
    The answer line always stays alone."""
    steps: list[tuple[int, int]] = []
    carried = None  # start of fragments waiting for the next step
    for k, (start, end) in enumerate(spans):
        if carried is not None:
            start, carried = carried, None
        content = text[start:end].strip()
        next_is_free = k + 1 < len(spans) and spans[k + 1][0] != answer_start
        if start == answer_start or len(content) >= _FRAGMENT_CHARS:
            steps.append((start, end))
        elif steps and (content[:1].islower() or not next_is_free) and steps[-1][0] != answer_start:
            steps[-1] = (steps[-1][0], end)
        elif next_is_free:
            carried = start
        else:
            steps.append((start, end))
    return steps


def _cuts(text: str):
    """Positions where a new step starts: after a paragraph break, or after a sentence end and its whitespace."""
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if blank := _BLANK_LINE.match(text, i):
            yield blank.end()
            i = blank.end()
        elif text.startswith("[asy]", i):
            end = text.find("[/asy]", i)
            i = n if end < 0 else end + len("[/asy]")
        elif ch == "$" or text.startswith(("\\[", "\\(", "\\begin{"), i):
            start, (content_end, i) = i, _end_of_formula(text, i)
            last = content_end - 1
            while last > start and text[last].isspace():
                last -= 1
            if text[last] == ".":  # `\[x = 5.\]`, `$x = 5.$`: the formula ends the sentence
                yield from _after_sentence(text, i, formula=True)
        elif ch == "\\":
            i += 2  # an escaped character (`\$`, `\{`) is text, never a delimiter
        elif ch in ".?!" and not _continues_sentence(text, i):
            i = _CLOSERS.match(text, i + 1).end()
            yield from _after_sentence(text, i)
        else:
            i += 1


def _continues_sentence(text: str, i: int) -> bool:
    """Is the `.`/`?`/`!` at i not a sentence end?"""
    return text.endswith(_ABBREVIATIONS, 0, i + 1) or bool(_NOT_A_SENTENCE_END.search(text, max(0, i - 8), i + 1))


def _after_sentence(text: str, i: int, formula: bool = False):
    """The next step starts after the whitespace that follows a sentence end. Without whitespace the sentence
    goes on (`3.5`, `e.g.`), except after a formula: MATH writes `\\[x = 5.\\]Then ...`."""
    space = _WHITESPACE.match(text, i)
    if _BLANK_LINE.match(text, i):  # a paragraph break is cut by the scanner itself
        return
    if space:
        yield space.end()
    elif formula:
        yield i


def _end_of_formula(text: str, start: int) -> tuple[int, int]:
    """(end of the content, end of the closing delimiter) of the formula opening at `start`."""
    if begin := _BEGIN.match(text, start):
        # Same-name environments may nest; an unclosed one runs to the end of the text.
        depth, pattern = 0, re.compile(r"\\(begin|end)\{" + re.escape(begin[1]) + r"\}")
        for m in pattern.finditer(text, start):
            depth += 1 if m[1] == "begin" else -1
            if depth == 0:
                return m.start(), m.end()
        return len(text), len(text)
    opener = "$$" if text.startswith("$$", start) else "$" if text[start] == "$" else text[start : start + 2]
    closer = {"$$": "$$", "$": "$", "\\[": "\\]", "\\(": "\\)"}[opener]
    i = start + len(opener)
    while i < len(text):
        if text.startswith(closer, i):
            return i, i + len(closer)
        if text[i] == "\\":
            i += 2
        elif _BLANK_LINE.match(text, i):
            # LaTeX forbids paragraphs inside math: a stray `$` must not swallow the rest of the solution.
            return i, i
        else:
            i += 1
    return len(text), len(text)


# ------------------------------------------------------------------------------------------------------ paper
# Parts are spans (start, end); "length" is end - start, as the original measured its strings.

_PAPER_PIECE_END = re.compile(r"\.\$\s+|\$\.\s+")
_PAPER_CONNECTIVES = (",$", ", which", " so", " = ", " and", "Thus", "=")
_PAPER_MAX_STEPS = 9
_PAPER_SHORT = 20  # characters


def paper_steps(text: str) -> list[tuple[int, int]]:
    """The original `get_final_steps` for MATH, on spans instead of strings."""
    if not text:
        return [(0, 0)]
    parts = _merge_short(text, _paper_pieces(text))
    while len(parts) > _PAPER_MAX_STEPS:
        _merge_into_neighbour(parts, min(range(len(parts)), key=lambda k: _length(parts[k])))
    _split_off_answer(text, parts)
    if len(parts) <= 3:
        parts = [half for part in parts for half in _halve_at_connective(text, part)]
    return parts


def _length(span: tuple[int, int]) -> int:
    return span[1] - span[0]


def _paper_pieces(text: str) -> list[tuple[int, int]]:
    """Newline runs (`\\n\\n`, `\\n`) are pieces of their own; a line is cut after each `.$ ` or `$. `."""
    pieces = []
    for line in re.finditer(r"\n\n|\n|[^\n]+", text):
        start = line.start()
        if line[0][0] != "\n":
            for end in _PAPER_PIECE_END.finditer(text, line.start(), line.end()):
                pieces.append((start, end.end()))
                start = end.end()
        if start < line.end():
            pieces.append((start, line.end()))
    return pieces


def _merge_short(text: str, parts: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged = []
    for part in parts:
        # A whitespace-only or short piece joins the one before it.
        if merged and (_length(part) < _PAPER_SHORT or not text[part[0] : part[1]].strip()):
            merged[-1] = (merged[-1][0], part[1])
        else:
            merged.append(part)
    # Then parts shorter than 0.3 x the mean length merge into a neighbour, until none is left.
    threshold = 0.3 * sum(map(_length, merged)) / len(merged)
    i = 0
    while i < len(merged):
        if _length(merged[i]) < threshold:
            i = _merge_into_neighbour(merged, i)
        else:
            i += 1
    return merged


def _merge_into_neighbour(parts: list[tuple[int, int]], i: int) -> int:
    """Part i joins the previous part if there is one and it is shorter than the next (or i is last), else it
    absorbs the next part. Returns the index of the merged part."""
    if i > 0 and (i == len(parts) - 1 or _length(parts[i - 1]) < _length(parts[i + 1])):
        parts[i - 1] = (parts[i - 1][0], parts.pop(i)[1])
        return i - 1
    parts[i] = (parts[i][0], parts.pop(i + 1)[1])
    return i


def _split_off_answer(text: str, parts: list[tuple[int, int]]) -> None:
    """`The answer is ...` inside the last part becomes the last step; a short remainder before it joins the
    part before."""
    start, end = parts[-1]
    tag = text.find("The answer is", start, end)
    if tag <= start:
        return
    if len(parts) >= 2 and tag - start < _PAPER_SHORT:
        parts[-2] = (parts[-2][0], tag)
        parts[-1] = (tag, end)
    else:
        parts[-1] = (start, tag)
        parts.append((tag, end))


def _halve_at_connective(text: str, part: tuple[int, int]) -> list[tuple[int, int]]:
    """Cut a part once, just after the connective that best balances the halves, if both exceed 20 characters."""
    start, end = part
    if end - start < _PAPER_SHORT:
        return [part]
    positions = sorted(
        m.start() + len(connective)
        for connective in _PAPER_CONNECTIVES
        for m in re.finditer(f"(?={re.escape(connective)})", text[start:end])
    )
    if not positions:
        return [part]
    length = end - start
    best = min(positions, key=lambda pos: abs(2 * pos - length))  # first of equally balanced cuts, as the original
    if best > _PAPER_SHORT and length - best > _PAPER_SHORT:
        return [(start, start + best), (start + best, end)]
    return [part]
