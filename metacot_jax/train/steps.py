"""Jitted training steps: pure functions of (state, batch) with donated state."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metacot_jax.models.transformer import ModelConfig, forward
from metacot_jax.train import losses
from metacot_jax.train.state import TrainState


def sft_loss_fn(params, batch, config: ModelConfig, value_weight: float):
  """Masked next-token loss, plus the value loss where the batch carries value labels."""
  logits_BxLxV, value_logits_BxL, _ = forward(params, config, batch["tokens"])
  loss, count = losses.masked_token_loss(logits_BxLxV, batch["tokens"], batch["loss_mask"])
  metrics = {"token_loss": loss, "tokens": count}
  if "value_positions" in batch:
    v_loss, v_acc = losses.value_loss(value_logits_BxL, batch["value_positions"],
                                      batch["value_labels"], batch["value_weights"])
    loss = loss + value_weight * v_loss
    metrics |= {"value_loss": v_loss, "value_accuracy": v_acc}
  return loss, metrics


@functools.partial(jax.jit, static_argnames=("config", "value_weight"), donate_argnums=0)
def sft_step(state: TrainState, batch: dict, *, config: ModelConfig, value_weight: float = 1.0):
  """One AdamW step on the SFT loss. batch: tokens [B, L] int32, loss_mask [B, L] float32,
  and optionally value_positions / value_labels / value_weights [B, M]."""
  grad_fn = jax.value_and_grad(sft_loss_fn, has_aux=True)
  (loss, metrics), grads = grad_fn(state.params, batch, config, value_weight)
  metrics |= {"loss": loss, "grad_norm": jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))}
  return state.apply_gradients(grads=grads), metrics


def value_loss_fn(params, batch, config: ModelConfig):
  _, value_logits_BxL, _ = forward(params, config, batch["tokens"])
  loss, acc = losses.value_loss(value_logits_BxL, batch["value_positions"],
                                batch["value_labels"], batch["value_weights"])
  return loss, {"value_loss": loss, "value_accuracy": acc}


@functools.partial(jax.jit, static_argnames=("config",), donate_argnums=0)
def value_step(state: TrainState, batch: dict, *, config: ModelConfig):
  """One step on the PRM loss alone (the trunk is shared, so it moves too)."""
  (_, metrics), grads = jax.value_and_grad(value_loss_fn, has_aux=True)(
      state.params, batch, config)
  return state.apply_gradients(grads=grads), metrics
