"""KV-cache sampling against recomputing the whole prefix at every token.

Same model, batch, prompts and 256 new tokens; both are jitted `lax` loops with
fixed shapes. Prints tokens/s for each; the last line is `ratio=<speedup>`.

    python -m experiments.bench_decode [--batch 32 --new_tokens 256]
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig, SamplingConfig, forward, init_params, sample


@functools.partial(jax.jit, static_argnames=("config", "new_tokens"))
def sample_by_recompute(params, rng, prompt_BxP, *, config: ModelConfig, new_tokens: int):
  """The naive sampler: a full forward over the [B, max_len] buffer for every new token."""
  batch, width = prompt_BxP.shape
  buf_BxT = jnp.zeros((batch, config.max_len), jnp.int32).at[:, :width].set(prompt_BxP)

  def body(t, carry):
    buf_BxT, rng = carry
    rng, key = jax.random.split(rng)
    logits_BxTxV, _, _ = forward(params, config, buf_BxT)
    token_B = jax.random.categorical(key, logits_BxTxV[:, width + t - 1])
    return buf_BxT.at[:, width + t].set(token_B), rng

  buf_BxT, _ = jax.lax.fori_loop(0, new_tokens, body, (buf_BxT, rng))
  return buf_BxT[:, width:width + new_tokens]


def best_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return min(times)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--prompt", type=int, default=16)
  parser.add_argument("--new_tokens", type=int, default=256)
  parser.add_argument("--d_model", type=int, default=128)
  parser.add_argument("--num_layers", type=int, default=4)
  parser.add_argument("--num_heads", type=int, default=None, help="default: d_model / 32")
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args(argv)

  vocab = Tokenizer().vocab_size
  config = ModelConfig(vocab_size=vocab, max_len=args.prompt + args.new_tokens,
                       d_model=args.d_model, num_layers=args.num_layers,
                       num_heads=args.num_heads or max(1, args.d_model // 32),
                       d_ff=4 * args.d_model)
  params = init_params(config, jax.random.PRNGKey(0))
  prompt = jnp.asarray(np.random.default_rng(0).integers(3, vocab, (args.batch, args.prompt)),
                       jnp.int32)
  lengths = jnp.full((args.batch,), args.prompt, jnp.int32)
  rng = jax.random.PRNGKey(1)
  cached = SamplingConfig(args.new_tokens, temperature=1.0)  # no stop ids: all 256 tokens

  t_cache = best_time(lambda: sample(params, rng, prompt, lengths, config=config,
                                     sampling=cached).tokens_BxN, args.repeats)
  t_full = best_time(lambda: sample_by_recompute(params, rng, prompt, config=config,
                                                 new_tokens=args.new_tokens), args.repeats)
  new = args.batch * args.new_tokens
  print(f"device={jax.devices()[0].device_kind} batch={args.batch} new_tokens={args.new_tokens} "
        f"d_model={args.d_model} layers={args.num_layers} heads={config.num_heads}")
  print(f"kv_cache: {t_cache:.3f} s, {new / t_cache:,.0f} tokens/s")
  print(f"recompute: {t_full:.3f} s, {new / t_full:,.0f} tokens/s")
  print(f"ratio={t_full / t_cache:.2f}")


if __name__ == "__main__":
  main()
