"""AlphaZero-style policy improvement: train the LM toward the search's choices.

At a searched node the LM's distribution over its K candidate steps is the softmax
of their log-probabilities, per-token mean or sum as the search's prior takes them
(`step_mdp.SearchConfig.prior`), optionally of each step's choice part only
(`choice_id`). The policy loss is the cross-entropy from mctx's `action_weights`
(a stop-gradient target) to that distribution; the value loss is binary
cross-entropy of the PRM at the node against the search's outcome.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metacot_jax.models.transformer import ModelConfig, forward
from metacot_jax.train.state import TrainState
from metacot_jax.train.steps import micro_batch_grads


def candidate_logprobs(params, config: ModelConfig, prefix_BxT, prefix_len_B, cand_BxKxS,
                       cand_len_BxK, mean: bool = True, choice_id: int = -1):
  """log pi(candidate | prefix) for every candidate, [B, K] (per-token mean if `mean`).

  With `choice_id` (e.g. the id of ' = '), only the tokens up to and including its first
  occurrence count: the choice of step (`5 + 4 =`), not its arithmetic (`9 (left: ...)`),
  so that pushing an unchosen candidate down never unlearns a correct result.
  """
  b, k, s = cand_BxKxS.shape
  # room for the longest prefix and a candidate after it (a trimmed prefix array is short)
  t = min(prefix_BxT.shape[1] + s, config.max_len)
  prefix_BxT = jnp.pad(prefix_BxT, ((0, 0), (0, max(0, t - prefix_BxT.shape[1]))))[:, :t]
  pos_T = jnp.arange(t)
  offset_BxKxT = pos_T[None, None] - prefix_len_B[:, None, None]
  cand_tok = jnp.take_along_axis(cand_BxKxS, jnp.clip(offset_BxKxT, 0, s - 1), axis=2)
  in_cand = (offset_BxKxT >= 0) & (offset_BxKxT < cand_len_BxK[..., None])
  seq_BxKxT = jnp.where(in_cand, cand_tok, jnp.where(offset_BxKxT < 0, prefix_BxT[:, None], 0))
  is_choice_BxKxS = (cand_BxKxS == choice_id) & (jnp.arange(s) < cand_len_BxK[..., None])
  scored_len_BxK = jnp.where(jnp.any(is_choice_BxKxS, -1), jnp.argmax(is_choice_BxKxS, -1) + 1,
                             cand_len_BxK)
  scored = (offset_BxKxT >= 0) & (offset_BxKxT < scored_len_BxK[..., None])
  logits, _, _ = forward(params, config, seq_BxKxT.reshape(b * k, t))
  logp = jax.nn.log_softmax(logits[:, :-1])
  token_logp = jnp.take_along_axis(logp, seq_BxKxT.reshape(b * k, t)[:, 1:, None], -1)[..., 0]
  total_BxK = jnp.sum(token_logp * scored.reshape(b * k, t)[:, 1:], 1).reshape(b, k)
  return total_BxK / jnp.maximum(scored_len_BxK, 1) if mean else total_BxK


VALUE_TARGETS = ("outcome", "q")


def search_targets(roots, policy_output, solved_B, value_target: str = "outcome") -> dict:
  """The training batch of one mctx search (host arrays): the policy target at each root
  is mctx's `action_weights`; the value target is the search's outcome (did the tree
  reach a verified answer) or its Q-value at the root (the MCTS estimate, in [0, 1]).
  Prefixes are cut to the longest root (the rest is padding), which `candidate_logprobs`
  extends by one candidate's width: the step's cost follows the prompts, not `max_len`."""
  if value_target not in VALUE_TARGETS:
    raise ValueError(f"value_target must be one of {VALUE_TARGETS}, got {value_target!r}")
  if value_target == "outcome":
    value = np.asarray(solved_B, np.float32)
  else:
    value = np.clip(np.asarray(policy_output.search_tree.node_values[:, 0], np.float32), 0, 1)
  width = int(np.max(roots.length))
  return {"prefix": np.asarray(roots.tokens)[:, :width], "prefix_len": np.asarray(roots.length),
          "candidates": np.asarray(roots.cand_tokens), "cand_len": np.asarray(roots.cand_lengths),
          "cand_valid": np.asarray(roots.cand_valid),
          "weights": np.asarray(policy_output.action_weights, np.float32), "outcome": value}


def alphazero_loss(params, batch, config: ModelConfig, value_weight: float, choice_id: int = -1,
                   mean: bool = True):
  """batch: prefix [B, T], prefix_len [B], candidates [B, K, S], cand_len [B, K],
  cand_valid [B, K], weights [B, K] (mctx action_weights), outcome [B] in [0, 1].
  `mean` and `choice_id` as in `candidate_logprobs` (`mean` = the search's prior is 'mean')."""
  logp_BxK = candidate_logprobs(params, config, batch["prefix"], batch["prefix_len"],
                                batch["candidates"], batch["cand_len"], mean=mean,
                                choice_id=choice_id)
  logits_BxK = jnp.where(batch["cand_valid"], logp_BxK, jnp.finfo(jnp.float32).min)
  target_BxK = jax.lax.stop_gradient(batch["weights"])
  policy_loss = jnp.mean(optax.softmax_cross_entropy(logits_BxK, target_BxK))
  _, value_logits_BxT, _ = forward(params, config, batch["prefix"])
  rows = jnp.arange(batch["prefix"].shape[0])
  value_logit_B = value_logits_BxT[rows, batch["prefix_len"] - 1]
  value_loss = jnp.mean(optax.sigmoid_binary_cross_entropy(value_logit_B, batch["outcome"]))
  return policy_loss + value_weight * value_loss, {"policy_loss": policy_loss,
                                                   "value_loss": value_loss}


@functools.partial(jax.jit, static_argnames=("config", "value_weight", "choice_id", "mean",
                                             "micro_batches"), donate_argnums=0)
def alphazero_step(state: TrainState, batch: dict, *, config: ModelConfig,
                   value_weight: float = 1.0, choice_id: int = -1, mean: bool = True,
                   micro_batches: int = 1):
  """One step on `alphazero_loss`; `choice_id` and `mean` as in `candidate_logprobs`."""
  # the losses are means over rows and the slices are equal: each slice weighs 1/m
  (loss, metrics), grads = micro_batch_grads(
      lambda p, b: jax.tree.map(lambda x: x / micro_batches,
                                alphazero_loss(p, b, config, value_weight, choice_id, mean)),
      state.params, batch, micro_batches)
  return state.apply_gradients(grads=grads), {**metrics, "loss": loss}
