"""A safe parser and exact evaluator for arithmetic answers (no `eval`).

Grammar (integers, + - * /, parentheses, spaces):

    expr   := term (('+' | '-') term)*
    term   := factor (('*' | '/') factor)*
    factor := INTEGER | '(' expr ')'

Evaluation is exact over `fractions.Fraction`, so `8 / (3 - 8 / 3)` is exactly 24.
Every failure is reported as `ExpressionError` with a message meant for a person;
input size and nesting depth are bounded before any work, so megabytes of text or
thousands of parentheses are rejected at once instead of exhausting the stack.
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction

MAX_CHARS = 2_000
MAX_DEPTH = 32
MAX_DIGITS = 12

_TOKEN = re.compile(r"\s*(?:([0-9]+)|(\S))?")


class ExpressionError(ValueError):
  """An answer that is not a well-formed arithmetic expression."""


@dataclasses.dataclass(frozen=True)
class Parsed:
  """The exact value of an expression and the integers it uses, in order."""
  value: Fraction
  numbers: tuple[int, ...]


def parse(text: str) -> Parsed:
  """Parses and evaluates `text`; raises ExpressionError saying what is wrong."""
  if not isinstance(text, str):
    raise ExpressionError(f"expected a string, got {type(text).__name__}")
  if len(text) > MAX_CHARS:
    raise ExpressionError(
        f"expression is {len(text)} characters long; the limit is {MAX_CHARS}")
  if not text.strip():
    raise ExpressionError("expression is empty")
  depth = 0
  for ch in text:
    depth += (ch == "(") - (ch == ")")
    if depth > MAX_DEPTH:
      raise ExpressionError(f"parentheses nest deeper than {MAX_DEPTH}")
  return _Parser(_tokenize(text)).parse()


def _tokenize(text: str) -> list[tuple[str, int]]:
  """Splits into (token, position) pairs; integers are one token each."""
  tokens = []
  pos = 0
  while pos < len(text):
    match = _TOKEN.match(text, pos)
    if match.group(1) is not None:
      if len(match.group(1)) > MAX_DIGITS:
        raise ExpressionError(
            f"number at position {match.start(1)} has more than {MAX_DIGITS} digits")
      tokens.append((match.group(1), match.start(1)))
    elif match.group(2) is not None:
      ch = match.group(2)
      if ch not in "+-*/()":
        raise ExpressionError(
            f"unexpected character {ch!r} at position {match.start(2)}; "
            "only integers, + - * / and parentheses are allowed")
      tokens.append((ch, match.start(2)))
    pos = match.end()
  return tokens


class _Parser:
  """Recursive descent over the token list; depth is bounded by `parse`."""

  def __init__(self, tokens):
    self.tokens = tokens
    self.i = 0
    self.numbers = []

  def parse(self) -> Parsed:
    value = self.expr()
    if self.i < len(self.tokens):
      tok, pos = self.tokens[self.i]
      raise ExpressionError(f"unexpected {tok!r} at position {pos}")
    return Parsed(value, tuple(self.numbers))

  def peek(self):
    return self.tokens[self.i][0] if self.i < len(self.tokens) else None

  def expr(self) -> Fraction:
    value = self.term()
    while self.peek() in ("+", "-"):
      op = self.tokens[self.i][0]
      self.i += 1
      rhs = self.term()
      value = value + rhs if op == "+" else value - rhs
    return value

  def term(self) -> Fraction:
    value = self.factor()
    while self.peek() in ("*", "/"):
      op, pos = self.tokens[self.i]
      self.i += 1
      rhs = self.factor()
      if op == "*":
        value = value * rhs
      elif rhs == 0:
        raise ExpressionError(f"division by zero at position {pos}")
      else:
        value = value / rhs
    return value

  def factor(self) -> Fraction:
    if self.i >= len(self.tokens):
      raise ExpressionError("expression ends where a number or '(' was expected")
    tok, pos = self.tokens[self.i]
    self.i += 1
    if tok.isdigit():
      self.numbers.append(int(tok))
      return Fraction(int(tok))
    if tok == "(":
      value = self.expr()
      if self.peek() != ")":
        raise ExpressionError(f"parenthesis opened at position {pos} is not closed")
      self.i += 1
      return value
    if tok == "-":
      raise ExpressionError(
          f"unary minus at position {pos} is not allowed; numbers are used as given")
    raise ExpressionError(f"unexpected {tok!r} at position {pos}")
