"""Activation memory of a preset's training steps, with and without its micro-batches.

XLA's memory analysis of each compiled step (temporary buffers: activations and
gradients; parameters and optimizer state not included), on this machine's backend,
for one device holding the whole batch. Nothing runs: the steps are only compiled.
XLA's CPU backend computes bfloat16 in float32, so there a bfloat16 preset reports
about float32's memory; expect less on a GPU or TPU.
Last line: `ratio=<peak over the steps with micro-batches / peak without>`.

    python -m experiments.bench_memory [--preset full]
"""

from __future__ import annotations

import argparse
import functools

import jax
import jax.numpy as jnp

from experiments import configs
from experiments.game24_mcts import model_config
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.train import OptimizerConfig, create_train_state, rl, sft_step
from metacot_jax.train.alphazero import alphazero_step

S = jax.ShapeDtypeStruct
VALUE_SLOTS = 8


def temp_gb(step, *args) -> float:
  return jax.jit(step).lower(*args).compile().memory_analysis().temp_size_in_bytes / 1e9


def sft_batch(rows: int, length: int) -> dict:
  """Packed rows (`data.examples.pack`, on in every preset): positions and segments too, and
  value slots for several examples."""
  slots = 4 * VALUE_SLOTS
  return {"tokens": S((rows, length), jnp.int32), "loss_mask": S((rows, length), jnp.float32),
          "positions": S((rows, length), jnp.int32), "segments": S((rows, length), jnp.int32),
          "value_positions": S((rows, slots), jnp.int32),
          "value_labels": S((rows, slots), jnp.float32),
          "value_weights": S((rows, slots), jnp.float32)}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="full", choices=configs.PRESETS)
  args = parser.parse_args(argv)
  cfg, tokenizer = configs.get_config(args.preset), Tokenizer()
  model = model_config(tokenizer, cfg.metacot_model)
  state = jax.eval_shape(lambda: create_train_state(jax.random.PRNGKey(0), model,
                                                    OptimizerConfig()))
  prompt = 16  # a Game of 24 prompt is 12-14 tokens
  k, s = cfg.search.num_candidates, cfg.search.max_step_tokens
  rows = cfg.rl.problems_per_update * cfg.rl.group_size
  phases = {
      "sft": (lambda m: functools.partial(sft_step, config=model, micro_batches=m),
              (state, sft_batch(cfg.sft.batch_size, cfg.sft.length)), cfg.sft.micro_batches),
      "metacot_sft": (lambda m: functools.partial(sft_step, config=model, micro_batches=m),
                      (state, sft_batch(cfg.metacot_sft.batch_size, cfg.metacot_sft.length)),
                      cfg.metacot_sft.micro_batches),
      "star.alphazero": (
          lambda m: functools.partial(alphazero_step, config=model, micro_batches=m),
          (state, {"prefix": S((cfg.star.alphazero.batch_size, prompt), jnp.int32),
                   "prefix_len": S((cfg.star.alphazero.batch_size,), jnp.int32),
                   "candidates": S((cfg.star.alphazero.batch_size, k, s), jnp.int32),
                   "cand_len": S((cfg.star.alphazero.batch_size, k), jnp.int32),
                   "cand_valid": S((cfg.star.alphazero.batch_size, k), jnp.bool_),
                   "weights": S((cfg.star.alphazero.batch_size, k), jnp.float32),
                   "outcome": S((cfg.star.alphazero.batch_size,), jnp.float32)}),
          cfg.star.alphazero.micro_batches),
      "rl": (lambda m: functools.partial(rl.rl_step, config=model, micro_batches=m,
                                         loss=rl.LossConfig(cfg.rl.beta, cfg.rl.clip_eps)),
             (state, state.params,
              {"tokens": S((rows, prompt + cfg.rl.max_new_tokens), jnp.int32),
               "mask": S((rows, prompt + cfg.rl.max_new_tokens), jnp.float32),
               "advantages": S((rows,), jnp.float32)}), cfg.rl.micro_batches),
  }
  print(f"preset {args.preset}: d_model {model.d_model}, {model.num_layers} layers, "
        f"{model.dtype}, backend {jax.default_backend()}")
  peaks = []
  for name, (step, step_args, micro) in phases.items():
    whole = temp_gb(step(1), *step_args)
    sliced = temp_gb(step(micro), *step_args) if micro > 1 else whole
    batch = step_args[-1]
    shape = "x".join(map(str, batch.get("tokens", batch.get("candidates")).shape))
    print(f"{name:15s} batch {shape}: {whole:7.1f} GB whole, {sliced:6.1f} GB in {micro} "
          "micro-batch(es)")
    peaks.append((sliced, whole))
  print(f"ratio={max(p[0] for p in peaks) / max(p[1] for p in peaks):.3f}")


if __name__ == "__main__":
  main()
