"""Batched KV-cache prefill, sampling and scoring for `PolicyValueLM`.

All functions are pure and jit-friendly: shapes are fixed by the prompt width P,
`max_new_tokens` N and the model's `max_len` T. Rows may have different prompt
lengths (right-padded); each row decodes from its own position.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metacot_jax.models.transformer import ModelConfig, forward, init_cache


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample. Hashable: static under jit."""
  max_new_tokens: int
  temperature: float = 1.0  # 0.0 is greedy (argmax)
  top_k: int = 0  # 0 keeps the whole vocabulary
  stop_ids: tuple[int, ...] = ()  # a row ends after emitting one of these

  def __post_init__(self):
    if self.max_new_tokens <= 0:
      raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")
    if self.temperature < 0:
      raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0:
      raise ValueError(f"top_k must be >= 0, got {self.top_k}")


class Samples(NamedTuple):
  tokens_BxN: jax.Array  # generated ids, pad (0) after a row stops
  logprobs_BxN: jax.Array  # log pi(token | prefix) at temperature 1; 0 after stop
  lengths_B: jax.Array  # tokens generated, the stop token included
  values_BxN: jax.Array  # PRM value logit of the prefix ending at each generated token
  stopped_B: jax.Array  # True where a stop token ended the row (not max_new_tokens)


class Prefilled(NamedTuple):
  cache: tuple  # per layer KVCache, [B, H, T, K]
  next_logits_BxV: jax.Array  # logits for the first new token
  value_logits_B: jax.Array  # PRM value logit of the whole prompt
  positions_B: jax.Array  # where the first new token goes (= prompt length)


def prefill(params, config: ModelConfig, prompt_BxP, prompt_lengths_B) -> Prefilled:
  """Runs the prompt once, filling the cache; rows are right-padded to P."""
  batch, width = prompt_BxP.shape
  positions_BxP = jnp.broadcast_to(jnp.arange(width), (batch, width))
  logits_BxPxV, values_BxP, cache = forward(params, config, prompt_BxP, positions_BxP,
                                            init_cache(config, batch))
  last_B = prompt_lengths_B - 1
  rows = jnp.arange(batch)
  return Prefilled(cache, logits_BxPxV[rows, last_B], values_BxP[rows, last_B], prompt_lengths_B)


def repeat(prefilled: Prefilled, k: int) -> Prefilled:
  """K copies of every row (row-major: copies of row b are rows b*K .. b*K+K-1)."""
  return jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), prefilled)


def _pick(rng, logits_BxV, sampling: SamplingConfig):
  if sampling.temperature == 0.0:
    return jnp.argmax(logits_BxV, axis=-1)
  logits_BxV = logits_BxV / sampling.temperature
  if sampling.top_k:
    kth_B = jax.lax.top_k(logits_BxV, sampling.top_k)[0][:, -1]
    logits_BxV = jnp.where(logits_BxV < kth_B[:, None], jnp.finfo(logits_BxV.dtype).min,
                           logits_BxV)
  return jax.random.categorical(rng, logits_BxV, axis=-1)


def decode(params, config: ModelConfig, rng, prefilled: Prefilled,
           sampling: SamplingConfig) -> Samples:
  """Samples up to N tokens per row from a filled cache, stopping rows independently.

  A `lax.while_loop` that ends as soon as every row has stopped.
  """
  n = sampling.max_new_tokens
  batch = prefilled.positions_B.shape[0]
  stop_ids = jnp.asarray(sampling.stop_ids or (-1,), jnp.int32)

  def cond(carry):
    t, _, _, done_B, *_ = carry
    return (t < n) & ~jnp.all(done_B)

  def body(carry):
    t, cache, logits_BxV, done_B, tokens, logprobs, values, rng = carry
    rng, key = jax.random.split(rng)
    token_B = _pick(key, logits_BxV, sampling).astype(jnp.int32)
    logp_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV), token_B[:, None], 1)[:, 0]
    token_B = jnp.where(done_B, 0, token_B)
    tokens = tokens.at[:, t].set(token_B)
    logprobs = logprobs.at[:, t].set(jnp.where(done_B, 0.0, logp_B))
    pos_B = jnp.minimum(prefilled.positions_B + t, config.max_len - 1)
    logits_Bx1xV, value_Bx1, cache = forward(params, config, token_B[:, None], pos_B[:, None],
                                             cache)
    values = values.at[:, t].set(jnp.where(done_B, 0.0, value_Bx1[:, 0]))
    done_B = done_B | jnp.isin(token_B, stop_ids)
    return t + 1, cache, logits_Bx1xV[:, 0], done_B, tokens, logprobs, values, rng

  zeros = jnp.zeros((batch, n), jnp.float32)
  carry = (jnp.int32(0), prefilled.cache, prefilled.next_logits_BxV, jnp.zeros(batch, bool),
           jnp.zeros((batch, n), jnp.int32), zeros, zeros, rng)
  _, _, _, done_B, tokens, logprobs, values, _ = jax.lax.while_loop(cond, body, carry)
  is_stop_BxN = jnp.isin(tokens, stop_ids)
  first_stop_B = jnp.argmax(is_stop_BxN, axis=1)
  lengths_B = jnp.where(done_B, first_stop_B + 1, n).astype(jnp.int32)
  return Samples(tokens, logprobs, lengths_B, values, done_B)


def check_fits(config: ModelConfig, prompt_width: int, sampling: SamplingConfig):
  """Fails before compiling if prompts plus new tokens cannot fit the context."""
  if prompt_width + sampling.max_new_tokens > config.max_len:
    raise ValueError(
        f"prompt width {prompt_width} + max_new_tokens {sampling.max_new_tokens} exceeds the "
        f"model's max_len {config.max_len}; shorten one or build a model with a longer context")
  if sampling.top_k > config.vocab_size:
    raise ValueError(f"SamplingConfig.top_k {sampling.top_k} exceeds the model's vocabulary of "
                     f"{config.vocab_size} tokens; use at most that (0 samples from all)")


@functools.partial(jax.jit, static_argnames=("config", "sampling", "group_size"))
def sample(params, rng, prompt_BxP, prompt_lengths_B, *, config: ModelConfig,
           sampling: SamplingConfig, group_size: int = 1) -> Samples:
  """Prefill then decode: the batched, KV-cached sampler. With `group_size` G each prompt
  is prefilled once and its cache copied G times: row b*G + g is sample g of prompt b."""
  check_fits(config, prompt_BxP.shape[1], sampling)
  prefilled = prefill(params, config, prompt_BxP, prompt_lengths_B)
  if group_size > 1:
    prefilled = repeat(prefilled, group_size)
  return decode(params, config, rng, prefilled, sampling)


@functools.partial(jax.jit, static_argnames=("config",))
def sequence_logprobs(params, tokens_BxL, target_mask_BxL, *, config: ModelConfig):
  """Sum of log pi(tokens[t] | tokens[<t]) over positions where the mask is 1: [B]."""
  logits_BxLxV, _, _ = forward(params, config, tokens_BxL)
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV[:, :-1])
  logp_BxL = jnp.take_along_axis(logp_BxLxV, tokens_BxL[:, 1:, None], -1)[..., 0]
  return jnp.sum(logp_BxL * target_mask_BxL[:, 1:], axis=1)
