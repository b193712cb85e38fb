"""Whole-solution generation: greedy (or sampled) decoding of prompt -> answer, verified."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np

from metacot_jax.data.tokenizer import Tokenizer, fixed_size_chunks, pad_batch
from metacot_jax.models import sampling
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.tasks.countdown import Countdown


def final_answer(text: str) -> str:
  """The last `Answer:` line of a generation, or '' when there is none."""
  lines = [l for l in text.splitlines() if l.startswith("Answer:")]
  return lines[-1] if lines else ""


def generate(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
             *, max_new_tokens: int, batch_size: int = 64, temperature: float = 0.0,
             rng: jax.Array | None = None) -> list[str]:
  """One generation per problem, until `<eos>`; batched in fixed-size chunks (one compile)."""
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  width = max(len(p) for p in prompts)
  cfg = sampling.SamplingConfig(max_new_tokens, temperature, 0, (tokenizer.eos_id,))
  sampling.check_fits(config, width, cfg)
  rng = jax.random.PRNGKey(0) if rng is None else rng
  texts = []
  for start, chunk, real in fixed_size_chunks(prompts, batch_size):
    out = sampling.sample(params, jax.random.fold_in(rng, start), pad_batch(chunk, width),
                          np.asarray([len(p) for p in chunk], np.int32), config=config,
                          sampling=cfg)
    tokens = np.asarray(out.tokens_BxN)
    texts += [tokenizer.decode(row) for row in tokens[:real]]
  return texts


def greedy_accuracy(params, config: ModelConfig, tokenizer: Tokenizer,
                    problems: Sequence[Countdown], *, max_new_tokens: int,
                    batch_size: int = 64) -> tuple[float, list[str]]:
  """Fraction of problems whose greedy generation's final answer verifies."""
  texts = generate(params, config, tokenizer, problems, max_new_tokens=max_new_tokens,
                   batch_size=batch_size)
  correct = [p.verify(final_answer(t)).ok for p, t in zip(problems, texts)]
  return float(np.mean(correct)), texts
