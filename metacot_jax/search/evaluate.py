"""Runs a jitted search method over a list of problems in fixed-size batches.

The last batch is padded with repeats (one compiled shape for every batch); the
padding is dropped before summarizing. With a mesh, each batch is padded to a
multiple of the devices and split over its `data` axis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import numpy as np

from metacot_jax import scale
from metacot_jax.data.tokenizer import Tokenizer, fixed_size_chunks
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search import mcts, results, step_mdp
from metacot_jax.search.results import SearchOutput
from metacot_jax.search.step_mdp import SearchConfig
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks.countdown import Countdown


def batched(method: Callable[[jax.Array, step_mdp.Node], SearchOutput],
            problems: Sequence[Countdown], tokenizer: Tokenizer, model: ModelConfig,
            search: SearchConfig, *, batch_size: int, seed: int, mesh=None) -> dict:
  """`method(rng, roots) -> SearchOutput` over all problems; returns `results.summarize`."""
  if not problems:
    raise ValueError("no problems to search")
  outputs, prompt_lengths = [], []
  for start, chunk, real in fixed_size_chunks(problems, batch_size,
                                                   scale.chunk_size(batch_size, mesh)):
    roots = step_mdp.root_nodes(chunk, tokenizer, model, search)
    rng = jax.random.fold_in(jax.random.PRNGKey(seed), start)
    out = scale.to_host(method(rng, scale.shard_batch(roots, mesh)))
    outputs.append(jax.tree.map(lambda x: x[:real], out))
    prompt_lengths += list(roots.length[:real])
  merged = SearchOutput(*[np.concatenate(xs) for xs in zip(*outputs)])
  return results.summarize(merged, problems, prompt_lengths, tokenizer)


def mcts_method(params, model: ModelConfig, tokenizer: Tokenizer, search: SearchConfig,
                cfg: mcts.MCTSConfig):
  fmt = StepFormat.from_tokenizer(tokenizer, search.max_numbers)
  return lambda rng, roots: mcts.run(params, rng, roots, model=model, fmt=fmt,
                                     newline_id=tokenizer.newline_id, search=search, cfg=cfg)
