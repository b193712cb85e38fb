"""In-context search: generations with no outside search or verifier, scored after the fact.

`in_context`: one greedy generation per problem, read back with `trace.parse` for
its facts (steps, backtracks, tokens). `sampled`: G generations per problem at
temperature 1, scored like the RL reward. Only the final answer line is verified.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import trace
from metacot_jax.metacot.reward import TraceReward
from metacot_jax.models.sampling import SamplingConfig
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search.greedy import generate, sample_prompts
from metacot_jax.tasks.countdown import Countdown


def in_context(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
               *, batch_size: int = 100, max_new_tokens: int | None = None, mesh=None) -> dict:
  """Greedy accuracy, and per problem: correct, generated tokens, steps, backtracks."""
  width = max(len(tokenizer.encode(p.prompt(), bos=True)) for p in problems)
  max_new_tokens = max_new_tokens or config.max_len - width
  texts = generate(params, config, tokenizer, problems, max_new_tokens=max_new_tokens,
                   batch_size=batch_size, mesh=mesh)
  facts = [trace.parse(p, t) for p, t in zip(problems, texts)]
  correct = [p.verify(f.answer).ok for p, f in zip(problems, facts)]
  tokens = [len(tokenizer.encode(t)) + 1 for t in texts]
  return {
      "accuracy": float(np.mean(correct)),
      "mean_tokens": float(np.mean(tokens)),
      "mean_steps": float(np.mean([f.steps for f in facts])),
      "mean_backtracks": float(np.mean([f.backtracks for f in facts])),
      "illegal_step_rate": float(np.mean([len(f.errors) > 0 for f in facts])),
      "correct": correct, "tokens": tokens,
      "steps": [f.steps for f in facts], "backtracks": [f.backtracks for f in facts],
      "example": texts[0],
  }


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
  """Spearman's rho (average ranks for ties)."""
  def ranks(v):
    v = np.asarray(v, float)
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    for value in np.unique(v):  # average the ranks of ties
      r[v == value] = r[v == value].mean()
    return r
  rx, ry = ranks(x), ranks(y)
  if rx.std() == 0 or ry.std() == 0:
    return float("nan")
  return float(np.corrcoef(rx, ry)[0, 1])


def sampled(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
            *, samples: int, max_new_tokens: int, rng, batch_size: int = 16,
            mesh=None) -> dict:
  """Success rate and trace length of `samples` sampled generations per problem (T = 1).

  Finer-grained than one greedy generation for weak policies, and what RL optimises.
  """
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  cfg = SamplingConfig(max_new_tokens, 1.0, 0, (tokenizer.eos_id,))
  out = sample_prompts(params, config, prompts, cfg, rng, batch_size=batch_size,
                       group_size=samples, mesh=mesh)
  ids = np.repeat(np.arange(len(problems)), samples)
  rewards, lengths = TraceReward(tokenizer, problems)(ids, out.tokens_BxN, out.lengths_B)
  return {"success_rate": float(rewards.mean()),
          "pass_at_k": float(rewards.reshape(-1, samples).max(1).mean()),
          "mean_trace_tokens": float(lengths.mean()), "samples": samples}
