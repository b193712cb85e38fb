"""Jitted training steps: pure functions of (state, batch) with donated state.

Every step takes `micro_batches`: the batch is cut into that many slices whose
gradients are computed one after another (`lax.scan`) and added, so a step holds
the activations of one slice: large batches of long traces fit in memory. Each
slice's loss is divided by the whole batch's normaliser (its token count, its
number of value labels), so the sum is exactly the whole batch's loss.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from metacot_jax.models.transformer import ModelConfig, forward
from metacot_jax.train import losses
from metacot_jax.train.state import TrainState


def row_slices(x, micro_batches: int):
  """[B, ...] -> [m, B / m, ...]: slice j holds rows j, j + m, j + 2m, ... (so every
  device of a data mesh gives rows to each slice)."""
  return jnp.swapaxes(x.reshape((-1, micro_batches) + x.shape[1:]), 0, 1)


def micro_batch_grads(loss_fn, params, batch: dict, micro_batches: int = 1):
  """`((loss, metrics), grads)` of `loss_fn(params, batch)` computed in `micro_batches`
  equal slices of the batch (`row_slices`), one at a time, and summed: `loss_fn` must
  add up over slices (divide by whole-batch normalisers, not the slice's own).
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
  if micro_batches == 1:
    return grad_fn(params, batch)
  rows = {x.shape[0] for x in jax.tree.leaves(batch)}
  if len(rows) != 1 or rows.pop() % micro_batches:
    raise ValueError(f"the batch's rows must split into micro_batches={micro_batches} equal "
                     "slices; use a batch size that is a multiple of it")
  slices = jax.tree.map(lambda x: row_slices(x, micro_batches), batch)

  def add(total, micro):
    return jax.tree.map(jnp.add, total, grad_fn(params, micro)), None
  first = jax.tree.map(lambda x: x[0], slices)
  zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params, first))
  return jax.lax.scan(add, zeros, slices)[0]


def grad_norm(grads):
  return jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))


def sft_totals(batch: dict) -> dict:
  """The whole batch's normalisers: weighted target tokens and value labels."""
  totals = {"tokens": jnp.sum(batch["loss_mask"][:, 1:])}
  if "value_weights" in batch:
    totals["values"] = jnp.sum(batch["value_weights"])
  if "avoid_weights" in batch:
    totals["avoids"] = jnp.sum(batch["avoid_weights"])
  return totals


def model_outputs(params, config: ModelConfig, batch: dict):
  """The forward pass over a batch's tokens; rows packed by `data.examples.pack` carry
  positions and segments, which keep each example's attention to itself."""
  return forward(params, config, batch["tokens"], batch.get("positions"),
                 segments_BxL=batch.get("segments"))


def sft_loss_fn(params, batch, config: ModelConfig, value_weight: float, totals=None,
                unlikelihood_weight: float = 0.0, unlikelihood_form: str = "token"):
  """Masked next-token loss, plus the value loss where the batch carries value labels and
  the unlikelihood loss (`losses.unlikelihood_loss` of `unlikelihood_form`) where it
  carries avoided tokens and `unlikelihood_weight` > 0;
  normalised by `totals` (`sft_totals` of the whole batch) when this is a slice of it."""
  totals = totals or {}
  logits_BxLxV, value_logits_BxL, _ = model_outputs(params, config, batch)
  loss, count = losses.masked_token_loss(logits_BxLxV, batch["tokens"], batch["loss_mask"],
                                         totals.get("tokens"))
  metrics = {"token_loss": loss, "tokens": count}
  if "value_positions" in batch:
    v_loss, v_acc = losses.value_loss(value_logits_BxL, batch["value_positions"],
                                      batch["value_labels"], batch["value_weights"],
                                      totals.get("values"))
    loss = loss + value_weight * v_loss
    metrics |= {"value_loss": v_loss, "value_accuracy": v_acc}
  if "avoid_positions" in batch and unlikelihood_weight:
    u_loss, u_prob = losses.unlikelihood_loss(
        logits_BxLxV, batch["tokens"], batch["avoid_positions"], batch["avoid_ids"],
        batch["avoid_weights"], unlikelihood_form, totals.get("avoids"))
    loss = loss + unlikelihood_weight * u_loss
    metrics |= {"unlikelihood_loss": u_loss, "avoided_probability": u_prob}
  return loss, metrics


@functools.partial(jax.jit, static_argnames=("config", "value_weight", "micro_batches",
                                             "unlikelihood_weight", "unlikelihood_form"),
                   donate_argnums=0)
def sft_step(state: TrainState, batch: dict, *, config: ModelConfig, value_weight: float = 1.0,
             micro_batches: int = 1, unlikelihood_weight: float = 0.0,
             unlikelihood_form: str = "token"):
  """One AdamW step on the SFT loss. batch: tokens [B, L] int32, loss_mask [B, L] float32,
  optionally value_positions / value_labels / value_weights [B, M], avoid_positions /
  avoid_ids / avoid_weights [B, A] (`data.examples.encode`'s unlikelihood targets), and
  positions / segments [B, L] int32 for packed rows."""
  totals = sft_totals(batch) if micro_batches > 1 else None
  (loss, metrics), grads = micro_batch_grads(
      lambda p, b: sft_loss_fn(p, b, config, value_weight, totals, unlikelihood_weight,
                               unlikelihood_form),
      state.params, batch, micro_batches)
  metrics |= {"loss": loss, "grad_norm": grad_norm(grads)}
  return state.apply_gradients(grads=grads), metrics


def value_loss_fn(params, batch, config: ModelConfig, total=None):
  _, value_logits_BxL, _ = model_outputs(params, config, batch)
  loss, acc = losses.value_loss(value_logits_BxL, batch["value_positions"],
                                batch["value_labels"], batch["value_weights"], total)
  return loss, {"value_loss": loss, "value_accuracy": acc}


@functools.partial(jax.jit, static_argnames=("config", "micro_batches"), donate_argnums=0)
def value_step(state: TrainState, batch: dict, *, config: ModelConfig, micro_batches: int = 1):
  """One step on the PRM loss alone (the trunk is shared, so it moves too)."""
  total = jnp.sum(batch["value_weights"]) if micro_batches > 1 else None
  (_, metrics), grads = micro_batch_grads(lambda p, b: value_loss_fn(p, b, config, total),
                                          state.params, batch, micro_batches)
  return state.apply_gradients(grads=grads), metrics
