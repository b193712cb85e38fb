"""Train state and optimizer: AdamW with warmup-cosine decay and gradient clipping."""

from __future__ import annotations

import dataclasses
import functools

import jax
import optax
from flax.training import train_state

from metacot_jax.models.transformer import ModelConfig, init_params


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  total_steps: int = 2_000
  end_lr_fraction: float = 0.1
  weight_decay: float = 0.01
  clip_norm: float = 1.0
  b2: float = 0.98

  def __post_init__(self):
    if self.total_steps <= 0 or self.warmup_steps < 0:
      raise ValueError(f"need total_steps > 0 and warmup_steps >= 0, got {self}")


@functools.cache
def make_optimizer(cfg: OptimizerConfig) -> optax.GradientTransformation:
  """AdamW on a warmup-cosine schedule; one shared object per config.

  The optimizer is a static field of `TrainState`, so sharing it keeps the pytree
  structure of states from equal configs equal and jitted steps compile once.
  """
  # Warmup longer than the run is cut to the run; optax needs decay_steps > warmup_steps.
  warmup = min(cfg.warmup_steps, cfg.total_steps)
  schedule = optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=cfg.learning_rate, warmup_steps=warmup,
      decay_steps=max(cfg.total_steps, warmup + 1),
      end_value=cfg.learning_rate * cfg.end_lr_fraction)
  return optax.chain(
      optax.clip_by_global_norm(cfg.clip_norm),
      optax.adamw(schedule, b2=cfg.b2, weight_decay=cfg.weight_decay))


TrainState = train_state.TrainState


def create_train_state(rng: jax.Array, model: ModelConfig, opt: OptimizerConfig,
                       params=None) -> TrainState:
  """A fresh state (new params from `rng`, or the given `params`, e.g. a previous round's)."""
  if params is None:
    params = init_params(model, rng)
  return TrainState.create(apply_fn=None, params=params, tx=make_optimizer(opt))
