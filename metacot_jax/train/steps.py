"""Jitted training steps: pure functions of (state, batch) with donated state.

Every step takes `micro_batches`: the batch is cut into that many slices whose
gradients are computed one after another (`lax.scan`) and averaged, so a step
holds the activations of one slice: large batches of long traces fit in memory.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metacot_jax.models.transformer import ModelConfig, forward
from metacot_jax.train import losses
from metacot_jax.train.state import TrainState


def micro_batch_grads(loss_fn, params, batch: dict, micro_batches: int = 1):
  """`((loss, metrics), grads)` of `loss_fn(params, batch)`, averaged over `micro_batches`
  equal slices of the batch taken one at a time. Each slice's loss is its own mean, so
  the result equals the whole batch's when the slices weigh the same (e.g. token counts).
  Slice j holds rows j, j + m, j + 2m, ...: every device of a data mesh gives rows to each.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if micro_batches == 1:
    return grad_fn(params, batch)
  rows = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(rows) != 1 or rows.pop() % micro_batches:
    raise ValueError(f"the batch's rows must split into micro_batches={micro_batches} equal "
                     "slices; use a batch size that is a multiple of it")
  slices = jax.tree.map(lambda x: jnp.swapaxes(
      x.reshape((-1, micro_batches) + x.shape[1:]), 0, 1), batch)

  def add(total, micro):
    return jax.tree.map(jnp.add, total, grad_fn(params, micro)), None
  first = jax.tree.map(lambda x: x[0], slices)
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first))
  total, _ = jax.lax.scan(add, zeros, slices)
  return jax.tree.map(lambda x: x / micro_batches, total)


def grad_norm(grads):
  return jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))


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


@functools.partial(jax.jit, static_argnames=("config", "value_weight", "micro_batches"),
                   donate_argnums=0)
def sft_step(state: TrainState, batch: dict, *, config: ModelConfig, value_weight: float = 1.0,
             micro_batches: int = 1):
  """One AdamW step on the SFT loss. batch: tokens [B, L] int32, loss_mask [B, L] float32,
  and optionally value_positions / value_labels / value_weights [B, M]."""
  (loss, metrics), grads = micro_batch_grads(
      lambda p, b: sft_loss_fn(p, b, config, value_weight), state.params, batch, micro_batches)
  metrics |= {"loss": loss, "grad_norm": grad_norm(grads)}
  return state.apply_gradients(grads=grads), metrics


def value_loss_fn(params, batch, config: ModelConfig):
  _, value_logits_BxL, _ = forward(params, config, batch["tokens"])
  loss, acc = losses.value_loss(value_logits_BxL, batch["value_positions"],
                                batch["value_labels"], batch["value_weights"])
  return loss, {"value_loss": loss, "value_accuracy": acc}


@functools.partial(jax.jit, static_argnames=("config", "micro_batches"), donate_argnums=0)
def value_step(state: TrainState, batch: dict, *, config: ModelConfig, micro_batches: int = 1):
  """One step on the PRM loss alone (the trunk is shared, so it moves too)."""
  (_, metrics), grads = micro_batch_grads(lambda p, b: value_loss_fn(p, b, config),
                                          state.params, batch, micro_batches)
  return state.apply_gradients(grads=grads), metrics
