"""PRM labels for prefixes, and how well a value head is calibrated against them.

- Monte Carlo (the paper's eq. 11): the mean verified success of M completions
  sampled from the prefix by a rollout policy: the LM (`lm_mc_values`) or, as a
  reference with exactly known values, uniformly random legal steps.
- Outcome: whether the prefix's state can still reach the target (exact solver).
- Search: MCTS Q-values, read from `SearchOutput.root_value` / the tree.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from typing import Sequence

import jax
import numpy as np

from metacot_jax import scale
from metacot_jax.data.tokenizer import Tokenizer, pad_batch
from metacot_jax.models import sampling
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search.greedy import answer_line, sample_prompts
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown


@lru_cache(maxsize=None)
def random_policy_value(state: tuple[Fraction, ...], target: int) -> float:
  """Exact success probability of uniformly random legal steps from `state`."""
  if len(state) == 1:
    return float(state[0] == target)
  kids = countdown.successors(state)
  return float(np.mean([random_policy_value(c, target) for _, c in kids]))


def random_rollout_mc(state: Sequence[Fraction], target: int, m: int,
                      rng: np.random.Generator) -> float:
  """MC estimate of `random_policy_value` from m random rollouts."""
  wins = 0
  for _ in range(m):
    s = tuple(sorted(state))
    while len(s) > 1:
      kids = countdown.successors(s)
      s = kids[rng.integers(len(kids))][1]
    wins += s[0] == target
  return wins / m


def lm_mc_values(params, model: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
                 prefixes: Sequence[str], m: int, max_new_tokens: int, rng: jax.Array,
                 temperature: float = 1.0, batch_size: int = 512, mesh=None) -> np.ndarray:
  """Mean verified success of m LM completions of each (problem, steps-so-far) prefix: [P].

  Each prefix is prefilled once and sampled m times; `batch_size` counts completions."""
  prompts = [tokenizer.encode(p.prompt() + prefix, bos=True) for p, prefix in zip(problems, prefixes)]
  cfg = sampling.SamplingConfig(max_new_tokens, temperature, 0, (tokenizer.eos_id,))
  out = sample_prompts(params, model, prompts, cfg, rng, batch_size=max(1, batch_size // m),
                       group_size=m, mesh=mesh)
  wins = [problems[i // m].verify(answer_line(tokenizer.decode(row))).ok
          for i, row in enumerate(out.tokens_BxN)]
  return np.asarray(wins, float).reshape(len(prefixes), m).mean(1)


def calibration(predicted: Sequence[float], observed: Sequence[float], bins: int = 5) -> dict:
  """Mean observed success per bin of predicted value, and the expected calibration error."""
  predicted, observed = np.asarray(predicted, float), np.asarray(observed, float)
  edges = np.linspace(0, 1, bins + 1)
  index = np.clip(np.digitize(predicted, edges[1:-1]), 0, bins - 1)
  table, ece = [], 0.0
  for b in range(bins):
    sel = index == b
    if sel.any():
      gap = abs(predicted[sel].mean() - observed[sel].mean())
      ece += sel.mean() * gap
      table.append({"bin": f"{edges[b]:.1f}-{edges[b + 1]:.1f}", "count": int(sel.sum()),
                    "predicted": float(predicted[sel].mean()),
                    "observed": float(observed[sel].mean())})
  return {"bins": table, "ece": float(ece)}


def prefix_values(params, model: ModelConfig, tokenizer: Tokenizer,
                  problems: Sequence[Countdown], prefixes: Sequence[str], mesh=None) -> np.ndarray:
  """The PRM's value (sigmoid of the value head) at the end of each prefix: [P]."""
  rows = [tokenizer.encode(p.prompt() + prefix, bos=True) for p, prefix in zip(problems, prefixes)]
  rows, real = scale.pad_rows(rows, mesh)
  batch = scale.shard_batch((pad_batch(rows, model.max_len),
                             np.asarray([len(r) for r in rows], np.int32)), mesh)
  pre = jax.jit(sampling.prefill, static_argnums=1)(params, model, *batch)
  return scale.to_host(jax.nn.sigmoid(pre.value_logits_B))[:real]


def random_prefixes(problems: Sequence[Countdown], depth_range: tuple[int, int],
                    rng: np.random.Generator) -> tuple[list[str], list[float], list[float]]:
  """One random legal prefix per problem: (steps text, outcome label, random-policy value)."""
  low, high = depth_range
  fewest = min((len(p.numbers) for p in problems), default=high + 1)
  if not 0 <= low <= high or high > fewest - 1:
    raise ValueError(f"depth_range {depth_range}: need 0 <= low <= high <= {fewest - 1}, the "
                     f"steps a problem of {fewest} numbers takes")
  texts, outcome, random_value = [], [], []
  for p in problems:
    state, lines = tuple(sorted(p.initial_state())), []
    for _ in range(rng.integers(low, high + 1)):
      kids = countdown.successors(state)
      step, state = kids[rng.integers(len(kids))]
      lines.append(step + "\n")
    texts.append("".join(lines))
    outcome.append(float(random_policy_value(state, p.target) > 0))
    random_value.append(random_policy_value(state, p.target))
  return texts, outcome, random_value
