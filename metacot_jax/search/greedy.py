"""Whole-solution generation: greedy (or sampled) decoding of prompt -> answer, verified."""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np

from metacot_jax import scale
from metacot_jax.data.tokenizer import Tokenizer, fixed_size_chunks, pad_batch
from metacot_jax.models import sampling
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.tasks.countdown import Countdown


def answer_line(text: str) -> str:
  """The first `Answer:` line of a generation, or '' when there is none: the answer it
  commits to (every scorer reads this one: greedy accuracy, the RL reward, value labels)."""
  return next((l for l in text.splitlines() if l.startswith("Answer:")), "")


def sample_prompts(params, config: ModelConfig, prompts: Sequence[Sequence[int]],
                   cfg: sampling.SamplingConfig, rng: jax.Array, *, batch_size: int,
                   group_size: int = 1, mesh=None) -> sampling.Samples:
  """`group_size` samples of every prompt as host arrays (row i*G + g is sample g of prompt
  i), in fixed-size chunks of prompts (one compile), each split over `mesh` if given."""
  if not prompts:
    raise ValueError("no prompts to sample: give at least one")
  width = max(len(p) for p in prompts)
  sampling.check_fits(config, width, cfg)
  parts = []
  for start, chunk, real in fixed_size_chunks(prompts, batch_size,
                                                   scale.chunk_size(batch_size, mesh)):
    batch = scale.shard_batch((pad_batch(chunk, width),
                               np.asarray([len(p) for p in chunk], np.int32)), mesh)
    out = sampling.sample(params, jax.random.fold_in(rng, start), *batch, config=config,
                          sampling=cfg, group_size=group_size)
    parts.append(jax.tree.map(lambda x: x[:real * group_size], scale.to_host(out)))
  return sampling.Samples(*[np.concatenate(xs) for xs in zip(*parts)])


class Generations(NamedTuple):
  """Decoded generations, with what only the sampler knows of each: decoding drops pad and bos
  tokens, and re-encoding the text may take fewer tokens than the model wrote."""
  texts: list[str]
  lengths: np.ndarray  # [B] tokens written, the end token included
  ended: np.ndarray  # [B] True where the end token stopped it, False where max_new_tokens did


def generations(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
                *, max_new_tokens: int, batch_size: int = 64, temperature: float = 0.0,
                rng: jax.Array | None = None, mesh=None) -> Generations:
  """One generation per problem, until `<eos>` (greedy by default)."""
  if not problems:
    raise ValueError("no problems to generate solutions for: give at least one")
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  cfg = sampling.SamplingConfig(max_new_tokens, temperature, 0, (tokenizer.eos_id,))
  rng = jax.random.PRNGKey(0) if rng is None else rng
  out = sample_prompts(params, config, prompts, cfg, rng, batch_size=batch_size, mesh=mesh)
  return Generations([tokenizer.decode(row) for row in out.tokens_BxN],
                     np.asarray(out.lengths_B), np.asarray(out.stopped_B))


def generate(params, config: ModelConfig, tokenizer: Tokenizer, problems: Sequence[Countdown],
             *, max_new_tokens: int, batch_size: int = 64, temperature: float = 0.0,
             rng: jax.Array | None = None, mesh=None) -> list[str]:
  """The texts of `generations`."""
  return generations(params, config, tokenizer, problems, max_new_tokens=max_new_tokens,
                     batch_size=batch_size, temperature=temperature, rng=rng, mesh=mesh).texts


def greedy_accuracy(params, config: ModelConfig, tokenizer: Tokenizer,
                    problems: Sequence[Countdown], *, max_new_tokens: int,
                    batch_size: int = 64, mesh=None) -> tuple[float, list[str]]:
  """Fraction of problems whose greedy generation's answer verifies."""
  texts = generate(params, config, tokenizer, problems, max_new_tokens=max_new_tokens,
                   batch_size=batch_size, mesh=mesh)
  correct = [p.verify(answer_line(t)).ok for p, t in zip(problems, texts)]
  return float(np.mean(correct)), texts
