"""Achieved FLOP/s of the jitted SFT train step against a plain large matmul of its dtype.

Train FLOPs per token are 3x the forward FLOPs (forward + backward), counted
from the model's shapes (`ModelConfig.flops_per_token`). Last line:
`ratio=<train-step FLOP/s over matmul FLOP/s>`.

    python -m experiments.bench_train_step [--batch 16 --seq 256 --d_model 512 --dtype bfloat16]

`--dtype` sets the model's compute dtype (parameters stay float32) and the
matmul's operands, so both sides of the ratio use the same arithmetic.

At width 128 (the laptop model) the step is dominated by memory-bound work
(softmax, layer norms) and reaches about 0.4 of the matmul rate on 2 CPU cores;
at width 512 the matmuls dominate.
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_decode import best_time
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--d_model", type=int, default=512)
  parser.add_argument("--num_layers", type=int, default=4)
  parser.add_argument("--num_heads", type=int, default=None, help="default: d_model / 64")
  parser.add_argument("--matmul", type=int, default=2048)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  args = parser.parse_args()

  config = ModelConfig(vocab_size=Tokenizer().vocab_size, max_len=args.seq, d_model=args.d_model,
                       num_layers=args.num_layers,
                       num_heads=args.num_heads or max(1, args.d_model // 64),
                       d_ff=4 * args.d_model, dtype=args.dtype)
  rng = np.random.default_rng(0)
  batch = {"tokens": jnp.asarray(rng.integers(3, config.vocab_size, (args.batch, args.seq)),
                                 jnp.int32),
           "loss_mask": jnp.ones((args.batch, args.seq), jnp.float32)}
  state = create_train_state(jax.random.PRNGKey(0), config, OptimizerConfig())
  step = functools.partial(sft_step, config=config)
  holder = [state]

  def run_step():
    holder[0], metrics = step(holder[0], batch)
    return metrics["loss"]

  t_step = best_time(run_step, args.repeats)
  step_flops = 3 * config.flops_per_token(args.seq) * args.batch * args.seq

  n = args.matmul
  a = jnp.asarray(rng.standard_normal((n, n)), args.dtype)
  b = jnp.asarray(rng.standard_normal((n, n)), args.dtype)
  matmul = jax.jit(jnp.matmul)
  t_mm = best_time(lambda: matmul(a, b), args.repeats)
  mm_flops = 2 * n ** 3

  print(f"device={jax.devices()[0].device_kind} batch={args.batch} seq={args.seq} "
        f"d_model={args.d_model} layers={args.num_layers} heads={config.num_heads} "
        f"dtype={args.dtype}")
  print(f"train_step: {t_step * 1e3:.1f} ms, {args.batch * args.seq / t_step:,.0f} tokens/s, "
        f"{step_flops / t_step / 1e9:.2f} GFLOP/s")
  print(f"matmul {n}x{n}: {t_mm * 1e3:.1f} ms, {mm_flops / t_mm / 1e9:.2f} GFLOP/s")
  print(f"ratio={(step_flops / t_step) / (mm_flops / t_mm):.3f}")


if __name__ == "__main__":
  main()
