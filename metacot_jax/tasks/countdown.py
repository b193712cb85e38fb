"""Countdown: combine a multiset of numbers with + - * / to reach a target.

Every number is used exactly once; arithmetic is exact over rationals. The text
formats follow Tree of Thoughts:

    prompt   Input: 4 5 6 10 -> 24
    step     10 - 4 = 6 (left: 5 6 6)
    answer   Answer: (5 * (10 - 4)) - 6 = 24

Numbers in steps are written as integers (`6`, `-6`) or reduced fractions with no
spaces (`8/3`, `-1/3`); operators are always surrounded by single spaces, so a
step is never ambiguous. `left:` lists what remains after the step, smallest
first. Answers use only the given integers, so `/` in an answer is division.
"""

from __future__ import annotations

import dataclasses
import functools
import numbers as numbers_lib
import re
from collections import Counter
from fractions import Fraction
from typing import Iterable, Sequence

from metacot_jax.tasks import expression
from metacot_jax.tasks.base import StepCheck, Verdict

OPS = ("+", "-", "*", "/")
MAX_NUMBERS = 8
# A value made from at most MAX_NUMBERS numbers below 10**MAX_DIGITS has a numerator and a
# denominator below 2**(MAX_NUMBERS - 1) * 10**(MAX_NUMBERS * MAX_DIGITS): this many digits.
MAX_VALUE_DIGITS = len(str(2**(MAX_NUMBERS - 1) * 10**(MAX_NUMBERS * expression.MAX_DIGITS)))
# the longest step: a, b, the result and MAX_NUMBERS - 1 numbers left, each `-num/den`,
# plus ` op `, ` = `, ` (left:`, `)` and the spaces between the numbers left
MAX_STEP_CHARS = (MAX_NUMBERS + 2) * (2 * MAX_VALUE_DIGITS + 2) + 14 + MAX_NUMBERS - 1
# what a wrong step got wrong (`StepCheck.kind`), in the order they are checked
MALFORMED, UNAVAILABLE = "malformed line", "number not available"
DIVISION_BY_ZERO, WRONG_RESULT, WRONG_LEFT = "division by zero", "wrong result", "wrong numbers left"
STEP_ERROR_KINDS = (MALFORMED, UNAVAILABLE, DIVISION_BY_ZERO, WRONG_RESULT, WRONG_LEFT)
_INT = re.compile(r"-?[0-9]+")

_NUM = rf"-?[0-9]{{1,{MAX_VALUE_DIGITS}}}(?:/[0-9]{{1,{MAX_VALUE_DIGITS}}})?"
_STEP = re.compile(
    rf"^({_NUM}) ([-+*/]) ({_NUM}) = ({_NUM}) \(left:((?: {_NUM})*)\)$")


def format_number(x: Fraction | int) -> str:
  """`6`, `-6`, `8/3`: the one way a number is written in steps."""
  x = Fraction(x)
  return str(x.numerator) if x.denominator == 1 else f"{x.numerator}/{x.denominator}"


def parse_number(text: str) -> Fraction:
  """Inverse of `format_number`; raises ValueError on anything else."""
  if not re.fullmatch(_NUM, text):
    raise ValueError(f"{text!r} is not a number (write 6, -6 or 8/3)")
  num, _, den = text.partition("/")
  if den and int(den) == 0:
    raise ValueError(f"{text!r} has a zero denominator")
  return Fraction(int(num), int(den) if den else 1)


def apply_op(a: Fraction, op: str, b: Fraction) -> Fraction | None:
  """`a op b` exactly; None for division by zero."""
  if op == "+":
    return a + b
  if op == "-":
    return a - b
  if op == "*":
    return a * b
  return None if b == 0 else a / b


def format_state(values: Iterable[Fraction]) -> str:
  return " ".join(format_number(v) for v in sorted(values))


def format_step(a: Fraction, op: str, b: Fraction, left: Iterable[Fraction]) -> str:
  """`a op b = c (left: ...)`, with `left` the state after the step."""
  c = apply_op(Fraction(a), op, Fraction(b))
  if c is None:
    raise ValueError(f"{format_number(a)} {op} {format_number(b)} divides by zero")
  rest = format_state(left)
  return f"{format_number(a)} {op} {format_number(b)} = {format_number(c)} (left:{' ' + rest if rest else ''})"


def parse_numbers(puzzle: str | Sequence[int], *, what: str = "puzzle") -> tuple[int, ...]:
  """`"4 5 6 10"` or `[4, 5, 6, 10]` -> (4, 5, 6, 10); ValueError if malformed."""
  if isinstance(puzzle, str):
    parts = puzzle.replace(",", " ").split()
    if not parts:
      raise ValueError(f"{what} is empty; give numbers like '4 5 6 10'")
    if not all(_INT.fullmatch(p) for p in parts):
      raise ValueError(
          f"{what} {puzzle!r} must be whole numbers separated by spaces, like '4 5 6 10'")
    if any(len(p.lstrip("-")) > expression.MAX_DIGITS for p in parts):
      raise ValueError(
          f"{what} has a number with more than {expression.MAX_DIGITS} digits")
    numbers = tuple(int(p) for p in parts)
  elif isinstance(puzzle, (bytes, bytearray, memoryview)):
    raise ValueError(
        f"{what} must be a string like '4 5 6 10' or a sequence of ints, "
        f"got {type(puzzle).__name__}")
  else:
    try:
      numbers = tuple(puzzle)
    except TypeError:
      raise ValueError(
          f"{what} must be a string like '4 5 6 10' or a sequence of ints, "
          f"got {type(puzzle).__name__}") from None
    if not numbers or not all(isinstance(n, numbers_lib.Integral) and not isinstance(n, bool)
                              for n in numbers):
      raise ValueError(f"{what} {puzzle!r} must be a non-empty sequence of ints")
    numbers = tuple(int(n) for n in numbers)  # numpy integers too; JAX arrays are not Integral
  if any(n <= 0 for n in numbers):
    raise ValueError(f"{what} {puzzle!r} has a number below 1; numbers must be positive")
  if len(numbers) > MAX_NUMBERS:
    raise ValueError(f"{what} has {len(numbers)} numbers; at most {MAX_NUMBERS} are supported")
  if any(n >= 10**expression.MAX_DIGITS for n in numbers):
    raise ValueError(
        f"{what} has a number with more than {expression.MAX_DIGITS} digits")
  return numbers


@dataclasses.dataclass(frozen=True)
class Solution:
  """One way to reach the target: the step lines and the answer expression."""
  steps: tuple[str, ...]
  expression: str
  target: int

  @property
  def answer(self) -> str:
    return f"Answer: {self.expression} = {self.target}"

  @property
  def text(self) -> str:
    """The clean chain of thought S: steps then the answer, one per line."""
    return "".join(s + "\n" for s in self.steps) + self.answer + "\n"


@dataclasses.dataclass(frozen=True)
class Countdown:
  """One Countdown problem; implements `base.ReasoningTask`."""
  numbers: tuple[int, ...]
  target: int

  @classmethod
  def make(cls, puzzle: str | Sequence[int], target: int) -> "Countdown":
    """Validates the puzzle and target; raises ValueError with a clear message."""
    if not isinstance(target, numbers_lib.Integral) or isinstance(target, bool):
      raise ValueError(f"target must be an int, got {target!r}")
    numbers = parse_numbers(puzzle)
    return cls(tuple(sorted(numbers)), int(target))  # numpy ints too (TFDS gives np.int32)

  def prompt(self) -> str:
    return f"Input: {' '.join(map(str, self.numbers))} -> {self.target}\n"

  def initial_state(self) -> tuple[Fraction, ...]:
    return tuple(Fraction(n) for n in self.numbers)

  def is_terminal(self, state: Sequence[Fraction]) -> bool:
    return len(state) <= 1

  def is_goal(self, state: Sequence[Fraction]) -> bool:
    return len(state) == 1 and state[0] == self.target

  def check_step(self, state: Sequence[Fraction], line: str) -> StepCheck:
    return check_step(state, line)

  def verify(self, answer: str) -> Verdict:
    return verify_answer(self.numbers, self.target, answer)

  def solve(self) -> list[Solution]:
    return solve(self.numbers, self.target)


def check_step(state: Sequence[Fraction], line: str) -> StepCheck:
  """Rule-based process verifier: is `line` a legal, right step from `state`?

  A wrong step's `kind` is one of `STEP_ERROR_KINDS`."""
  wrong = lambda kind, reason: StepCheck(False, reason, kind=kind)
  if not isinstance(line, str):
    return wrong(MALFORMED, f"step must be a string, got {type(line).__name__}")
  if len(line) > MAX_STEP_CHARS:
    return wrong(MALFORMED, f"step is {len(line)} characters; the limit is {MAX_STEP_CHARS}")
  match = _STEP.match(line.strip())
  if not match:
    return wrong(MALFORMED, "not a step of the form 'a op b = c (left: ...)'")
  a, op, b, c = (match.group(1), match.group(2), match.group(3), match.group(4))
  try:
    a, b, c = parse_number(a), parse_number(b), parse_number(c)
    left = [parse_number(t) for t in match.group(5).split()]
  except ValueError as e:
    return wrong(MALFORMED, str(e))
  remaining = Counter(state)
  for x in (a, b):
    if remaining[x] == 0:
      return wrong(UNAVAILABLE, f"{format_number(x)} is not available in ({format_state(state)})")
    remaining[x] -= 1
  value = apply_op(a, op, b)
  if value is None:
    return wrong(DIVISION_BY_ZERO, "division by zero")
  if value != c:
    return wrong(WRONG_RESULT, f"{format_number(a)} {op} {format_number(b)} is "
                 f"{format_number(value)}, not {format_number(c)}")
  remaining[value] += 1
  expected = sorted(remaining.elements())
  if sorted(left) != expected:
    return wrong(WRONG_LEFT, f"left should be ({format_state(expected)}), "
                 f"not ({format_state(left)})")
  return StepCheck(True, "ok", tuple(expected), step=format_step(a, op, b, expected))


def verify_answer(numbers: Sequence[int], target: int, answer: str) -> Verdict:
  """Outcome verifier for `Answer: EXPR = TARGET`, `EXPR = TARGET` or bare `EXPR`.

  Never raises on `answer` and never calls `eval`.
  """
  if not isinstance(answer, str):
    return Verdict(False, f"answer must be a string, got {type(answer).__name__}")
  if len(answer) > expression.MAX_CHARS + 64:
    return Verdict(False, f"answer is {len(answer)} characters; the limit is "
                   f"{expression.MAX_CHARS}")
  text = answer.strip()
  if text.lower().startswith("answer:"):
    text = text[len("answer:"):]
  lhs, eq, rhs = text.rpartition("=")
  if eq:
    rhs = rhs.strip()
    if not _INT.fullmatch(rhs) or int(rhs) != target:
      return Verdict(False, f"right-hand side {rhs[:20]!r} is not the target {target}")
  else:
    lhs = text
  try:
    parsed = expression.parse(lhs)
  except expression.ExpressionError as e:
    return Verdict(False, str(e))
  used, given = Counter(parsed.numbers), Counter(numbers)
  if used != given:
    return Verdict(False, _usage_error(used, given))
  if parsed.value != target:
    return Verdict(False, f"expression equals {format_number(parsed.value)}, not {target}")
  return Verdict(True, "correct")


def _usage_error(used: Counter, given: Counter) -> str:
  for n in sorted(used):
    if n not in given:
      return f"uses {n}, which is not one of the numbers"
    if used[n] > given[n]:
      return f"uses {n} {used[n]} times, but it is given {given[n]} time(s)"
  missing = sorted((given - used).elements())
  return f"does not use {' '.join(map(str, missing))}; every number must be used once"


def canonical_moves(a, b, negative=False):
  """Canonical ways to combine two (value, payload) items: larger operand first,
  no division by zero, and no negative results unless `negative` (needed only to
  reach a negative target). Equal values are ordered by payload, so that commuted
  copies coincide. Yields ((x, px), op, (y, py))."""
  if a[0] != b[0]:
    x, y = (a, b) if a[0] > b[0] else (b, a)
  else:
    x, y = (a, b) if str(a[1]) >= str(b[1]) else (b, a)
  yield x, "+", y
  yield x, "*", y
  yield x, "-", y
  if negative and x[0] != y[0]:
    yield y, "-", x
  if y[0] != 0:
    yield x, "/", y
  if x[0] != 0 and x[0] != y[0]:
    yield y, "/", x


def successors(state: Sequence[Fraction]) -> list[tuple[str, tuple[Fraction, ...]]]:
  """Every canonical step from `state` (as in the solver) and the state it leads to."""
  out = []
  for i in range(len(state)):
    for j in range(i + 1, len(state)):
      rest = state[:i] + state[i + 1:j] + state[j + 1:]
      for (x, _), op, (y, _) in canonical_moves((state[i], None), (state[j], None)):
        child = tuple(sorted(rest + (apply_op(x, op, y),)))
        out.append((format_step(x, op, y, child), child))
  return list(dict.fromkeys(out))  # equal steps from equal numbers appear once


def solve(numbers: Sequence[int], target: int) -> list[Solution]:
  """All distinct solutions, by exhaustive search (empty when unsolvable).

  Two solutions are the same when their answer expressions are (operands of +
  and * are ordered larger first, so commuted copies coincide). For a target of
  at least 0, intermediate values are never negative (every solvable problem has
  such a solution); a negative target needs, and gets, negative ones too.
  """
  negative = target < 0
  found: dict[str, Solution] = {}

  def search(items, steps):
    if len(items) == 1:
      value, expr = items[0]
      if value == target and expr not in found:
        found[expr] = Solution(tuple(steps), _strip_parens(expr), target)
      return
    for i in range(len(items)):
      for j in range(i + 1, len(items)):
        rest = items[:i] + items[i + 1:j] + items[j + 1:]
        for (x, ex), op, (y, ey) in canonical_moves(items[i], items[j], negative):
          new_items = rest + ((apply_op(x, op, y), f"({ex} {op} {ey})"),)
          step = format_step(x, op, y, [v for v, _ in new_items])
          search(new_items, steps + [step])

  search(tuple((Fraction(n), str(n)) for n in numbers), [])
  return sorted(found.values(), key=lambda s: s.expression)


@functools.lru_cache(maxsize=None)
def _solvable(values: tuple[Fraction, ...], target: Fraction) -> bool:
  if len(values) == 1:
    return values[0] == target
  for i in range(len(values)):
    for j in range(i + 1, len(values)):
      rest = values[:i] + values[i + 1:j] + values[j + 1:]
      for (x, _), op, (y, _) in canonical_moves((values[i], None), (values[j], None), target < 0):
        if _solvable(tuple(sorted(rest + (apply_op(x, op, y),))), target):
          return True
  return False


def is_solvable(numbers: Sequence[int], target: int) -> bool:
  """Fast yes/no (memoized over sorted states), without listing solutions."""
  return _solvable(tuple(sorted(Fraction(n) for n in numbers)), Fraction(target))


def _strip_parens(expr: str) -> str:
  """Drops the one pair of parentheses around the whole expression, if any."""
  if expr.startswith("(") and expr.endswith(")"):
    depth = 0
    for k, ch in enumerate(expr):
      depth += (ch == "(") - (ch == ")")
      if depth == 0 and k < len(expr) - 1:
        return expr
    return expr[1:-1]
  return expr


def answer_from_steps(numbers: Sequence[int], target: int, steps: Sequence[str]) -> str:
  """The `Answer: ... = target` line that the checked `steps` spell out, or '' if they
  are not a legal chain ending in one number. (How a step-level search answers.)"""
  items = [(Fraction(n), str(n)) for n in numbers]
  for line in steps:
    check = check_step([v for v, _ in items], line)
    if not check.ok:
      return ""
    a, op, b = _STEP.match(line.strip()).group(1, 2, 3)
    exprs = []
    for x in (parse_number(a), parse_number(b)):
      k = next(i for i, (v, _) in enumerate(items) if v == x)
      exprs.append(items.pop(k)[1])
    items.append((apply_op(parse_number(a), op, parse_number(b)), f"({exprs[0]} {op} {exprs[1]})"))
  if len(items) != 1:
    return ""
  return f"Answer: {_strip_parens(items[0][1])} = {target}"
