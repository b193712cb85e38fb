"""Losses of the policy (masked next-token cross-entropy) and the value head (BCE)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def masked_token_loss(logits_BxLxV, tokens_BxL, loss_mask_BxL, total=None):
  """Mean cross-entropy of predicting tokens[t] from tokens[<t] where loss_mask[t] = 1.

  `loss_mask[:, 0]` is ignored (nothing predicts the first token). Returns
  (loss, number of weighted tokens). With `total`, the sum is divided by it instead
  of by this batch's count (a slice of a larger batch: the slices' losses then add up).
  """
  ce_BxL = optax.softmax_cross_entropy_with_integer_labels(logits_BxLxV[:, :-1], tokens_BxL[:, 1:])
  weights_BxL = loss_mask_BxL[:, 1:]
  count = jnp.sum(weights_BxL)
  total = count if total is None else total
  return jnp.sum(ce_BxL * weights_BxL) / jnp.maximum(total, 1.0), count


def value_loss(value_logits_BxL, positions_BxM, labels_BxM, weights_BxM, total=None):
  """Binary cross-entropy of the PRM at given positions against labels in [0, 1].

  `positions_BxM` index the last token of each labelled prefix; `weights_BxM`
  is 0 for unused slots. Returns (loss, accuracy of the 0.5 threshold), both
  divided by `total` when given (as in `masked_token_loss`).
  """
  logits_BxM = jnp.take_along_axis(value_logits_BxL, positions_BxM, axis=1)
  bce_BxM = optax.sigmoid_binary_cross_entropy(logits_BxM, labels_BxM)
  total = jnp.maximum(jnp.sum(weights_BxM) if total is None else total, 1.0)
  correct_BxM = (logits_BxM > 0) == (labels_BxM > 0.5)
  return (jnp.sum(bce_BxM * weights_BxM) / total,
          jnp.sum(correct_BxM * weights_BxM) / total)


def value_probability(value_logits):
  return jax.nn.sigmoid(value_logits)
