"""In-context search: generations with no outside search or verifier, scored after the fact.

`in_context`: one greedy generation per problem, read back with `trace.parse` for
its facts (steps, backtracks, tokens). `sampled`: G generations per problem at
temperature 1, scored like the RL reward. Only the final answer line is verified.
`arithmetic`: teacher-forced steps, to tell wrong sums from wrong plans.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import trace
from metacot_jax.metacot.reward import TraceReward
from metacot_jax.models.sampling import SamplingConfig
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search.greedy import generate, sample_prompts
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown


def in_context(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
               *, batch_size: int = 100, max_new_tokens: int | None = None, mesh=None) -> dict:
  """Greedy accuracy, and per problem: correct, generated tokens, steps, backtracks.

  `solved_after_backtrack_rate` is the share of problems solved by a generation that
  backtracked: in-context search that works, not a right first attempt. Lengths of right
  and wrong generations are apart, as the discount of RL only reaches the right ones.
  """
  width = max(len(tokenizer.encode(p.prompt(), bos=True)) for p in problems)
  max_new_tokens = max_new_tokens or config.max_len - width
  texts = generate(params, config, tokenizer, problems, max_new_tokens=max_new_tokens,
                   batch_size=batch_size, mesh=mesh)
  facts = [trace.parse(p, t) for p, t in zip(problems, texts)]
  correct = [p.verify(f.answer).ok for p, f in zip(problems, facts)]
  tokens = [len(tokenizer.encode(t)) + 1 for t in texts]
  backtracked = [f.backtracks > 0 for f in facts]
  mean_of = lambda right: (float(np.mean([n for n, c in zip(tokens, correct) if c == right]))
                           if right in correct else None)
  return {
      "accuracy": float(np.mean(correct)),
      "mean_tokens": float(np.mean(tokens)),
      "mean_steps": float(np.mean([f.steps for f in facts])),
      "mean_backtracks": float(np.mean([f.backtracks for f in facts])),
      "illegal_step_rate": float(np.mean([len(f.errors) > 0 for f in facts])),
      # of all generations, those whose first error is at a backtrack
      "illegal_at_backtrack_rate": float(np.mean([f.first_error_at_backtrack for f in facts])),
      "solved_after_backtrack_rate": float(np.mean([c and b for c, b in zip(correct, backtracked)])),
      "mean_tokens_right": mean_of(True), "mean_tokens_wrong": mean_of(False),
      "correct": correct, "tokens": tokens,
      "steps": [f.steps for f in facts], "backtracks": [f.backtracks for f in facts],
      "example": texts[0],
  }


def arithmetic(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
               rng: np.random.Generator, *, batch_size: int = 100, mesh=None) -> dict:
  """How often the model completes a given step right, with the choice of step taken away.

  One random legal walk per problem; before each of its steps the model reads the
  prompt, the walk so far and the step's `a op b = `, and greedily writes the rest of
  the line. `result_accuracy`: the value `c` is right (also per step of the walk: deeper
  steps meet fractions and large values); `step_accuracy`: the whole line (`c` and the
  numbers left) is a legal step. Low rates mean illegal steps come from computing, high
  ones that they come from the context of the model's own choices.
  """
  prompts, heads, states, depths = [], [], [], []
  for p in problems:
    state, text = tuple(sorted(p.initial_state())), p.prompt()
    while len(state) > 1:
      depths.append(len(p.numbers) - len(state))
      kids = countdown.successors(state)
      step, child = kids[rng.integers(len(kids))]
      head = step.split("= ", 1)[0] + "= "
      prompts.append(tokenizer.encode(text + head, bos=True))
      heads.append(head)
      states.append(state)
      state, text = child, text + step + "\n"
  if not prompts:
    raise ValueError("arithmetic needs problems of two or more numbers (a step to complete)")
  cfg = SamplingConfig(24, 0.0, 0, (tokenizer.newline_id, tokenizer.eos_id))
  out = sample_prompts(params, config, prompts, cfg, jax.random.PRNGKey(0),
                       batch_size=batch_size, mesh=mesh)
  result_ok, step_ok = [], []
  for head, state, row in zip(heads, states, out.tokens_BxN):
    rest = tokenizer.decode(row).split("\n", 1)[0]
    a, op, b = head[:-3].split(" ")
    try:
      value = countdown.parse_number(rest.split(" (left:", 1)[0])
    except ValueError:
      value = None
    result_ok.append(value == countdown.apply_op(countdown.parse_number(a), op,
                                                 countdown.parse_number(b)))
    step_ok.append(countdown.check_step(state, head + rest).ok)
  result_ok, depths = np.asarray(result_ok), np.asarray(depths)
  return {"steps": len(prompts), "result_accuracy": float(result_ok.mean()),
          "step_accuracy": float(np.mean(step_ok)),
          "result_accuracy_by_depth": [float(result_ok[depths == d].mean())
                                       for d in range(depths.max() + 1)]}


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
