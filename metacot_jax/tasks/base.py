"""The interface of a verifiable, step-by-step reasoning task (the MDP's rules).

A problem gives a prompt (the question q). A state is what the steps so far have
left; a step is one line of text; the transition applies a checked step; a state
is terminal when no step can follow; the final answer is verified exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol


@dataclasses.dataclass(frozen=True)
class Verdict:
  """The verifier's judgement of an answer: `ok` and a reason a person can read."""
  ok: bool
  reason: str

  def __bool__(self) -> bool:
    return self.ok


@dataclasses.dataclass(frozen=True)
class StepCheck:
  """The step checker's judgement of one step, and the state it leads to.

  `kind` names what was wrong in a few words ('' when ok), for counting errors by kind;
  `step` is a legal step as the task itself writes it (a trace rewritten from its parsed
  steps trains on that spelling, not on the generation's)."""
  ok: bool
  reason: str
  state: Any = None
  kind: str = ""
  step: str = ""


class ReasoningTask(Protocol):
  """One problem of a verifiable reasoning task."""

  def prompt(self) -> str:
    """The question, as the LM reads it (ends with a newline)."""

  def initial_state(self) -> Any:
    """The state before any step."""

  def check_step(self, state: Any, line: str) -> StepCheck:
    """Is `line` a legal, arithmetically right step from `state`? (a process verifier)"""

  def is_terminal(self, state: Any) -> bool:
    """True when no further step is possible: only the answer may follow."""

  def verify(self, answer: str) -> Verdict:
    """The outcome verifier: never raises, whatever `answer` holds."""
