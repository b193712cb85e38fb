"""Achieved FLOP/s of the jitted SFT train step against a plain large matmul of its dtype.

Train FLOPs per token are 3x the forward FLOPs (forward + backward), counted
from the model's shapes (`ModelConfig.flops_per_token`). For each dtype:
`ratio[DTYPE]=<train-step FLOP/s over matmul FLOP/s>`; given two dtypes, the
last line is `speedup=<the second's train-step tokens/s over the first's>`,
both measured in this one run.

    python -m experiments.bench_train_step [--batch 16 --seq 256 --d_model 512
                                            --dtypes float32 bfloat16]

A dtype sets the model's compute dtype (parameters stay float32) and the
matmul's operands, so both sides of a ratio use the same arithmetic.

At width 128 (the laptop model) the step is dominated by memory-bound work
(softmax, layer norms) and reaches about 0.4 of the matmul rate on 2 CPU cores;
at width 512 the matmuls dominate. XLA's CPU backend computes bfloat16 in float32,
so there `speedup` says little (1.10 on 2 cores); it is a GPU or TPU figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from experiments.bench_decode import best_time
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step


@dataclasses.dataclass(frozen=True)
class Timing:
  step_s: float
  step_flops: float
  matmul_s: float
  matmul_flops: float


def measure(config: ModelConfig, batch: dict, matmul: int, repeats: int) -> Timing:
  """Best-of-`repeats` times of one SFT step and of one [matmul, matmul] product, both in
  `config.dtype`."""
  state = create_train_state(jax.random.PRNGKey(0), config, OptimizerConfig())
  step = functools.partial(sft_step, config=config)
  holder = [state]

  def run_step():
    holder[0], metrics = step(holder[0], batch)
    return metrics["loss"]

  rows, length = batch["tokens"].shape
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((matmul, matmul)), config.dtype)
  b = jnp.asarray(rng.standard_normal((matmul, matmul)), config.dtype)
  product = jax.jit(jnp.matmul)
  return Timing(step_s=best_time(run_step, repeats),
                step_flops=3 * config.flops_per_token(length) * rows * length,
                matmul_s=best_time(lambda: product(a, b), repeats),
                matmul_flops=2 * matmul ** 3)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=16)
  parser.add_argument("--seq", type=int, default=256)
  parser.add_argument("--d_model", type=int, default=512)
  parser.add_argument("--num_layers", type=int, default=4)
  parser.add_argument("--num_heads", type=int, default=None, help="default: d_model / 64")
  parser.add_argument("--matmul", type=int, default=2048)
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--dtypes", nargs="+", default=["float32"],
                      choices=("float32", "bfloat16"), help="one or two compute dtypes")
  args = parser.parse_args(argv)
  if len(args.dtypes) > 2 or len(set(args.dtypes)) != len(args.dtypes):
    parser.error(f"--dtypes takes one dtype or two different ones, got {args.dtypes}")

  config = ModelConfig(vocab_size=Tokenizer().vocab_size, max_len=args.seq, d_model=args.d_model,
                       num_layers=args.num_layers,
                       num_heads=args.num_heads or max(1, args.d_model // 64),
                       d_ff=4 * args.d_model)
  rng = np.random.default_rng(0)
  batch = {"tokens": jnp.asarray(rng.integers(3, config.vocab_size, (args.batch, args.seq)),
                                 jnp.int32),
           "loss_mask": jnp.ones((args.batch, args.seq), jnp.float32)}
  print(f"device={jax.devices()[0].device_kind} batch={args.batch} seq={args.seq} "
        f"d_model={args.d_model} layers={args.num_layers} heads={config.num_heads}")
  tokens_per_s = []
  for dtype in args.dtypes:
    t = measure(dataclasses.replace(config, dtype=dtype), batch, args.matmul, args.repeats)
    tokens_per_s.append(args.batch * args.seq / t.step_s)
    print(f"train_step[{dtype}]: {t.step_s * 1e3:.1f} ms, {tokens_per_s[-1]:,.0f} tokens/s, "
          f"{t.step_flops / t.step_s / 1e9:.2f} GFLOP/s")
    print(f"matmul[{dtype}] {args.matmul}x{args.matmul}: {t.matmul_s * 1e3:.1f} ms, "
          f"{t.matmul_flops / t.matmul_s / 1e9:.2f} GFLOP/s")
    print(f"ratio[{dtype}]={(t.step_flops / t.step_s) / (t.matmul_flops / t.matmul_s):.3f}")
  if len(args.dtypes) == 2:
    print(f"speedup={tokens_per_s[1] / tokens_per_s[0]:.2f}")


if __name__ == "__main__":
  main()
