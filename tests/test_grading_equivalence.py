"""One table of answer pairs, equal and not equal, for both graders: the cases that decide whether RFT rows,
outcome pairs, pits and accuracies can be trusted. Runs on: CPU (~100 math-verify comparisons in a worker)."""

import pytest

from selfexplore.tasks import gsm8k
from selfexplore.tasks import math as math_task

# (completion or bare predicted answer, gold answer, equal?)
MATH_CASES = [
    # fractions, decimals, spellings of \frac
    ("\\frac{1}{2}", "0.5", True),
    ("\\dfrac{1}{2}", "\\frac12", True),
    ("\\tfrac{3}{4}", "\\frac{3}{4}", True),
    ("0.75", "\\frac34", True),
    ("1.5", "\\frac{3}{2}", True),
    ("3/2", "1\\frac{1}{2}", True),
    ("\\frac{7}{3}", "2\\frac{1}{3}", True),
    ("\\frac{-1}{2}", "-\\frac{1}{2}", True),
    ("\\frac{2}{3}", "\\frac{3}{2}", False),
    ("\\frac{1}{3}", "0.33", False),
    ("0.5", "5", False),
    # integers, thousands separators, currency, units, degrees, percent
    ("10,000", "10000", True),
    ("1,\\!657", "1657", True),
    ("\\$42.50", "42.5", True),
    ("5\\text{ cm}", "5", True),
    ("5 \\text{ inches}", "5", True),
    ("90^\\circ", "90", True),
    ("90^{\\circ}", "90", True),
    ("50\\%", "50", True),
    ("25\\%", "25", True),
    ("50\\%", "5", False),
    ("5\\text{ cm}", "6", False),
    ("1,000", "1", False),
    # digit groups against lists: a space after the comma makes a list
    ("1,234", "1234", True),
    ("1,000,000", "1000000", True),
    ("1\\,234", "1234", True),  # a thin space groups digits too
    ("(1, 2)", "(1,2)", True),  # ...but not in a tuple, which math-verify compares
    ("0, 100", "100", False),
    ("100", "0, 100", False),
    ("1, 234", "1234", False),
    ("1234", "1, 234", False),
    ("1, 234", "1,234", False),
    ("0,100", "100", False),  # no digit grouping starts with 0
    ("1,2345", "12345", False),
    # signs, currency, trailing zeros and full stops
    ("\\$-5", "-5", True),
    ("-\\$5", "-5", True),
    ("5.00", "5", True),
    ("5.", "5", True),
    # numbers in a base
    ("1242_{5}", "1242_5", True),
    ("28", "28_9", True),  # the base left out: accepted, as math-verify does
    ("141_{12}", "141_{13}", False),  # math-verify alone: equal (it drops subscripts)
    ("a_1 + a_2", "a_2 + a_1", True),  # variables' subscripts are no bases
    ("10", "100", False),
    ("-5", "5", False),
    ("2", "3", False),
    # radicals, pi, powers, complex numbers
    ("2\\sqrt{3}", "\\sqrt{12}", True),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\sqrt[3]{8}", "2", True),
    ("\\pi/2", "\\frac{\\pi}{2}", True),
    ("2\\pi", "2 \\pi", True),
    ("2^{10}", "1024", True),
    ("10^{-3}", "0.001", True),
    ("2^{-98}", "\\frac{1}{2^{98}}", True),
    ("\\frac{1}{2^{90}}", "\\frac{1}{2^{98}}", False),  # math-verify alone: equal (absolute tolerance)
    ("8+4i", "4i+8", True),
    ("2\\sqrt{2}", "\\sqrt{2}", False),
    ("\\sqrt{2}/2", "\\sqrt{2}", False),
    ("\\sqrt{3}", "1.732", False),
    ("\\pi", "3.14", False),
    ("2^{10}", "1000", False),
    ("2+i", "2-i", False),
    # expressions and equations
    ("x^2+2x+1", "(x+1)^2", True),
    ("12x -34", "-34 + 12x", True),
    ("x=5", "5", True),
    ("5", "x = 5", True),
    ("k=3", "3", True),
    ("y = 2x+3", "2x+3", True),
    ("x^2+1", "(x+1)^2", False),
    ("\\frac{1}{2}", "\\frac{1}{2}x", False),
    ("k=5", "k=6", False),
    ("x=5", "y=5", False),
    ("x>5", "x\\ge5", False),
    # intervals, tuples, sets, lists of answers
    ("\\left( 1, 2 \\right)", "(1,2)", True),
    ("[1, 2)", "\\left[1,2\\right)", True),
    ("(-\\infty, 3)", "(-\\infty,3)", True),
    ("(-\\infty,-2)\\cup(3,\\infty)", "(3,\\infty)\\cup(-\\infty,-2)", True),
    ("x \\in [1,2]", "[1,2]", True),
    ("(3, -5)", "\\left(3,-5\\right)", True),
    ("1,2,3", "3,2,1", True),
    ("\\{1, 2\\}", "\\{2, 1\\}", True),
    ("-2 \\text{ and } 1", "1, -2", True),
    ("a=7, b=9", "7, 9", True),
    ("(1,2)", "(2,1)", False),
    ("[1,2]", "(1,2)", False),
    ("(0,\\infty)", "[0,\\infty)", False),
    ("\\{1,2,3\\}", "\\{1,2\\}", False),
    ("(1,2,3)", "(1,2)", False),
    ("-2, 1", "1", False),
    ("1", "-2, 1", False),
    ("1 \\text{ or } 2", "1", False),
    ("\\infty", "-\\infty", False),
    # matrices and vectors
    ("\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{bmatrix}0&3\\\\0&-1\\end{bmatrix}", True),
    ("\\begin{pmatrix} 1/2 \\\\ -3 \\end{pmatrix}", "\\begin{pmatrix} \\frac{1}{2} \\\\ -3 \\end{pmatrix}", True),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1&2\\end{pmatrix}", False),
    ("\\begin{pmatrix}1\\\\2\\end{pmatrix}", "\\begin{pmatrix}1\\\\3\\end{pmatrix}", False),
    # words and multiple choice
    ("\\text{(C)}", "C", True),
    ("\\text{Devon}", "Devon", True),
    ("A", "B", False),
    ("\\text{Monday}", "\\text{Tuesday}", False),
    ("", "5", False),
]

# Whole completions: extraction and grading together.
MATH_COMPLETIONS = [
    ("So $x = \\boxed{\\dfrac{1}{2}}$.", "0.5", True),
    ("Thus $y=2$.\nThe answer is $\\frac{\\sqrt{3}}{2}$.", "\\frac{\\sqrt3}{2}", True),
    ("First $\\boxed{2}$, but correcting, $\\boxed{3}$.", "3", True),
    ("\\fbox{7}", "7", True),
    ("We find $x = 5$, so five.", "5", False),  # no box, no answer line: no answer
    ("so the answer is $\\boxed{\\frac{1}{", "\\frac12", False),  # cut off inside the box
    ("The answer is \\$-5.", "-5", True),
    ("The answer is $0, 100$.", "100", False),
]

GSM8K_CASES = [
    ("2 + 3 = 5\nThe answer is 18", "18", True),
    ("The answer is $18.", "18", True),
    ("The answer is 1,000", "1000", True),
    ("The answer is 1000", "1,000", True),
    ("The answer is 18 dollars", "18", True),
    ("The answer is: 5", "5", True),
    ("The answer is -3", "-3", True),
    ("The answer is 2.50", "2.5", True),
    ("The answer is 50%", "50", True),
    ("#### 72", "72", True),
    ("The answer is \\$5", "5", True),
    ("The answer is 0.5", ".5", True),
    ("The answer is 3.\nWait.\nThe answer is 4", "4", True),
    ("The answer is $-5", "-5", True),
    ("The answer is $ -5.", "-5", True),
    ("The answer is \\$-5", "-5", True),
    ("The answer is 5.00", "5", True),
    ("The answer is $1,000,000.", "1000000", True),
    ("The answer is 18", "19", False),
    ("The answer is $-5", "5", False),
    ("The answer is 1,2345", "12345", False),  # a broken digit group is read up to its comma
    ("The answer is 0,100", "100", False),
    ("The answer is 1, 234", "1234", False),
    ("18", "18", False),  # no answer tag
    ("The answer is 1,000", "1", False),
    ("The answer is 2.5", "2", False),
    ("The answer is -3", "3", False),
    ("The answer is 3.\nWait.\nThe answer is 4", "3", False),
    ("The answer is unknown", "5", False),
    ("The answer is 12,34", "1234", False),
    ("<<__import__('os').system('echo pwned')=5>>5\nThe answer is 5", "6", False),
]


def test_the_table_is_large_and_balanced():
    cases = MATH_CASES + MATH_COMPLETIONS + GSM8K_CASES
    equal = sum(expected for _, _, expected in cases)
    assert len(cases) >= 80 and 0.4 <= equal / len(cases) <= 0.6


@pytest.mark.parametrize("pred, gold, expected", MATH_CASES)
def test_math_answers(pred, gold, expected):
    assert math_task.answers_equal(pred, gold) is expected


@pytest.mark.parametrize("completion, gold, expected", MATH_COMPLETIONS)
def test_math_completions(completion, gold, expected):
    assert math_task.grade(completion, gold) is expected


@pytest.mark.parametrize("completion, gold, expected", GSM8K_CASES)
def test_gsm8k(completion, gold, expected):
    assert gsm8k.grade(completion, gold) is expected
