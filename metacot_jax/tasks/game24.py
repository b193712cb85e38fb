"""Game of 24: Countdown with four numbers from 1..13 and the target 24.

`verify` and `solve` are the entry points most users want; `all_puzzles` lists the
1,820 multisets of four numbers from 1..13, of which exactly 1,362 are solvable.
"""

from __future__ import annotations

import itertools
from typing import Sequence

from metacot_jax.tasks import countdown
from metacot_jax.tasks.base import Verdict
from metacot_jax.tasks.countdown import Countdown, Solution

TARGET = 24
NUM_NUMBERS = 4
MAX_NUMBER = 13


def parse_puzzle(puzzle: str | Sequence[int]) -> tuple[int, ...]:
  """`"4 5 6 10"` or `[4, 5, 6, 10]` -> sorted (4, 5, 6, 10); ValueError if not a 24 puzzle."""
  numbers = countdown.parse_numbers(puzzle)
  if len(numbers) != NUM_NUMBERS:
    raise ValueError(f"a Game of 24 puzzle has {NUM_NUMBERS} numbers; {puzzle!r} has "
                     f"{len(numbers)} (use metacot_jax.tasks.countdown for other sizes)")
  if max(numbers) > MAX_NUMBER:
    raise ValueError(f"Game of 24 numbers are 1..{MAX_NUMBER}; {puzzle!r} has {max(numbers)} "
                     "(use metacot_jax.tasks.countdown for other numbers)")
  return tuple(sorted(numbers))


def make(puzzle: str | Sequence[int]) -> Countdown:
  return Countdown(parse_puzzle(puzzle), TARGET)


def verify(puzzle: str | Sequence[int], answer: str) -> Verdict:
  """Verdict on `answer` (an `Answer: ... = 24` line or a bare expression).

  Raises ValueError only for a malformed puzzle; any answer gets a Verdict.
  """
  return countdown.verify_answer(parse_puzzle(puzzle), TARGET, answer)


def solve(numbers: str | Sequence[int]) -> list[Solution]:
  """All distinct solutions (empty when unsolvable)."""
  return countdown.solve(parse_puzzle(numbers), TARGET)


def is_solvable(numbers: str | Sequence[int]) -> bool:
  return countdown.is_solvable(parse_puzzle(numbers), TARGET)


def all_puzzles() -> list[tuple[int, ...]]:
  """The 1,820 sorted multisets of four numbers from 1..13."""
  return list(itertools.combinations_with_replacement(range(1, MAX_NUMBER + 1), NUM_NUMBERS))


def solvable_puzzles() -> list[tuple[int, ...]]:
  return [p for p in all_puzzles() if countdown.is_solvable(p, TARGET)]


def unsolvable_puzzles() -> list[tuple[int, ...]]:
  """The 458 multisets with no way to 24: extra practice states that hold no solution."""
  return [p for p in all_puzzles() if not countdown.is_solvable(p, TARGET)]
