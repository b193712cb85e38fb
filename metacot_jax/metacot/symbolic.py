"""Symbolic search procedures that write round-0 Meta-CoT traces (Stream-of-Search style).

They search with simple heuristics instead of an LM, so their traces have varied
order and length: depth-first search and breadth-first search with a small beam.
With two numbers left a searcher sees at once whether the target is reachable
(it writes the finishing step, or backtracks), so dead ends cost one line.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from metacot_jax.metacot.trace import Expansion
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown

HEURISTICS = ("random", "closest", "value")


def _order(kids, target, heuristic: str, rng: np.random.Generator, noise_scale: float = 0.5):
  noise = rng.random(len(kids))
  if heuristic == "random":
    return [kids[i] for i in np.argsort(noise)]
  if heuristic == "value":
    # an imperfect value function: the true solvability, blurred by noise
    solvable = np.array([countdown.is_solvable(c, target) for _, c in kids], float)
    return [kids[i] for i in np.argsort(-(solvable + noise_scale * rng.standard_normal(len(kids))))]
  # closest: prefer states holding a number near the target, with noise to vary traces
  dist = [min(abs(float(v) - target) for v in child) / max(target, 1) for _, child in kids]
  return [kids[i] for i in np.argsort(np.asarray(dist) + 0.5 * noise)]


def dfs(problem: Countdown, rng: np.random.Generator, *, heuristic: str = "value",
        max_expansions: int = 40, max_children: int = 0, noise_scale: float = 0.5
        ) -> tuple[list[Expansion], list[int]] | None:
  """Depth-first search; returns (expansions in visit order, solution path) or None.

  `max_children` > 0 tries at most that many children of a state before giving up on it.
  """
  if heuristic not in HEURISTICS:
    raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
  expansions: list[Expansion] = []
  target = problem.target

  def visit(state, path) -> list[int] | None:
    if len(expansions) >= max_expansions:
      return None
    kids = countdown.successors(state)
    if len(state) == 2:
      wins = [(s, c) for s, c in kids if c == (Fraction(target),)]
      if not wins:
        return None  # seen at once: backtrack
      expansions.append(Expansion(state, wins[0][0], wins[0][1]))
      return path + [len(expansions) - 1]
    ordered = _order(kids, target, heuristic, rng, noise_scale)
    for step, child in ordered[:max_children or len(ordered)]:
      expansions.append(Expansion(state, step, child))
      found = visit(child, path + [len(expansions) - 1])
      if found is not None:
        return found
      if len(expansions) >= max_expansions:
        return None
    return None

  path = visit(tuple(sorted(problem.initial_state())), [])
  return None if path is None else (expansions, path)


def bfs(problem: Countdown, rng: np.random.Generator, *, beam: int = 2, branch: int = 3,
        heuristic: str = "value", noise_scale: float = 0.5) -> tuple[list[Expansion], list[int]] | None:
  """ToT-style BFS, level by level: each state opens its `branch` children that the heuristic
  puts first; `beam` of those children, drawn at random, make the next level."""
  if heuristic not in HEURISTICS:
    raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")
  target = problem.target
  expansions: list[Expansion] = []
  level = [(tuple(sorted(problem.initial_state())), [])]
  while level:
    next_level = []
    for state, path in level:
      kids = countdown.successors(state)
      if len(state) == 2:
        wins = [(s, c) for s, c in kids if c == (Fraction(target),)]
        if wins:
          expansions.append(Expansion(state, wins[0][0], wins[0][1]))
          return expansions, path + [len(expansions) - 1]
        continue
      for step, child in _order(kids, target, heuristic, rng, noise_scale)[:branch]:
        expansions.append(Expansion(state, step, child))
        next_level.append((child, path + [len(expansions) - 1]))
    level = ([next_level[i] for i in sorted(rng.permutation(len(next_level))[:beam])]
             if len(next_level) > beam else next_level)
  return None
