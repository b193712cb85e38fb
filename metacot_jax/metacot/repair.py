"""Failed in-context searches, finished by the solver: training at the policy's own mistakes.

STaR keeps only the generations that verify, so the states where the policy goes wrong
are never trained on. The commonest mistake is a loop: the Meta-CoT model backtracks and
takes a step it already took from that state, again and again, until the length limit.
Here a failed generation is cut before its first mistake (an illegal line, a backtrack to
a state it never reached, or a step taken again) and the solver finishes it as a searcher
that remembers would: from the nearest state the search reached that still leads to the
target by steps not tried before (the state it was in, then that state's ancestors, then
the other states reached, latest first), it writes the solution. That is DAgger's idea:
the policy's own states, an expert's next lines.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Sequence

from metacot_jax.metacot import trace
from metacot_jax.metacot.from_generations import generation_lines, solution_path
from metacot_jax.metacot.reward import split_trace
from metacot_jax.metacot.trace import Expansion
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown

State = tuple[Fraction, ...]


def _facts(problem: Countdown, lines: Sequence[str]) -> trace.ParsedTrace:
  return trace.parse(problem, "".join(line + "\n" for line in lines))


def sound_prefix(problem: Countdown, text: str) -> tuple[list[Expansion], State]:
  """The steps of a generation's search before its first mistake, and the state the
  search was in there. A mistake is an illegal line or a step taken again from the state
  it was taken from before (to the same child); an unfinished last line is dropped."""
  lines = split_trace(text)[0].split("\n")[:-1]  # whole lines: a cut-off last one is not
  lo, hi = 0, len(lines)  # the longest prefix with no error (an error never goes away)
  while lo < hi:
    mid = (lo + hi + 1) // 2
    lo, hi = (mid, hi) if not _facts(problem, lines[:mid]).errors else (lo, mid - 1)
  lines = lines[:lo]
  expansions, tried = [], set()
  for e in _facts(problem, lines).expansions:
    if (e.parent, e.child) in tried:  # a loop starts here, in the state it left before
      return expansions, e.parent
    tried.add((e.parent, e.child))
    expansions.append(e)
  if lines and lines[-1].startswith(trace.BACK):
    return expansions, trace.backtrack_target(lines[-1])
  return expansions, expansions[-1].child if expansions else _initial(problem)


def _initial(problem: Countdown) -> State:
  return tuple(sorted(problem.initial_state()))


def restart_order(problem: Countdown, expansions: Sequence[Expansion], current: State
                  ) -> list[State]:
  """The states reached, nearest first: `current`, its ancestors (through the step that
  first made each), then the others, latest first."""
  made_from = {}
  for e in expansions:
    made_from.setdefault(e.child, e.parent)
  chain = [current]
  while chain[-1] in made_from:  # states only shrink: the chain ends at the initial state
    chain.append(made_from[chain[-1]])
  reached = [_initial(problem)] + [e.child for e in expansions]
  return list(dict.fromkeys(chain + reached[::-1]))


def finishing_steps(problem: Countdown, start: State, tried: set[tuple[State, State]]
                    ) -> list[Expansion] | None:
  """A solution from `start` none of whose steps goes from a state to a child it already
  went to (`tried`), as expansions; None if there is none."""
  if len(start) < 2 or not countdown.is_solvable(start, problem.target):
    return None
  for solution in countdown.solve(start, problem.target):
    state, steps = start, []
    for step in solution.steps:
      child = tuple(countdown.check_step(state, step).state)
      if (state, child) in tried:
        break
      steps.append(Expansion(state, step, child))
      state = child
    else:
      return steps
  return None


def repaired_lines(problem: Countdown, text: str, *, list_tried: bool = False
                   ) -> list[trace.Line] | None:
  """A generation's search up to its first mistake, finished by the solver, as training
  lines; None when no state it reached leads on to the target by untried steps."""
  expansions, current = sound_prefix(problem, text)
  path = solution_path(problem, expansions)
  if path is None:
    tried = {(e.parent, e.child) for e in expansions}
    finish = next(filter(None, (finishing_steps(problem, s, tried)
                                for s in restart_order(problem, expansions, current))), None)
    if finish is None:
      return None
    expansions = expansions + finish
    path = solution_path(problem, expansions)
  return trace.linearize(problem, expansions[:path[-1] + 1], path, list_tried=list_tried)


def repaired_generations(problems: Sequence[Countdown], generations: Sequence[tuple[int, str]],
                         *, list_tried: bool = False
                         ) -> tuple[list[tuple[int, list[trace.Line]]], dict]:
  """The distinct repairs of the generations that `generation_lines` does not keep, as
  (problem index, lines), and how many failed, were repaired, and looped."""
  kept, seen, failed, looped = [], set(), 0, 0
  for i, text in generations:
    if generation_lines(problems[i], text, list_tried=list_tried) is not None:
      continue
    failed += 1
    looped += _loops(problems[i], text)
    lines = repaired_lines(problems[i], text, list_tried=list_tried)
    key = lines and (i, trace.trace_text(lines))
    if lines is not None and key not in seen:
      seen.add(key)
      kept.append((i, lines))
  return kept, {"failed": failed, "failed_with_a_loop": looped, "repaired": len(kept)}


def _loops(problem: Countdown, text: str) -> bool:
  """Whether a generation takes a step again from a state it took it from before."""
  return trace.parse(problem, split_trace(text)[0], cut_off=True).repeated_steps > 0
