"""Meta-CoT traces: a search written out as text Z, followed by the solution S.

The format reuses the step line of the task and adds one line, so that a trace
costs few tokens and parses unambiguously:

    Input: 4 5 6 10 -> 24
    5 + 4 = 9 (left: 6 9 10)        a step from the current state
    10 - 9 = 1 (left: 1 6)
    6 - 1 = 5 (left: 5)             a leaf that misses the target: a dead end
    back to 4 5 6 10                backtrack to a named earlier state
    10 - 4 = 6 (left: 5 6 6)
    6 * 5 = 30 (left: 6 30)
    30 - 6 = 24 (left: 24)          the goal
    Answer: (5 * (10 - 4)) - 6 = 24 S: the answer line

Optionally each `back to` line lists the steps already tried from the state it names,
`back to 4 5 6 10 (tried 5 + 4, 10 - 6)` (`list_tried`), so that the step not to take again
stands next to the choice. Optionally each step carries its value, ` v7` meaning 0.7 (`value_digits`). A
trace is a list of `Line`s tagged `on_path` (steps of the final solution),
`off_path` (explored and abandoned), `back` or `answer`; the tags give the loss
masks of the paper's three variants (App. C).
"""

from __future__ import annotations

import dataclasses
import re
from fractions import Fraction
from typing import Sequence

from metacot_jax.tasks import countdown
from metacot_jax.tasks.base import StepCheck
from metacot_jax.tasks.countdown import Countdown

BACK = "back to "
TRIED = " (tried "
# one token each in the tokenizer of runs that list tried steps (`Tokenizer(TRIED_PIECES)`):
# a back line then costs fewer tokens than `back to ` spelled out by characters
TRIED_PIECES = (BACK, TRIED, ", ")
_VALUE = re.compile(r" v([0-9])$")

ON_PATH, OFF_PATH, BACK_TAG, ANSWER = "on_path", "off_path", "back", "answer"
UNVISITED_BACKTRACK = "backtrack to an unvisited state"
PAST_LAST_NUMBER = "line after the last number"  # e.g. the CoT model's, past a dead end
# what a trace's first error got wrong: a step's (countdown.check_step), or not going back
ERROR_KINDS = countdown.STEP_ERROR_KINDS + (UNVISITED_BACKTRACK, PAST_LAST_NUMBER)
LOSS_VARIANTS = ("all", "z_only", "mask_off_path")


@dataclasses.dataclass(frozen=True)
class Expansion:
  """One explored step: from `parent` (a state), the step line, to its child state."""
  parent: tuple[Fraction, ...]
  step: str
  child: tuple[Fraction, ...]
  value: float | None = None


@dataclasses.dataclass(frozen=True)
class Line:
  text: str  # without the newline
  tag: str


def state_name(state: Sequence[Fraction]) -> str:
  return countdown.format_state(state)


def backtrack_target(line: str) -> tuple[Fraction, ...]:
  """The state a `back to` line names (any list of tried steps aside); ValueError for a
  number that does not parse."""
  named = line[len(BACK):].split(TRIED)[0]
  return tuple(sorted(countdown.parse_number(t) for t in named.split()))


def repeated_steps(expansions: Sequence[Expansion]) -> int:
  """Steps taken again from a state they were taken from before (the same operation)."""
  taken = [(tuple(sorted(e.parent)), move(e.step)) for e in expansions]
  return len(taken) - len(set(taken))


def move(step: str) -> str:
  """A step line's operation alone, `6 * 4` of `6 * 4 = 24 (left: 2 24)`."""
  return step.split(" = ")[0].strip()


def avoided_moves(problem: Countdown, lines: Sequence[Line]) -> list[tuple[str, ...]]:
  """Per line, the moves a step right after a `back to` line must not take: those already
  taken from the state it starts from (the loop a greedy policy falls into); () elsewhere.
  ValueError for a trace with an illegal step (it has no tree to read them from)."""
  parsed = parse(problem, trace_text(lines))
  steps = [l for l in lines if l.tag in (ON_PATH, OFF_PATH)]
  if parsed.errors or len(parsed.expansions) != len(steps):
    raise ValueError(f"avoided moves need a legal trace; {problem.prompt().strip()!r} has "
                     f"{'; '.join(parsed.errors) or 'a step that does not parse'}")
  expansions, tried, out, after_back = iter(parsed.expansions), {}, [], False
  for line in lines:
    avoid = ()
    if line.tag in (ON_PATH, OFF_PATH):
      e = next(expansions)
      taken = tried.setdefault(tuple(sorted(e.parent)), [])
      if after_back:
        avoid = tuple(dict.fromkeys(m for m in taken if m != move(e.step)))
      taken.append(move(e.step))
    out.append(avoid)
    after_back = line.tag == BACK_TAG
  return out


def back_line(state: Sequence[Fraction], tried: Sequence[str] = ()) -> str:
  """`back to <state>`, with the steps already tried from it when any are given."""
  listed = f"{TRIED}{', '.join(move(s) for s in tried)})" if tried else ""
  return BACK + state_name(state) + listed


class RepeatedStep(ValueError):
  """A search takes a step again from a state it reached twice: with tried-lists its trace
  is left out (the lists name the steps not to take)."""


def linearize(problem: Countdown, expansions: Sequence[Expansion], solution_path: Sequence[int],
              *, value_digits: bool = False, list_tried: bool = False) -> list[Line]:
  """Z then S for a search given in visit order.

  `solution_path` indexes the expansions that form the solution (the last one
  reaches the target). Whenever the next expansion does not start from the
  current state, a `back to` line names the state it starts from and, with
  `list_tried`, the steps taken from that state before. With lists, a search that takes a
  step again from a state it reached twice raises `RepeatedStep`, as every source of traces
  leaves such searches out: a list names the steps not to take, and such a trace takes one.
  ValueError when the path is not a legal solution.
  """
  on_path = set(solution_path)
  current = tuple(sorted(problem.initial_state()))
  lines, tried = [], {}
  for i, e in enumerate(expansions):
    parent = tuple(sorted(e.parent))
    if list_tried and move(e.step) in map(move, tried.get(parent, ())):
      raise RepeatedStep(f"{problem.prompt().strip()!r}: the search takes {move(e.step)} "
                         f"again from {state_name(parent)}; with tried-lists leave such "
                         "searches out (trace.repeated_steps)")
    if parent != current:
      lines.append(Line(back_line(parent, tried.get(parent, ()) if list_tried else ()),
                        BACK_TAG))
    tried.setdefault(parent, []).append(e.step)
    text = e.step
    if value_digits and e.value is not None:
      text += f" v{min(9, int(e.value * 10))}"
    lines.append(Line(text, ON_PATH if i in on_path else OFF_PATH))
    current = tuple(sorted(e.child))
  steps = [expansions[i].step for i in solution_path]
  answer = countdown.answer_from_steps(problem.numbers, problem.target, steps)
  if not answer:
    raise ValueError(f"solution_path of {problem.prompt().strip()!r} is not a legal solution")
  lines.append(Line(answer, ANSWER))
  return lines


def depth_first(parents: Sequence[int], solution_path: Sequence[int]) -> list[int]:
  """A search tree's expansions in depth-first order: the order in which a depth-first
  search that ends at the goal would have made them (as the symbolic traces read).

  `parents[j]` is the expansion whose child state expansion j starts from (-1: the
  initial state). Each expansion's children keep their given order, except that the one on
  `solution_path` comes last: every abandoned branch is explored whole before the search
  goes down the path to the goal. Returns indices into the expansions.
  """
  children: list[list[int]] = [[] for _ in parents]
  top = []
  for j, p in enumerate(parents):
    (top if p < 0 else children[p]).append(j)
  on_path, order = set(solution_path), []

  def visit(siblings):
    for j in sorted(siblings, key=lambda j: j in on_path):  # stable: the path's child last
      order.append(j)
      visit(children[j])
  visit(top)
  return order


def trace_text(lines: Sequence[Line]) -> str:
  return "".join(l.text + "\n" for l in lines)


def loss_weights(lines: Sequence[Line], variant: str) -> list[float]:
  """Per-line loss weight: 'all' (Z and S), 'z_only' (no loss on S), or 'mask_off_path'
  (no loss on abandoned branches; backtracks, solution steps and S keep theirs)."""
  if variant not in LOSS_VARIANTS:
    raise ValueError(f"unknown loss variant {variant!r}; choose one of {LOSS_VARIANTS}")
  if variant == "all":
    return [1.0] * len(lines)
  if variant == "z_only":
    return [0.0 if l.tag == ANSWER else 1.0 for l in lines]
  return [0.0 if l.tag == OFF_PATH else 1.0 for l in lines]


@dataclasses.dataclass(frozen=True)
class ParsedTrace:
  """The facts of a generated trace, replayed against the task's rules."""
  states: tuple[tuple[Fraction, ...], ...]  # every state reached, in order (initial first)
  steps: int  # step lines
  backtracks: int
  answer: str  # the final answer line, '' if none
  errors: tuple[str, ...]  # illegal steps, unknown backtrack targets, stray lines
  reached_goal: bool
  # the first error is a `back to` line or the step right after one
  first_error_at_backtrack: bool = False
  first_error_kind: str = ""  # one of ERROR_KINDS, '' when there is no error
  # every legal step, from the state it was taken in (a tree only when `errors` is empty: a
  # step after a backtrack to an unvisited state starts from a state no step made)
  expansions: tuple[Expansion, ...] = ()
  # legal steps taken again from a state they were taken from before: a greedy policy
  # that does this after a backtrack loops until the length limit
  repeated_steps: int = 0


def parse(problem: Countdown, text: str, *, cut_off: bool = False) -> ParsedTrace:
  """Reads a trace back into its facts; never raises on any text.

  `cut_off`: the text was stopped by a length limit, so a last line with no newline is
  unfinished and not judged (an answer line is still read).
  """
  current = tuple(sorted(problem.initial_state()))
  states, visited = [current], {current}
  steps = backtracks = 0
  answer, errors, kinds, reached, expansions = "", [], [], False, []
  after_back = at_backtrack = False
  raws = text.splitlines()
  unfinished = len(raws) - 1 if cut_off and not text.endswith("\n") else len(raws)
  for i, raw in enumerate(raws):
    if raw.startswith("Answer:"):  # as written: values follow steps only
      answer = raw
      break
    line = _VALUE.sub("", raw)
    if i == unfinished:
      break
    if not errors:
      at_backtrack = after_back or line.startswith(BACK)
    after_back = line.startswith(BACK)
    if after_back:
      try:
        target = backtrack_target(line)
      except ValueError as e:
        errors.append(f"bad backtrack {raw!r}: {e}")
        kinds.append(countdown.MALFORMED)
        continue
      backtracks += 1
      if target not in visited:
        errors.append(f"backtrack to unvisited state {raw!r}")
        kinds.append(UNVISITED_BACKTRACK)
      current = target
      continue
    if problem.is_terminal(current):  # no step is possible: only a backtrack or the answer
      check = StepCheck(False, f"a line after the last number ({state_name(current)})",
                        kind=PAST_LAST_NUMBER)
    else:
      check = countdown.check_step(current, line)
    steps += 1
    if not check.ok:
      errors.append(f"{raw!r}: {check.reason}")
      kinds.append(check.kind)
      continue
    expansions.append(Expansion(current, check.step or line, tuple(check.state)))
    current = tuple(check.state)
    states.append(current)
    visited.add(current)
    reached |= problem.is_goal(current)
  return ParsedTrace(tuple(states), steps, backtracks, answer, tuple(errors), reached,
                     bool(errors) and at_backtrack, kinds[0] if kinds else "",
                     tuple(expansions), repeated_steps(expansions))
