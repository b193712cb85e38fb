"""Supervised examples from task problems: prompt -> clean chain of thought (CoT)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from metacot_jax.data.tokenizer import Tokenizer, encode_sft_batch
from metacot_jax.tasks.countdown import Countdown


def cot_pairs(problems: Sequence[Countdown], max_solutions: int, seed: int = 0
              ) -> list[tuple[str, str]]:
  """(prompt, solution text) pairs: up to `max_solutions` distinct solutions per problem,
  chosen at random (seeded) so that no one style of solution dominates."""
  rng = np.random.default_rng(seed)
  pairs = []
  for problem in problems:
    solutions = problem.solve()
    if not solutions:
      raise ValueError(f"{problem.prompt().strip()!r} has no solution; CoT data needs solvable problems")
    chosen = rng.permutation(len(solutions))[:max_solutions]
    pairs += [(problem.prompt(), solutions[i].text) for i in sorted(chosen)]
  return pairs


def sft_arrays(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], length: int
               ) -> dict[str, np.ndarray]:
  """Token and loss-mask arrays for the SFT step (see `encode_sft_batch`)."""
  prompts, completions = zip(*pairs)
  return encode_sft_batch(tokenizer, prompts, completions, length)
