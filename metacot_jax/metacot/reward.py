"""The RL reward of a generated Meta-CoT trace: the verifier's verdict on its answer.

r(S, q) is 1 when the first `Answer:` line verifies and 0 otherwise; |Z|, the
length the discount applies to, is the search trace before the answer line,
counted in tokens or in lines (steps and backtracks).

With r in {0, 1} a generation that never answers earns what a wrong answer
earns, at any length, so no discount can shorten the searches that fail: they
run to the length limit. `wrong_answer_reward` > 0 gives an answer that does not
verify (any `Answer:` line, parsed or not) a small reward; discounted like the rest
(gamma^|Z| r), it asks a failing search to answer, and at gamma < 1 to answer soon.
0 is the paper's objective. With GRPO's normalised advantages, in a group where no
sample is right any value > 0 pushes as hard toward answering soon.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import trace
from metacot_jax.tasks.countdown import Countdown


def split_trace(text: str) -> tuple[str, str]:
  """(Z, S): the text before the first `Answer:` line, and that line ('' if none)."""
  lines = text.splitlines(keepends=True)
  for i, line in enumerate(lines):
    if line.startswith("Answer:"):
      return "".join(lines[:i]), line.rstrip("\n")
  return text, ""


class TraceReward:
  """`reward_fn` of `train_rl` for Meta-CoT traces of `problems`."""

  def __init__(self, tokenizer: Tokenizer, problems: Sequence[Countdown],
               length_unit: str = "tokens", wrong_answer_reward: float = 0.0):
    if length_unit not in ("tokens", "steps"):
      raise ValueError(f"length_unit must be 'tokens' or 'steps', got {length_unit!r}")
    if not 0.0 <= wrong_answer_reward < 1.0:
      raise ValueError(f"wrong_answer_reward must be in [0, 1), below a right answer's 1, "
                       f"got {wrong_answer_reward}")
    self.tokenizer, self.problems, self.length_unit = tokenizer, list(problems), length_unit
    self.wrong_answer_reward = wrong_answer_reward

  def score(self, problem: Countdown, text: str) -> tuple[float, int]:
    z, answer = split_trace(text)
    reward = 0.0
    if answer:
      reward = 1.0 if problem.verify(answer).ok else self.wrong_answer_reward
    if self.length_unit == "tokens":
      return reward, len(self.tokenizer.encode(z))
    facts = trace.parse(problem, z)
    return reward, facts.steps + facts.backtracks

  def __call__(self, problem_ids: np.ndarray, generated_BxN: np.ndarray,
               lengths_B: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scored = [self.score(self.problems[i], self.tokenizer.decode(row[:n]))
              for i, row, n in zip(problem_ids, generated_BxN, lengths_B)]
    rewards, trace_lengths = zip(*scored)
    return np.asarray(rewards, np.float32), np.asarray(trace_lengths, np.int32)
