"""Losses of the policy (masked next-token cross-entropy, unlikelihood of tokens it must not
write) and the value head (BCE)."""

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


UNLIKELIHOOD_FORMS = ("token", "pairwise")


def unlikelihood_loss(logits_BxLxV, tokens_BxL, positions_BxA, ids_BxA, weights_BxA,
                      form: str = "token", total=None):
  """A loss on tokens that must not be written: `ids_BxA` at positions `positions_BxA`
  (predicted from the position before), where `tokens_BxL` holds the token written.

  'token' is token unlikelihood (Welleck et al., 2020), -log(1 - p(avoided)): it lowers the
  avoided token against every other, so its mass may go to tokens that make no sense there.
  'pairwise' is -log sigmoid(z_written - z_avoided): the written token must beat the
  avoided one, and no other logit is a target. Returns (loss, mean probability of the
  avoided tokens), both divided by `total` when given (as in `masked_token_loss`);
  `weights_BxA` is 0 for unused slots.
  """
  if form not in UNLIKELIHOOD_FORMS:
    raise ValueError(f"unknown unlikelihood form {form!r}; choose one of {UNLIKELIHOOD_FORMS}")
  rows_Bx1 = jnp.arange(ids_BxA.shape[0])[:, None]
  before_BxA = jnp.maximum(positions_BxA - 1, 0)
  logits_BxAxV = logits_BxLxV[rows_Bx1, before_BxA].astype(jnp.float32)
  logp_BxAxV = jax.nn.log_softmax(logits_BxAxV)
  logp_BxA = jnp.take_along_axis(logp_BxAxV, ids_BxA[..., None], axis=-1)[..., 0]
  if form == "token":  # log(1 - p) as log-sum-exp of the other logits: exact as p -> 1
    avoided_BxAxV = jax.nn.one_hot(ids_BxA, logits_BxAxV.shape[-1], dtype=bool)
    others_BxA = jax.nn.logsumexp(jnp.where(avoided_BxAxV, -jnp.inf, logits_BxAxV), axis=-1)
    terms_BxA = jax.nn.logsumexp(logits_BxAxV, axis=-1) - others_BxA
  else:
    written_BxA = tokens_BxL[rows_Bx1, positions_BxA]
    margin_BxA = (jnp.take_along_axis(logits_BxAxV, written_BxA[..., None], axis=-1)
                  - jnp.take_along_axis(logits_BxAxV, ids_BxA[..., None], axis=-1))[..., 0]
    terms_BxA = -jax.nn.log_sigmoid(margin_BxA)
  total = jnp.maximum(jnp.sum(weights_BxA) if total is None else total, 1.0)
  return (jnp.sum(terms_BxA * weights_BxA) / total,
          jnp.sum(jnp.exp(logp_BxA) * weights_BxA) / total)


def value_probability(value_logits):
  return jax.nn.sigmoid(value_logits)
