"""Tests for metacot_jax.tasks: the exact verifier, the step checker and the solver.

Pure Python (no JAX, no chex). Arithmetic checks use an evaluator written here,
independent of `tasks.expression`, over expression trees built by the tests.
"""

from __future__ import annotations

import ast
import re
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from metacot_jax.metacot import trace
from metacot_jax.tasks import base, countdown, expression, game24
from metacot_jax.tasks.countdown import Countdown

F = Fraction
PROPERTY = settings(max_examples=250, deadline=None)


# --- An independent model of expressions: trees, exact evaluation, rendering ---
#
# A tree is an int (a leaf) or a tuple (op, left, right).

_PREC = {"+": 1, "-": 1, "*": 2, "/": 2}


def evaluate(tree) -> Fraction | None:
  """Exact value of `tree`; None when any division divides by zero."""
  if isinstance(tree, int):
    return Fraction(tree)
  op, left, right = tree
  a, b = evaluate(left), evaluate(right)
  if a is None or b is None:
    return None
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  return None if b == 0 else a / b


def leaves(tree) -> list[int]:
  return [tree] if isinstance(tree, int) else leaves(tree[1]) + leaves(tree[2])


@st.composite
def trees(draw, numbers):
  """A random binary tree using each of `numbers` once, with random ops."""
  pool = list(numbers)
  while len(pool) > 1:
    i = draw(st.integers(0, len(pool) - 1))
    a = pool.pop(i)
    j = draw(st.integers(0, len(pool) - 1))
    b = pool.pop(j)
    pool.append((draw(st.sampled_from("+-*/")), a, b))
  return pool[0]


@st.composite
def renderings(draw, tree):
  """`tree` as text: the parentheses precedence needs, plus random extra ones, and
  random spacing. Left-associative like ordinary arithmetic."""
  space = lambda: draw(st.sampled_from(["", " ", " ", "  "]))

  def render(node, parent_op=None, is_right=False):
    if isinstance(node, int):
      return str(node)
    op, left, right = node
    text = f"{render(left, op, False)}{space()}{op}{space()}{render(right, op, True)}"
    needed = parent_op is not None and (
        _PREC[op] < _PREC[parent_op]
        or (is_right and _PREC[op] == _PREC[parent_op] and parent_op in "-/"))
    if needed or draw(st.booleans()):
      text = f"({space()}{text}{space()})"
    return text

  return render(tree)


@st.composite
def game24_expressions(draw):
  """(puzzle, tree, answer text) for a random 4-number puzzle from 1..13."""
  numbers = tuple(draw(st.lists(st.integers(1, 13), min_size=4, max_size=4)))
  tree = draw(trees(numbers))
  text = draw(renderings(tree))
  form = draw(st.sampled_from(["bare", "eq", "answer"]))
  if form == "eq":
    text = f"{text} = 24"
  elif form == "answer":
    text = f"Answer: {text} = 24"
  return numbers, tree, text


def python_value(expr: str) -> Fraction:
  """A second, independent evaluation of an accepted answer: Python's own parser
  (ast, never eval) over Fractions, for text the verifier called correct."""
  expr = re.sub(r"(?<![0-9])0+(?=[0-9])", "", expr)  # `04` is not Python syntax
  expr = re.sub(r"\s+", " ", expr)  # the verifier takes any Unicode space
  def ev(node):
    if isinstance(node, ast.Expression):
      return ev(node.body)
    if isinstance(node, ast.Constant) and type(node.value) is int:
      return Fraction(node.value)
    if isinstance(node, ast.BinOp):
      a, b = ev(node.left), ev(node.right)
      ops = {ast.Add: a.__add__, ast.Sub: a.__sub__, ast.Mult: a.__mul__, ast.Div: a.__truediv__}
      return ops[type(node.op)](b)
    raise AssertionError(f"verifier accepted a non-arithmetic node {ast.dump(node)}")
  return ev(ast.parse(expr.strip(), mode="eval"))


def strip_answer(text: str) -> tuple[str, str | None]:
  """(lhs, rhs) of `Answer: lhs = rhs`, rhs None when there is no '='."""
  text = text.strip()
  if text.lower().startswith("answer:"):
    text = text[len("answer:"):]
  lhs, eq, rhs = text.rpartition("=")
  return (lhs, rhs.strip()) if eq else (text, None)


def _is_24(rhs: str | None) -> bool:
  return rhs is None or (re.fullmatch(r"[0-9]+", rhs) is not None and int(rhs) == 24)


# --- The test model, checked against itself on a known case ---

def test_model_evaluates_the_classic_fraction_answer():
  tree = ("/", 8, ("-", 3, ("/", 8, 3)))
  assert evaluate(tree) == 24
  assert evaluate(("/", 1, ("-", 3, 3))) is None
  assert python_value("8 / (3 - 8 / 3)") == 24


# --- Game of 24: the outcome verifier ---

@pytest.mark.parametrize("puzzle, answer", [
    ("4 5 6 10", "Answer: (5 * (10 - 4)) - 6 = 24"),
    ("4 5 6 10", "(5 * (10 - 4)) - 6"),
    ("4 5 6 10", "5*(10-4)-6=24"),
    ("4 5 6 10", "  answer:   5 * ( 10 - 4 ) - 6   =   24  \n"),
    ([10, 6, 5, 4], "Answer: 5 * (10 - 4) - 6 = 24"),
    ((4, 5, 6, 10), "((((5)) * (10 - 4))) - 6"),
    ("3 3 8 8", "8 / (3 - 8 / 3)"),
    ("3 3 8 8", "Answer: 8 / (3 - (8 / 3)) = 24"),
    ("8 3 8 3", "8/(3-8/3) = 24"),
    ("1 1 1 8", "(1 + 1 + 1) * 8"),
    ("1 2 3 4", "1 * 2 * 3 * 4"),
    ("4 4 10 10", "(10 * 10 - 4) / 4"),
    ("1 5 5 5", "5 * (5 - 1 / 5)"),
    ("4,5,6,10", "5 * (10 - 4) - 6"),
    ("4 5 6 10", "Answer: 05 * (10 - 4) - 6 = 024"),
])
def test_verify_accepts_correct_answers(puzzle, answer):
  verdict = game24.verify(puzzle, answer)
  assert isinstance(verdict, base.Verdict)
  assert verdict.ok, verdict.reason
  assert bool(verdict) is True
  assert verdict.reason


def test_verify_is_exact_not_floating_point():
  # 8 / (3 - 8/3) is 24.000000000000004 in floating point; it must still be exact 24.
  assert 8 / (3 - 8 / 3) != 24
  assert game24.verify("3 3 8 8", "8 / (3 - 8 / 3)").ok
  # And values that are merely close to 24 are wrong.
  verdict = game24.verify("3 3 8 8", "8 * 3 + 3 / 8")
  assert not verdict.ok and "195/8" in verdict.reason


_HUGE = "(1 + 1) * " * 600_000 + "1"  # about 6 MB


@pytest.mark.parametrize("answer, keywords", [
    ("", ["empty"]),
    ("   \n\t  ", ["empty"]),
    ("Answer:", ["empty"]),
    ("Answer: = 24", ["empty"]),
    ("hello world", ["unexpected", "'h'"]),
    ("\x00\x01", ["unexpected"]),
    ("x" * 5_000_000, ["5000000", "limit"]),
    (_HUGE, ["characters", "limit"]),
    ("(" * 100_000, ["characters", "limit"]),
    ("(" * 100_000 + "5 * (10 - 4) - 6" + ")" * 100_000, ["characters", "limit"]),
    ("(" * 40 + "5 * (10 - 4) - 6" + ")" * 40, ["nest", "32"]),
    ("(" * 33 + "5" + ")" * 33 + " * (10 - 4) - 6", ["nest"]),
    ("5 * (10 - 4) - 6 = 25", ["right-hand side", "25", "target 24"]),
    ("5 * (10 - 4) - 6 =", ["right-hand side", "target"]),
    ("5 * (10 - 4) - 6 = twenty-four", ["right-hand side"]),
    ("5 * (10 - 4) - 6 = 24.0", ["right-hand side"]),
    ("5 * (10 - 4) - 6 = -24", ["right-hand side"]),
    ("5 * (10 - 4) - 6 = 24 = 24", ["unexpected", "'='"]),
    ("5 * 10 - 4 - 6", ["equals 40", "not 24"]),
    ("Answer: 5 * 10 - 4 - 6 = 24", ["equals 40"]),
    ("10 / 4 + 5 + 6", ["equals 27/2"]),
    ("4 * 4 + 10 - 6 + 5", ["uses 4 2 times"]),
    ("4 * 6", ["does not use 5 10"]),
    ("4 * 6 * (10 - 5) / 5", ["uses 5 2 times"]),
    ("(5 * (10 - 4)) - 6 + 7 - 7", ["uses 7", "not one of the numbers"]),
    ("2 * 12", ["not one of the numbers"]),
    ("Answer: 24", ["uses 24", "not one of the numbers"]),
    ("4 5 6 10", ["unexpected '5'"]),
    ("(5 * (10 - 4) - 6", ["not closed"]),
    ("5 * (10 - 4)) - 6", ["unexpected ')'"]),
    ("5 * (10 - 4) -", ["ends"]),
    ("()", ["unexpected ')'"]),
    ("5 * () - 6", ["unexpected ')'"]),
    ("5 * (10 - 4) - 6 ** 1", ["unexpected '*'"]),
    ("5 * (10 - 4) - 6 ^ 1", ["unexpected character '^'"]),
    ("5 x (10 - 4) - 6", ["unexpected character 'x'"]),
    ("5 × (10 - 4) - 6", ["unexpected character '×'"]),
    ("5 * (10 − 4) - 6", ["unexpected character '−'"]),
    ("5 * (10 - 4) - 6 % 7", ["unexpected character '%'"]),
    ("5 * (10 - 4) // 1 - 6", ["unexpected '/'"]),
    ("-6 + 5 * (10 - 4)", ["unary minus"]),
    ("5 * (10 - 4) - -6 + 12", ["unary minus"]),
    ("+6 + 5 * (10 - 4) - 12", ["unexpected '+'"]),
    ("5.0 * (10 - 4) - 6", ["unexpected character '.'"]),
    ("5 * (10 - 4) - 6e0", ["unexpected character 'e'"]),
    ("٥ * (١٠ - ٤) - ٦", ["unexpected character '٥'"]),
    ("５ * (10 - 4) - 6", ["unexpected character '５'"]),
    ("5 * (10 - 4) - 6 = ²", ["right-hand side"]),  # '²'.isdigit() but int('²') raises
    ("5 * (10 - 4) - 6 = ٢٤", ["right-hand side"]),
    ("5 * (10 - ⁴) - 6", ["unexpected character"]),
    ("1" * 13 + " * 4 * 5 * 6", ["more than 12 digits"]),
    ("1" * 5000, ["limit"]),
    ("5 * (10 - 4) - 6; import os", ["unexpected character ';'"]),
    ("__import__('os').system('true')", ["unexpected character '_'"]),
])
def test_verify_rejects_bad_answers_with_a_reason(answer, keywords):
  verdict = game24.verify("4 5 6 10", answer)
  assert isinstance(verdict, base.Verdict)
  assert verdict.ok is False
  assert not verdict
  assert isinstance(verdict.reason, str) and verdict.reason.strip()
  for word in keywords:
    assert word in verdict.reason, (word, verdict.reason)
  assert len(verdict.reason) < 300  # a reason, not an echo of a huge input


@pytest.mark.parametrize("answer, keywords", [
    ("6 * 10 / (5 - 5)", ["division by zero"]),
    ("Answer: 6 * 10 / (5 - 5) = 24", ["zero"]),
    ("(5 - 5) / (5 - 5) * 6 * 10", ["zero"]),
    ("6 / (10 / (5 - 5)) + 5", ["zero"]),  # the inner division is the bad one
])
def test_verify_rejects_division_by_zero(answer, keywords):
  verdict = game24.verify("5 5 6 10", answer)
  assert not verdict.ok
  for word in keywords:
    assert word in verdict.reason


@pytest.mark.parametrize("answer", [None, b"5 * (10 - 4) - 6", 24, 24.0,
                                    ["5 * (10 - 4) - 6"], object()])
def test_verify_rejects_non_string_answers(answer):
  verdict = game24.verify("4 5 6 10", answer)
  assert not verdict.ok
  assert "string" in verdict.reason and type(answer).__name__ in verdict.reason


@pytest.mark.parametrize("puzzle, pattern", [
    ("", "empty"),
    ("   ", "empty"),
    ("a b c d", "whole numbers"),
    ("1 2 3", "4 numbers.*has 3"),
    ("1 2 3 4 5", "has 5"),
    ("1 2 3 14", r"1\.\.13"),
    ([1, 2, 3, 0], "below 1"),
    ("1 2 3 -4", "below 1"),
    (None, "NoneType"),
    (1234, "int"),
    (b"1 2 3 4", "bytes"),
    ([1, 2, 3, 4.0], "sequence of ints"),
    ([True, 2, 3, 4], "sequence of ints"),
    (["1", "2", "3", "4"], "sequence of ints"),
    ([], "sequence of ints"),
    ("1.5 2 3 4", "whole numbers"),
    ("١ 2 3 4", "whole numbers"),
    ("1_0 2 3 4", "whole numbers"),
    ("1 2 3 " + "9" * 5000, "digits"),
])
def test_malformed_puzzles_raise_value_error(puzzle, pattern):
  with pytest.raises(ValueError, match=pattern):
    game24.parse_puzzle(puzzle)
  with pytest.raises(ValueError, match=pattern):
    game24.verify(puzzle, "1 + 2 + 3 + 4")
  with pytest.raises(ValueError, match=pattern):
    game24.is_solvable(puzzle)
  with pytest.raises(ValueError, match=pattern):
    game24.solve(puzzle)


def test_parse_puzzle_and_make():
  assert game24.parse_puzzle("10 4 6 5") == (4, 5, 6, 10)
  assert game24.parse_puzzle([13, 1, 13, 1]) == (1, 1, 13, 13)
  assert game24.parse_puzzle(" 4, 5, 6, 10 ") == (4, 5, 6, 10)
  task = game24.make("10 4 6 5")
  assert task == Countdown((4, 5, 6, 10), 24)
  assert task.prompt() == "Input: 4 5 6 10 -> 24\n"
  assert task.initial_state() == (4, 5, 6, 10)
  assert all(isinstance(v, Fraction) for v in task.initial_state())
  assert task.verify("5 * (10 - 4) - 6").ok
  assert not task.verify("5 * (10 - 4) + 6").ok


# --- Countdown: any numbers, any target ---

def test_countdown_classic_and_prompt():
  task = Countdown.make([25, 50, 75, 100, 3, 6], 952)
  assert task.numbers == (3, 6, 25, 50, 75, 100)
  assert task.prompt() == "Input: 3 6 25 50 75 100 -> 952\n"
  assert task.verify("Answer: ((100 + 6) * 3 * 75 - 50) / 25 = 952").ok
  assert countdown.verify_answer([100, 75, 50, 25, 6, 3], 952,
                                 "((100 + 6) * 3 * 75 - 50) / 25").ok
  verdict = task.verify("((100 + 6) * 3 * 75 - 50) / 25 = 24")
  assert not verdict.ok and "target 952" in verdict.reason
  verdict = task.verify("(100 + 6) * 3 * 75 / 25")
  assert not verdict.ok and "does not use 50" in verdict.reason
  assert countdown.is_solvable(task.numbers, task.target)


@pytest.mark.parametrize("numbers, target, answer, ok, keyword", [
    ([2, 2], 4, "2 + 2", True, ""),
    ([2, 2], 4, "Answer: 2 * 2 = 4", True, ""),
    ([2, 2], 4, "2 + 2 + 2 - 2", False, "uses 2 4 times"),
    ([2, 2], 4, "4", False, "not one of the numbers"),
    ([7], 7, "7", True, ""),
    ([7], 7, "Answer: 7 = 7", True, ""),
    ([3, 3], 0, "Answer: 3 - 3 = 0", True, ""),
    ([1, 6], -5, "Answer: 1 - 6 = -5", True, ""),
    ([1, 6], -5, "1 - 6", True, ""),
    ([1, 6], -5, "6 - 1 = -5", False, "equals 5"),
    ([1, 6], -5, "1 - 6 = 5", False, "right-hand side"),
    ([1, 6], 5, "6 - 1 = -5", False, "right-hand side"),
    ([1, 6], 5, "6 - 1 = - 5", False, "right-hand side"),
    ([999999999999, 2], 1999999999998, "999999999999 * 2 = 1999999999998", True, ""),
    # A right-hand side longer than the target must not be truncated into it.
    ([999999999999, 2], 1000000000001, "999999999999 + 2 = 10000000000019", False,
     "right-hand side"),
    ([100, 7, 3], 700, "100 * 7 / 3 * 3", False, "uses 3 2 times"),
    ([100, 7, 3], 2100, "100 * 7 * 3", True, ""),
    ([5, 5, 5, 5, 5, 5, 5, 5], 40, "5+5+5+5+5+5+5+5", True, ""),
    ([5, 5, 5, 5, 5, 5, 5, 5], 40, "5+5+5+5+5+5+5+5 = 40", True, ""),
    ([5, 5], 1, "5 / (5 - 5) + 1", False, "zero"),
])
def test_countdown_verify_answer(numbers, target, answer, ok, keyword):
  verdict = countdown.verify_answer(numbers, target, answer)
  assert verdict.ok is ok, verdict.reason
  assert keyword in verdict.reason
  assert Countdown.make(numbers, target).verify(answer) == verdict


@pytest.mark.parametrize("puzzle, target, pattern", [
    ("1 2 3", "6", "target must be an int"),
    ("1 2 3", 6.0, "target must be an int"),
    ("1 2 3", True, "target must be an int"),
    ("1 2 3", None, "target must be an int"),
    ("1 2 3", np.bool_(True), "target must be an int"),
    ("1 2 3", np.float32(6), "target must be an int"),
    ("", 6, "empty"),
    ("1 2 x", 6, "whole numbers"),
    ("1 2 3 4 5 6 7 8 9", 6, "at most 8"),
    ([1, 2, 0], 6, "below 1"),
    ([1, 2, 10**12], 6, "12 digits"),
    (None, 6, "NoneType"),
    (b"123", 6, "bytes"),
    (7, 7, "int"),
])
def test_countdown_make_rejects_malformed(puzzle, target, pattern):
  with pytest.raises(ValueError, match=pattern):
    Countdown.make(puzzle, target)


def test_countdown_make_accepts_numpy_integer_targets():
  """The TFDS Countdown splits give np.int32 numbers and targets; the task keeps ints."""
  task = Countdown.make(np.array([10, 4, 6, 5], np.int32), np.int32(24))
  assert task == Countdown((4, 5, 6, 10), 24)
  assert type(task.target) is int and all(type(n) is int for n in task.numbers)
  assert task.verify("Answer: 5 * (10 - 4) - 6 = 24").ok
  assert Countdown.make("4 5 6 10", np.int64(-5)).target == -5


def test_countdown_steps_write_values_longer_than_the_numbers():
  """Values made from 12-digit numbers have more digits; the steps that write them
  still check, and spell out the answer (as `trace.linearize` needs)."""
  task = Countdown.make([999999999999, 2], 1999999999998)
  solutions = task.solve()
  assert [s.steps for s in solutions] == [("999999999999 * 2 = 1999999999998 "
                                           "(left: 1999999999998)",)]
  _check_solutions(task, solutions)
  (step,), start = solutions[0].steps, task.initial_state()
  assert countdown.answer_from_steps(task.numbers, task.target, [step]) == solutions[0].answer
  lines = trace.linearize(task, [trace.Expansion(start, step, task.check_step(start, step).state)],
                          [0])
  assert [line.text for line in lines] == [step, solutions[0].answer]


def test_steps_from_eight_largest_numbers_fit_the_limits():
  """Combining eight 12-digit numbers, always by the longest step: every step checks."""
  state = tuple(sorted(F(10**12 - k) for k in (1, 2, 3, 5, 7, 11, 13, 17)))
  while len(state) > 1:
    line, child = max(countdown.successors(state), key=lambda s: len(s[0]))
    assert len(line) <= countdown.MAX_STEP_CHARS
    check = countdown.check_step(state, line)
    assert check.ok, (line, check.reason)
    assert check.state == child
    state = child
  # the widest number a step can write, in every place, makes the longest step allowed
  d = countdown.MAX_VALUE_DIGITS
  w = f"-{'9' * d}/{'8' * d}"
  line = f"{w} * {w} = {w} (left:{f' {w}' * (countdown.MAX_NUMBERS - 1)})"
  assert len(line) == countdown.MAX_STEP_CHARS
  big = countdown.parse_number(w)
  assert countdown.check_step((big, big), line).kind == countdown.WRONG_RESULT


def test_countdown_verify_never_raises_on_bad_answers():
  for answer in ["", "x" * 3_000_000, "(" * 100_000, None, b"1", "1 / 0 = 1", "= 6",
                 "1 + 2 + 3 = 6 = 6", "1 + 2 + 3 = ²", "1 ** 2 + 3"]:
    verdict = countdown.verify_answer([1, 2, 3], 6, answer)
    assert not verdict.ok and verdict.reason


@st.composite
def countdown_expressions(draw):
  """(numbers, tree, target, answer text) with any numbers and a target that the
  tree hits about half the time (negative and fractional values included)."""
  big = st.integers(1, 10**12 - 1)
  numbers = tuple(draw(st.lists(st.one_of(st.integers(1, 20), big), min_size=1, max_size=6)))
  tree = draw(trees(numbers))
  value = evaluate(tree)
  if value is not None and value.denominator == 1 and draw(st.booleans()):
    target = int(value)
  else:
    target = draw(st.integers(-10**13, 10**13))
  text = draw(renderings(tree))
  form = draw(st.sampled_from(["bare", "eq", "answer"]))
  if form == "eq":
    text = f"{text} = {target}"
  elif form == "answer":
    text = f"Answer: {text} = {target}"
  return numbers, tree, target, text


@PROPERTY
@given(countdown_expressions())
def test_countdown_verifier_agrees_with_exact_evaluation(case):
  numbers, tree, target, text = case
  value = evaluate(tree)
  verdict = countdown.verify_answer(numbers, target, text)
  assert verdict.ok == (value is not None and value == target), (text, verdict)
  assert verdict.reason
  if value is None:
    assert "zero" in verdict.reason
  elif value != target:
    assert "equals" in verdict.reason or "right-hand side" in verdict.reason
  if verdict.ok and len(numbers) <= 5:
    assert countdown.is_solvable(numbers, target)


# --- Property tests on the Game of 24 verifier ---

@PROPERTY
@given(st.text())
@example("5 * (10 - 4) - 6 = ²")
@example("Answer: 5 * (10 - 4) - 6 = ٢٤")
@example("\ud800")
def test_verifier_never_raises_on_arbitrary_text(text):
  verdict = game24.verify("4 5 6 10", text)
  assert isinstance(verdict, base.Verdict)
  assert isinstance(verdict.ok, bool)
  assert isinstance(verdict.reason, str) and verdict.reason
  if verdict.ok:
    lhs, rhs = strip_answer(text)
    assert python_value(lhs) == 24 and _is_24(rhs)


@PROPERTY
@given(st.text(alphabet="0123456789+-*/() =Answer:", max_size=60))
@example("Answer: (5 * (10 - 4)) - 6 = 24")
def test_verifier_never_raises_on_arithmetic_looking_text(text):
  verdict = game24.verify("4 5 6 10", text)
  assert isinstance(verdict, base.Verdict)
  assert isinstance(verdict.reason, str) and verdict.reason
  if verdict.ok:
    # Any accepted text is a right answer by an independent evaluation.
    lhs, rhs = strip_answer(text)
    assert _is_24(rhs)
    assert python_value(lhs) == 24
    assert sorted(int(n) for n in re.findall(r"[0-9]+", lhs)) == [4, 5, 6, 10]


@PROPERTY
@given(game24_expressions())
@example(((3, 3, 8, 8), ("/", 8, ("-", 3, ("/", 8, 3))), "8 / (3 - 8 / 3)"))
@example(((4, 5, 6, 10), ("-", ("*", 5, ("-", 10, 4)), 6), "Answer: 5*(10-4)-6 = 24"))
@example(((1, 1, 1, 1), ("*", ("/", 1, ("-", 1, 1)), 1), "1 / (1 - 1) * 1"))
def test_verifier_agrees_with_exact_evaluation_and_solver(case):
  puzzle, tree, text = case
  assert sorted(leaves(tree)) == sorted(puzzle)
  value = evaluate(tree)
  verdict = game24.verify(puzzle, text)
  assert verdict.ok == (value == 24), (text, value, verdict)
  if verdict.ok:
    assert game24.is_solvable(puzzle)
  elif value is None:
    assert "zero" in verdict.reason
  else:
    assert f"equals {countdown.format_number(value)}" in verdict.reason


# --- The step checker ---

def _state(*values):
  return tuple(F(v) for v in values)


def test_step_chain_for_4_5_6_10():
  task = Countdown.make("4 5 6 10", 24)
  state = task.initial_state()
  assert not task.is_terminal(state) and not task.is_goal(state)
  check = task.check_step(state, "10 - 4 = 6 (left: 5 6 6)")
  assert check.ok and check.reason == "ok" and check.state == _state(5, 6, 6)
  check = countdown.check_step(check.state, "5 * 6 = 30 (left: 6 30)")
  assert check.ok and check.state == _state(6, 30)
  check = countdown.check_step(check.state, "30 - 6 = 24 (left: 24)")
  assert check.ok and check.state == _state(24)
  assert task.is_terminal(check.state) and task.is_goal(check.state)
  assert not task.is_goal(_state(23))


def test_step_chain_with_fractions_for_3_3_8_8():
  state = game24.make("3 3 8 8").initial_state()
  # The canonical form: reduced fractions, `left` smallest first.
  line = countdown.format_step(F(8), "/", F(3), [F(3), F(8, 3), F(8)])
  assert line == "8 / 3 = 8/3 (left: 8/3 3 8)"
  check = countdown.check_step(state, line)
  assert check.ok and check.state == (F(8, 3), F(3), F(8))
  check = countdown.check_step(check.state, "3 - 8/3 = 1/3 (left: 1/3 8)")
  assert check.ok and check.state == (F(1, 3), F(8))
  check = countdown.check_step(check.state, "8 / 1/3 = 24 (left: 24)")
  assert check.ok and check.state == (F(24),)


def test_step_checker_judges_values_not_spelling():
  state = _state(3, 3, 8, 8)
  canonical = countdown.check_step(state, "8 / 3 = 8/3 (left: 8/3 3 8)")
  # `left` out of order is accepted; the state it returns is the sorted one.
  unsorted = countdown.check_step(state, "8 / 3 = 8/3 (left: 3 8/3 8)")
  assert canonical.ok and unsorted.ok
  assert unsorted.state == canonical.state == (F(8, 3), F(3), F(8))
  # Leading/trailing whitespace is tolerated.
  assert countdown.check_step(state, "  8 / 3 = 8/3 (left: 8/3 3 8)\n").ok
  # Integer states work as well as Fraction ones.
  assert countdown.check_step((3, 3, 8, 8), "8 / 3 = 8/3 (left: 8/3 3 8)").state == canonical.state


def test_step_checker_accepts_negative_values():
  check = countdown.check_step(_state(1, 6), "1 - 6 = -5 (left: -5)")
  assert check.ok and check.state == _state(-5)
  check = countdown.check_step(_state(-5, 2), "-5 * 2 = -10 (left: -10)")
  assert check.ok and check.state == _state(-10)
  check = countdown.check_step(_state(-1, 3), "3 - -1 = 4 (left: 4)")
  assert check.ok and check.state == _state(4)


def test_step_checker_allows_a_number_twice_only_when_it_is_there_twice():
  check = countdown.check_step(_state(3, 3, 8), "3 + 3 = 6 (left: 6 8)")
  assert check.ok and check.state == _state(6, 8)
  check = countdown.check_step(_state(3, 5, 8), "3 + 3 = 6 (left: 5 6 8)")
  assert not check.ok and "3 is not available" in check.reason
  assert check.state is None


@pytest.mark.parametrize("state, line, keywords", [
    # wrong arithmetic
    ((4, 5, 6, 10), "10 - 4 = 7 (left: 5 6 7)", ["10 - 4 is 6, not 7"]),
    ((4, 5, 6, 10), "10 / 4 = 2 (left: 2 5 6)", ["is 5/2, not 2"]),
    ((3, 3, 8, 8), "8 / 3 = 3 (left: 3 3 8)", ["is 8/3, not 3"]),
    ((4, 5, 6, 10), "10 + 4 = 14 (left: 5 6 14)", []),  # control: legal
    # unavailable numbers
    ((4, 5, 6, 10), "10 - 3 = 7 (left: 4 5 6 7)", ["3 is not available", "4 5 6 10"]),
    ((4, 5, 6, 10), "24 - 0 = 24 (left: 4 5 6 24)", ["not available"]),
    ((4, 5, 6, 10), "8/3 + 4 = 20/3 (left: 5 6 20/3)", ["8/3 is not available"]),
    ((24,), "24 - 0 = 24 (left: 24)", ["not available"]),
    ((4, 5, 6, 10), "4 + 4 = 8 (left: 5 6 8 10)", ["4 is not available"]),
    # wrong left list
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 5 6)", ["left should be (5 6 6)", "not (5 6)"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 5 6 6 6)", ["left should be (5 6 6)"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 4 5 6)", ["left should be (5 6 6)"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 4 5 6 6 10)", ["left should be"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left:)", ["left should be"]),
    # division by zero
    ((0, 5), "5 / 0 = 0 (left: 0)", ["division by zero"]),
    ((0, 5), "5 / 0 = 1/0 (left: 1/0)", ["zero denominator"]),
    ((4, 5, 6, 10), "10 / 4 = 5/0 (left: 5 6 5/0)", ["zero denominator"]),
    # garbage and malformed steps
    ((4, 5, 6, 10), "", ["not a step"]),
    ((4, 5, 6, 10), "   ", ["not a step"]),
    ((4, 5, 6, 10), "hello", ["not a step"]),
    ((4, 5, 6, 10), "10 - 4 = 6", ["not a step"]),
    ((4, 5, 6, 10), "10-4=6 (left: 5 6 6)", ["not a step"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 5, 6, 6)", ["not a step"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 5 6 6) and more", ["not a step"]),
    ((4, 5, 6, 10), "10 ^ 4 = 10000 (left: 5 6 10000)", ["not a step"]),
    ((4, 5, 6, 10), "10 - 4 - 5 = 1 (left: 1 6)", ["not a step"]),
    ((4, 5, 6, 10), "(10 - 4) = 6 (left: 5 6 6)", ["not a step"]),
    ((4, 5, 6, 10), "10.0 - 4 = 6 (left: 5 6 6)", ["not a step"]),
    ((4, 5, 6, 10), "١٠ - 4 = 6 (left: 5 6 6)", ["not a step"]),
    ((4, 5, 6, 10), "10 - 4 = ٦ (left: 5 6 ٦)", ["not a step"]),
    ((4, 5, 6, 10), "10 - 4 = 6 (left: 5 6 6)\n30 - 6 = 24 (left: 24)", ["not a step"]),
    ((4, 5, 6, 10), "1" * 10_000, ["limit"]),
    ((4, 5, 6, 10), "1" * 100 + " - 4 = 6 (left: 5 6 6)", ["not a step"]),  # > 99 digits
])
def test_step_checker_rejects_bad_steps(state, line, keywords):
  check = countdown.check_step(_state(*state), line)
  if not keywords:
    assert check.ok
    return
  assert not check.ok and check.state is None
  assert check.reason
  for word in keywords:
    assert word in check.reason, (word, check.reason)


@pytest.mark.parametrize("line", [None, b"10 - 4 = 6 (left: 5 6 6)", 6])
def test_step_checker_rejects_non_strings(line):
  check = countdown.check_step(_state(4, 5, 6, 10), line)
  assert not check.ok and "string" in check.reason


@pytest.mark.parametrize("line, kind", [
    ("10 + 4 = 14 (left: 5 6 14)", ""),
    ("10 - 4 = 7 (left: 5 6 7)", countdown.WRONG_RESULT),
    ("10 / 4 = 2 (left: 2 5 6)", countdown.WRONG_RESULT),
    ("10 - 3 = 7 (left: 4 5 6 7)", countdown.UNAVAILABLE),
    ("4 + 4 = 8 (left: 5 6 8 10)", countdown.UNAVAILABLE),
    ("10 - 4 = 6 (left: 4 5 6)", countdown.WRONG_LEFT),
    ("10 - 4 = 6 (left:)", countdown.WRONG_LEFT),
    ("10 - 4 = 6", countdown.MALFORMED),
    ("10 / 4 = 5/0 (left: 5 6 5/0)", countdown.MALFORMED),  # not a number
    ("1" * 10_000, countdown.MALFORMED),
])
def test_step_checker_names_what_a_step_got_wrong(line, kind):
  """The first rule broken, in the checker's order: form, numbers, arithmetic, numbers left."""
  check = countdown.check_step(_state(4, 5, 6, 10), line)
  assert (check.ok, check.kind) == (kind == "", kind)
  zero = countdown.check_step(_state(0, 5), "5 / 0 = 0 (left: 0)")
  assert zero.kind == countdown.DIVISION_BY_ZERO
  # a wrong result is named before the numbers left, even when both are wrong
  assert countdown.check_step(_state(4, 5, 6, 10), "10 - 4 = 7 (left: 9)").kind == (
      countdown.WRONG_RESULT)


@PROPERTY
@given(st.text())
@example("10 - 4 = ² (left: 5 6 ²)")
def test_step_checker_never_raises(line):
  check = countdown.check_step(_state(4, 5, 6, 10), line)
  assert isinstance(check, base.StepCheck) and check.reason
  assert check.ok == (check.state is not None)
  assert check.kind == "" if check.ok else check.kind in countdown.STEP_ERROR_KINDS


@PROPERTY
@given(st.text(alphabet="0123456789+-*/() =left:", max_size=50))
def test_step_checker_never_raises_on_step_looking_text(line):
  check = countdown.check_step(_state(4, 5, 6, 10), line)
  assert isinstance(check, base.StepCheck) and check.reason
  if check.ok:
    assert len(check.state) == 3


_values = st.builds(F, st.integers(-50, 50), st.integers(1, 12))


@PROPERTY
@given(st.lists(_values, min_size=2, max_size=6), st.data())
def test_every_legal_step_is_accepted_and_a_wrong_result_is_not(values, data):
  i, j = data.draw(st.lists(st.integers(0, len(values) - 1), min_size=2, max_size=2,
                            unique=True))
  op = data.draw(st.sampled_from(countdown.OPS))
  a, b = values[i], values[j]
  rest = [v for k, v in enumerate(values) if k not in (i, j)]
  result = countdown.apply_op(a, op, b)
  state = tuple(values)
  if result is None:
    line = f"{countdown.format_number(a)} / 0 = 0 (left: {countdown.format_state(rest + [F(0)])})"
    check = countdown.check_step(state, line)
    assert not check.ok and "division by zero" in check.reason
    return
  line = countdown.format_step(a, op, b, rest + [result])
  check = countdown.check_step(state, line)
  assert check.ok, (state, line, check.reason)
  assert check.state == tuple(sorted(rest + [result]))
  wrong = countdown.format_step(a, "+", b, rest + [a + b]).replace(
      f"= {countdown.format_number(a + b)} ", f"= {countdown.format_number(a + b + 1)} ")
  assert not countdown.check_step(state, wrong).ok


# --- The solver ---

def test_exactly_1362_of_1820_puzzles_are_solvable():
  puzzles = game24.all_puzzles()
  assert len(puzzles) == 1820 == len(set(puzzles))
  assert all(p == tuple(sorted(p)) and len(p) == 4 and 1 <= p[0] and p[-1] <= 13
             for p in puzzles)
  solvable = game24.solvable_puzzles()
  assert len(solvable) == 1362
  assert set(solvable) <= set(puzzles)
  solvable = set(solvable)
  assert all(game24.is_solvable(p) == (p in solvable) for p in puzzles)
  for known in [(4, 5, 6, 10), (3, 3, 8, 8), (1, 1, 1, 8), (1, 5, 5, 5), (3, 3, 7, 7)]:
    assert known in solvable
  for known in [(1, 1, 1, 1), (1, 1, 1, 2), (13, 13, 13, 13), (1, 1, 5, 9)]:
    assert known not in solvable
  # The memoized, pruned search agrees with an unpruned one on a spread of puzzles.
  for p in puzzles[::45] + [(1, 6, 11, 13), (1, 1, 5, 9)]:
    assert (p in solvable) == (F(24) in reachable(p)), p


def reachable(numbers) -> set[Fraction]:
  """Every value some expression over `numbers` (each once) takes: an unpruned
  search over ordered pairs and all four ops, independent of the solver."""
  def go(values):
    if len(values) == 1:
      return {values[0]}
    out = set()
    for i in range(len(values)):
      for j in range(len(values)):
        if i != j:
          rest = values[:min(i, j)] + values[min(i, j) + 1:max(i, j)] + values[max(i, j) + 1:]
          for op in countdown.OPS:
            c = countdown.apply_op(values[i], op, values[j])
            if c is not None:
              out |= go(rest + (c,))
    return out
  return go(tuple(F(n) for n in numbers))


def commuted_form(expr: str) -> str:
  """`expr` with the operands of every + and * in sorted order, so that commuted
  copies of one expression coincide."""
  def go(node):
    if isinstance(node, ast.Expression):
      return go(node.body)
    if isinstance(node, ast.Constant):
      return str(node.value)
    if isinstance(node, ast.UnaryOp):  # a negative literal, only in a negative target's steps
      return f"(-{go(node.operand)})"
    a, b = go(node.left), go(node.right)
    op = type(node.op).__name__
    if op in ("Add", "Mult"):
      a, b = sorted([a, b])
    return f"({a} {op} {b})"
  return go(ast.parse(expr, mode="eval"))


def _check_solutions(task: Countdown, solutions):
  expressions = [s.expression for s in solutions]
  assert len(set(expressions)) == len(expressions), "solutions are not distinct"
  forms = [commuted_form(e) for e in expressions]
  assert len(set(forms)) == len(forms), "two solutions differ only by commuting + or *"
  for solution in solutions:
    assert solution.target == task.target
    assert solution.answer == f"Answer: {solution.expression} = {task.target}"
    verdict = task.verify(solution.answer)
    assert verdict.ok, (solution, verdict.reason)
    assert task.verify(solution.expression).ok
    state = task.initial_state()
    assert len(solution.steps) == len(task.numbers) - 1
    for step in solution.steps:
      check = task.check_step(state, step)
      assert check.ok, (solution, step, check.reason)
      state = check.state
    assert state == (F(task.target),) and task.is_goal(state)
    assert solution.text.endswith(solution.answer + "\n")
    assert solution.text.splitlines() == list(solution.steps) + [solution.answer]


@pytest.mark.parametrize("puzzle", game24.all_puzzles()[::23] + [
    (3, 3, 8, 8), (1, 5, 5, 5), (4, 5, 6, 10), (1, 1, 1, 8), (1, 1, 1, 1), (13, 13, 13, 13),
    (1, 1, 11, 12), (1, 2, 2, 11)], ids=lambda p: "-".join(map(str, p)))
def test_game24_solutions_verify_and_chain(puzzle):
  solutions = game24.solve(puzzle)
  assert bool(solutions) == game24.is_solvable(puzzle)
  _check_solutions(game24.make(puzzle), solutions)


def test_known_solutions():
  assert game24.solve("1 1 1 1") == []
  assert game24.solve([13, 13, 13, 13]) == []
  assert [s.expression for s in game24.solve("3 3 8 8")] == ["8 / (3 - (8 / 3))"]
  first = game24.solve("4 5 6 10")[0]
  assert first.text == ("10 - 4 = 6 (left: 5 6 6)\n6 * 5 = 30 (left: 6 30)\n"
                        "30 - 6 = 24 (left: 24)\nAnswer: ((10 - 4) * 5) - 6 = 24\n")
  expressions = {s.expression for s in game24.solve("1 5 5 5")}
  assert "5 * (5 - (1 / 5))" in expressions


@pytest.mark.parametrize("numbers, target, solvable", [
    ([1, 6], -5, True),
    ([1, 2], -3, False),
    ([2, 3, 4], -10, True),
    ([2, 3, 4], 0, False),
    ([2, 2, 4], 0, True),
    ([7], 7, True),
    ([7], 8, False),
    ([1, 2, 3], 7, True),
    ([1, 2, 3], 10, False),
    ([1, 3, 4, 6], 24, True),
    ([25, 50, 75, 100], 952, False),
    ([100, 7, 3, 2], 1500, True),
])
def test_countdown_solver(numbers, target, solvable):
  task = Countdown.make(numbers, target)
  assert countdown.is_solvable(numbers, target) is solvable
  solutions = task.solve()
  assert bool(solutions) is solvable
  _check_solutions(task, solutions)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 13), min_size=1, max_size=3), st.integers(-30, 60))
def test_countdown_solver_matches_brute_force(numbers, target):
  """The pruned solver finds a target exactly when an unpruned search over all
  trees (negative intermediate values included) does."""
  expected = F(target) in reachable(numbers)
  assert countdown.is_solvable(numbers, target) is expected
  solutions = countdown.solve(numbers, target)
  assert bool(solutions) is expected
  _check_solutions(Countdown.make(numbers, target), solutions)


def test_expression_module_limits_are_what_the_verifier_relies_on():
  # The verifier's guarantees (bounded work, no recursion blow-up) rest on these.
  assert expression.MAX_CHARS <= 10_000 and expression.MAX_DEPTH <= 100
  with pytest.raises(expression.ExpressionError, match="nest"):
    expression.parse("(" * (expression.MAX_DEPTH + 1) + "1" + ")" * (expression.MAX_DEPTH + 1))
  parsed = expression.parse("(" * expression.MAX_DEPTH + "1" + ")" * expression.MAX_DEPTH)
  assert parsed.value == 1 and parsed.numbers == (1,)
  assert expression.parse("8 / (3 - 8 / 3)").value == 24
  assert expression.parse("10 - 4 - 5").value == 1  # left-associative
  assert expression.parse("64 / 4 / 2").value == 8
  assert expression.parse("2 + 3 * 4").value == 14
