"""What every search method returns, and its host-side summary (answers, verdicts, compute).

Compute is counted in ToT's and TS-LLM's units, per problem: `nodes` (candidate
steps generated), `tokens_generated`, `tokens_processed` (prefix read plus tokens
generated, so recomputed prefixes count) and `lm_calls` (forward passes).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.tasks.countdown import Countdown, answer_from_steps

COMPUTE_FIELDS = ("nodes", "tokens_generated", "tokens_processed", "lm_calls")


class SearchOutput(NamedTuple):
  """Per problem [B]: the committed answer and the work spent."""
  answer_tokens: jax.Array  # [B, T] the answer node's prefix (prompt and steps)
  answer_length: jax.Array  # [B]
  answered: jax.Array  # [B] bool: some answer was committed to
  score: jax.Array  # [B] its reward (1/0 verified, or learned)
  nodes: jax.Array  # [B]
  tokens_generated: jax.Array  # [B]
  tokens_processed: jax.Array  # [B]
  lm_calls: jax.Array  # [B]
  root_weights: jax.Array  # [B, K] search policy at the (first) root; zeros if none
  root_value: jax.Array  # [B] search value at the (first) root; zeros if none


def answer_texts(output: SearchOutput, prompt_lengths: Sequence[int], tokenizer: Tokenizer
                 ) -> list[str]:
  """The steps of each committed answer node, as text (empty when nothing was answered)."""
  tokens = np.asarray(output.answer_tokens)
  lengths = np.asarray(output.answer_length)
  return [tokenizer.decode(tokens[i, int(p):int(lengths[i])]) if output.answered[i] else ""
          for i, p in enumerate(prompt_lengths)]


def summarize(output: SearchOutput, problems: Sequence[Countdown], prompt_lengths: Sequence[int],
              tokenizer: Tokenizer) -> dict:
  """Accuracy by the outside verifier, and mean compute per problem."""
  output = jax.device_get(output)
  texts = answer_texts(output, prompt_lengths, tokenizer)
  answers = [answer_from_steps(p.numbers, p.target, t.splitlines()) for p, t in zip(problems, texts)]
  correct = np.array([p.verify(a).ok for p, a in zip(problems, answers)])
  summary = {"accuracy": float(correct.mean()), "problems": len(problems),
             **{f: float(np.mean(getattr(output, f))) for f in COMPUTE_FIELDS}}
  summary["correct"] = correct.tolist()
  summary["answers"] = answers
  return summary


def pass_at_k(n: int, c: int, k: int) -> float:
  """Unbiased pass@k from n samples with c correct (Chen et al., 2021)."""
  if not 0 <= c <= n or not 1 <= k <= n:
    raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}: "
                     "draw at least k samples per problem")
  if n - c < k:
    return 1.0
  return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))
