"""Symbolic search procedures that write round-0 Meta-CoT traces (Stream-of-Search style).

They search with simple heuristics instead of an LM, so their traces have varied
order and length: depth-first search, breadth-first search with a small beam, and
A*, whose frontier spans the whole tree. With two numbers left a searcher sees at
once whether the target is reachable (it writes the finishing step, or
backtracks), so dead ends cost one line.
"""

from __future__ import annotations

import heapq
from fractions import Fraction

import numpy as np

from metacot_jax.metacot.trace import Expansion
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown

HEURISTICS = ("random", "closest", "value")


def _costs(kids, target, heuristic: str, rng: np.random.Generator, noise_scale: float = 0.5):
  """How unpromising each child looks, lower first: [len(kids)]."""
  noise = rng.random(len(kids))
  if heuristic == "random":
    return noise
  if heuristic == "value":
    # an imperfect value function: the true solvability, blurred by noise
    solvable = np.array([countdown.is_solvable(c, target) for _, c in kids], float)
    return 1.0 - solvable - noise_scale * rng.standard_normal(len(kids))
  # closest: prefer states holding a number near the target, with noise to vary traces
  dist = [min(abs(float(v) - target) for v in child) / max(target, 1) for _, child in kids]
  return np.asarray(dist) + 0.5 * noise


def _order(kids, target, heuristic: str, rng: np.random.Generator, noise_scale: float = 0.5):
  return [kids[i] for i in np.argsort(_costs(kids, target, heuristic, rng, noise_scale))]


def _finishing_step(state, target: int) -> Expansion | None:
  """From two numbers, the step that makes the target, if any: a searcher sees it at once."""
  for step, child in countdown.successors(state):
    if child == (Fraction(target),):
      return Expansion(state, step, child)
  return None


def _check_heuristic(heuristic: str):
  if heuristic not in HEURISTICS:
    raise ValueError(f"heuristic must be one of {HEURISTICS}, got {heuristic!r}")


def dfs(problem: Countdown, rng: np.random.Generator, *, heuristic: str = "value",
        max_expansions: int = 40, max_children: int = 0, noise_scale: float = 0.5
        ) -> tuple[list[Expansion], list[int]] | None:
  """Depth-first search; returns (expansions in visit order, solution path) or None.

  `max_children` > 0 tries at most that many children of a state before giving up on it.
  """
  _check_heuristic(heuristic)
  expansions: list[Expansion] = []
  target = problem.target

  def visit(state, path) -> list[int] | None:
    if len(expansions) >= max_expansions:
      return None
    if len(state) == 2:
      finish = _finishing_step(state, target)
      if finish is None:
        return None  # seen at once: backtrack
      expansions.append(finish)
      return path + [len(expansions) - 1]
    ordered = _order(countdown.successors(state), target, heuristic, rng, noise_scale)
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
  _check_heuristic(heuristic)
  target = problem.target
  expansions: list[Expansion] = []
  level = [(tuple(sorted(problem.initial_state())), [])]
  while level:
    next_level = []
    for state, path in level:
      if len(state) == 2:
        finish = _finishing_step(state, target)
        if finish is not None:
          expansions.append(finish)
          return expansions, path + [len(expansions) - 1]
        continue
      kids = countdown.successors(state)
      for step, child in _order(kids, target, heuristic, rng, noise_scale)[:branch]:
        expansions.append(Expansion(state, step, child))
        next_level.append((child, path + [len(expansions) - 1]))
    level = ([next_level[i] for i in sorted(rng.permutation(len(next_level))[:beam])]
             if len(next_level) > beam else next_level)
  return None


def astar(problem: Countdown, rng: np.random.Generator, *, branch: int = 3,
          heuristic: str = "value", noise_scale: float = 0.5, max_expansions: int = 40
          ) -> tuple[list[Expansion], list[int]] | None:
  """A* (Searchformer style): always take the frontier step of least f = g + h.

  g counts the steps to the state the step reaches; h the steps left from it (numbers - 1)
  plus the heuristic's cost of it (`_costs`: about 1 for a state it calls a dead end, 0
  for a promising one). Every solution takes the same number of steps, so f ranks states
  by that cost, across the whole tree: the trace jumps between branches where DFS goes
  deep and BFS level by level. A step is written when it is taken; each state puts its
  `branch` least-cost steps on the frontier. Among equal f the deeper state goes first
  (as is usual for A*), then the earlier pushed. At most `max_expansions` steps are written.
  """
  _check_heuristic(heuristic)
  target = problem.target
  expansions: list[Expansion] = []
  frontier: list = []  # (f, -g, push order, parent, step, child, path to the parent)
  pushed = 0

  def open_state(state, path):
    nonlocal pushed
    kids = countdown.successors(state)
    costs = _costs(kids, target, heuristic, rng, noise_scale)
    g = len(path) + 1
    for i in np.argsort(costs, kind="stable")[:branch]:
      step, child = kids[i]
      f = g + (len(child) - 1) + float(costs[i])
      heapq.heappush(frontier, (f, -g, pushed, state, step, child, path))
      pushed += 1

  def finish(state, path):
    step = _finishing_step(state, target)
    if step is None or len(expansions) >= max_expansions:
      return None
    expansions.append(step)
    return expansions, path + [len(expansions) - 1]

  root = tuple(sorted(problem.initial_state()))
  if len(root) <= 2:
    return finish(root, []) if len(root) == 2 else None
  open_state(root, [])
  while frontier and len(expansions) < max_expansions:
    _, _, _, parent, step, child, path = heapq.heappop(frontier)
    expansions.append(Expansion(parent, step, child))
    path = path + [len(expansions) - 1]
    if len(child) > 2:
      open_state(child, path)
    elif (found := finish(child, path)) is not None:
      return found
  return None
