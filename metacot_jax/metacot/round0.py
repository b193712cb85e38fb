"""Round-0 Meta-CoT data: symbolic searches on training problems, linearized.

Each problem gets several traces from depth-first searches guided by a blurred
value (varied noise gives varied order and length) and, optionally, BFS and A*;
the Meta-STaR loop later replaces them with the model's own verified searches.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metacot_jax.data.examples import Segment
from metacot_jax.metacot import symbolic, trace
from metacot_jax.tasks.countdown import Countdown


def trace_segments(problem: Countdown, lines: Sequence[trace.Line], variant: str, *,
                   avoid: bool = False) -> list[Segment]:
  """A linearized trace as training segments with the loss variant's weights; with `avoid`,
  each step right after a backtrack carries the moves already tried from its state as
  texts not to write (`trace.avoided_moves`, the unlikelihood loss's targets), unless the
  variant gives it no loss."""
  weights = trace.loss_weights(lines, variant)
  avoided = trace.avoided_moves(problem, lines) if avoid else [()] * len(lines)
  return [Segment(problem.prompt(), 0.0)] + [
      Segment(l.text + "\n", w, avoid=a if w else ()) for l, w, a in zip(lines, weights, avoided)]


def check_noise_scales(noise_scales: Sequence[float]) -> tuple[float, ...]:
  """The DFS noise scales as a tuple, or a clear error when there are none or one is < 0."""
  scales = tuple(noise_scales)
  numbers = all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scales)
  if not scales or not numbers or any(not np.isfinite(s) or s < 0 for s in scales):
    raise ValueError(f"DFS noise scales must be one or more finite numbers >= 0, got "
                     f"{scales!r} (e.g. --config.data.dfs_noise_scales='(0.3,0.6,1.0)')")
  return scales


def check_search_mix(bfs_fraction: float, astar_fraction: float) -> None:
  """A clear error unless both shares are in [0, 1] and together at most 1 (the rest: DFS)."""
  shares = (bfs_fraction, astar_fraction)
  numbers = all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in shares)
  if not numbers or not all(0 <= f <= 1 for f in shares) or sum(shares) > 1:
    raise ValueError(f"the shares of BFS and A* traces must be in [0, 1] and sum to at most 1 "
                     f"(the rest are DFS), got {bfs_fraction!r} and {astar_fraction!r}")


def symbolic_traces(problems: Sequence[Countdown], traces_per_problem: int, seed: int = 0, *,
                    noise_scales: Sequence[float] = (0.3, 0.6, 1.0), max_children: int = 3,
                    bfs_fraction: float = 0.0, astar_fraction: float = 0.0,
                    list_tried: bool = False) -> list[tuple[Countdown, list[trace.Line]]]:
  """Successful symbolic searches, `traces_per_problem` tries per problem (failures dropped).

  Each search blurs the true solvability with noise of a scale drawn from `noise_scales`:
  0 walks straight to the goal, larger scales take more dead ends and backtracks. A share
  `bfs_fraction` of the tries is BFS, `astar_fraction` A*, the rest DFS. `list_tried`:
  each `back to` line lists the steps tried from its state (`trace.linearize`), and the
  rare search that takes a step again (reaching a state twice) is dropped: its list would
  name the step it takes next.
  """
  scales = check_noise_scales(noise_scales)
  check_search_mix(bfs_fraction, astar_fraction)
  rng = np.random.default_rng(seed)
  out = []
  for problem in problems:
    for _ in range(traces_per_problem):
      noise = float(rng.choice(scales))
      which = rng.random()
      if which < bfs_fraction:
        found = symbolic.bfs(problem, rng, noise_scale=noise)
      elif which < bfs_fraction + astar_fraction:
        found = symbolic.astar(problem, rng, noise_scale=noise)
      else:
        found = symbolic.dfs(problem, rng, max_children=max_children, noise_scale=noise)
      if found is None:
        continue
      try:
        out.append((problem, trace.linearize(problem, *found, list_tried=list_tried)))
      except trace.RepeatedStep:  # linearize keeps the rule for every source of traces
        continue
  return out
