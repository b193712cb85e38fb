"""Meta-CoT traces from the policy's own in-context searches: STaR on its generations.

Meta-STaR's other source (`from_search`) runs MCTS outside the model; this one samples
the Meta-CoT policy's own traces, as STaR does, and keeps those the verifier accepts and
in which every step is legal and every `back to` names a state already reached. A kept
generation is re-written by `trace.linearize` from its parsed steps, so it trains exactly
as a symbolic trace does: its steps tagged on or off the path to the goal, its answer the
one those steps spell out.
"""

from __future__ import annotations

from typing import Sequence

import jax

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import trace
from metacot_jax.metacot.reward import split_trace
from metacot_jax.models.sampling import SamplingConfig
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search.greedy import sample_prompts
from metacot_jax.tasks.countdown import Countdown


def solution_path(problem: Countdown, expansions: Sequence[trace.Expansion]) -> list[int] | None:
  """Indices of the expansions that lead from the initial state to the first goal reached,
  or None when none reaches it or a step starts from a state no earlier step made. Each
  step's parent is the latest earlier expansion that made its parent state: the copy a
  depth-first search stands on, as the symbolic DFS traces count it when they reach a state
  twice (states only shrink: the chain ends at the initial state)."""
  goal = next((j for j, e in enumerate(expansions) if problem.is_goal(e.child)), None)
  initial = tuple(sorted(problem.initial_state()))
  path = [] if goal is None else [goal]
  while path and expansions[path[-1]].parent != initial:
    parent = expansions[path[-1]].parent
    made = next((k for k in reversed(range(path[-1])) if expansions[k].child == parent), None)
    path = [] if made is None else path + [made]
  return path[::-1] or None


def generation_lines(problem: Countdown, text: str, *, list_tried: bool = False
                     ) -> list[trace.Line] | None:
  """A generated trace as training lines, or None unless its answer verifies, every line
  before it is legal (steps, and backtracks to states it reached) and a step reaches the
  target. With `list_tried` (`back to` lines list the steps tried from their state) a
  generation that takes a step again is not kept either: its back line would list the step
  it then takes."""
  z, answer = split_trace(text)
  if not (answer and problem.verify(answer).ok):
    return None
  facts = trace.parse(problem, z)
  sound = not facts.errors and not (list_tried and facts.repeated_steps)
  path = solution_path(problem, facts.expansions) if sound else None
  if path is None:
    return None
  expansions = facts.expansions[:path[-1] + 1]  # steps after the goal, if any, are dropped
  return trace.linearize(problem, expansions, path, list_tried=list_tried)


def sampled_generations(params, config: ModelConfig, tokenizer: Tokenizer,
                        problems: Sequence[Countdown], *, samples: int, rng: jax.Array,
                        temperature: float = 1.0, batch_size: int = 16, mesh=None
                        ) -> list[tuple[int, str]]:
  """`samples` generations per problem (to the model's length), as (problem index, text)."""
  if samples < 1:
    raise ValueError(f"samples must be >= 1 generation per problem, got {samples}")
  if not problems:
    raise ValueError("sampled_generations got no problems")
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  cfg = SamplingConfig(config.max_len - max(map(len, prompts)), temperature, 0,
                       (tokenizer.eos_id,))
  out = sample_prompts(params, config, prompts, cfg, rng, batch_size=batch_size,
                       group_size=samples, mesh=mesh)
  return [(row // samples, tokenizer.decode(tokens[:n]))
          for row, (tokens, n) in enumerate(zip(out.tokens_BxN, out.lengths_B))]


def verified_generations(problems: Sequence[Countdown], generations: Sequence[tuple[int, str]],
                         *, list_tried: bool = False
                         ) -> tuple[list[tuple[int, list[trace.Line]]], dict]:
  """The distinct generations that `generation_lines` keeps, as (problem index, lines),
  and what was sampled and kept."""
  kept, seen, verified = [], set(), 0
  for i, text in generations:
    verified += problems[i].verify(split_trace(text)[1]).ok
    lines = generation_lines(problems[i], text, list_tried=list_tried)
    key = lines and (i, trace.trace_text(lines))
    if lines is not None and key not in seen:
      seen.add(key)
      kept.append((i, lines))
  return kept, {"generations": len(generations), "verified": verified, "kept": len(kept),
                "puzzles_solved": len({i for i, _ in kept}),
                "kept_with_backtracks": sum(any(l.tag == trace.BACK_TAG for l in lines)
                                            for _, lines in kept)}


def verified_solutions(problems: Sequence[Countdown], generations: Sequence[tuple[int, str]]
                       ) -> tuple[list[tuple[int, tuple[str, ...], str]], dict]:
  """STaR for a CoT model: the distinct verified generations with no backtrack (clean
  solutions; a `back to` line would teach it to search) as (problem index, step lines,
  answer line), the solver's form (`examples.solution_example`), and what was sampled and
  kept."""
  found, stats = verified_generations(problems, generations)
  kept = [(i, tuple(l.text for l in lines if l.tag == trace.ON_PATH), lines[-1].text)
          for i, lines in found if not any(l.tag == trace.BACK_TAG for l in lines)]
  stats |= {"kept": len(kept), "puzzles_solved": len({i for i, *_ in kept}),
            "dropped_with_backtracks": stats.pop("kept_with_backtracks")}
  return kept, stats
