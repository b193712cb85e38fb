"""RL post-training objective: maximise E[gamma^|Z| r(S, q)] - beta KL(pi || pi_ref).

Pure functions of arrays, all jit-friendly:

* `discounted_returns`: gamma^|Z| * r, the paper's discounted reward (|Z| is the
  length of the search trace, in tokens or steps).
* `group_advantages`: a baseline from the G samples of the same problem, either
  REINFORCE leave-one-out (R_i minus the mean of the other G-1 returns) or
  GRPO's normalised advantage ((R_i - mean) / std).
* `rl_loss` / `rl_step`: the policy-gradient surrogate on sampled tokens with an
  optional PPO clip, plus the exact per-token KL to a frozen reference policy
  (summed over the vocabulary, so KL(pi || pi) is exactly zero).

The surrogate is written with the ratio pi / pi_old; with one epoch per batch
pi_old = pi, the ratio is 1 and its gradient is REINFORCE's A * grad log pi.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from metacot_jax.models.transformer import ModelConfig, forward
from metacot_jax.train.state import TrainState
from metacot_jax.train.steps import grad_norm, micro_batch_grads, row_slices

ESTIMATORS = ("loo", "grpo")
LENGTH_UNITS = ("tokens", "steps")


@dataclasses.dataclass(frozen=True)
class RLConfig:
  """Hyper-parameters of one RL run. Hashable: the loss's static part is `LossConfig`."""
  gamma: float = 1.0  # discount per unit of trace length
  length_unit: str = "tokens"  # |Z| counted in 'tokens' or in 'steps' (lines of the trace)
  beta: float = 0.05  # weight of the per-token KL to the reference policy
  group_size: int = 8  # G samples per problem
  estimator: str = "loo"  # 'loo' (REINFORCE leave-one-out) | 'grpo'
  clip_eps: float = 0.0  # > 0: PPO's clipped ratio
  epochs: int = 1  # optimiser steps on each batch of rollouts (> 1 wants clip_eps > 0)
  max_new_tokens: int = 128
  micro_batches: int = 1  # gradient of each update's rollouts in this many slices (memory)

  def __post_init__(self):
    if not 0.0 < self.gamma <= 1.0:
      raise ValueError(f"gamma must be in (0, 1], got {self.gamma}")
    if self.length_unit not in LENGTH_UNITS:
      raise ValueError(f"length_unit must be one of {LENGTH_UNITS}, got {self.length_unit!r}")
    if self.beta < 0:
      raise ValueError(f"beta must be >= 0, got {self.beta}")
    if self.estimator not in ESTIMATORS:
      raise ValueError(f"estimator must be one of {ESTIMATORS}, got {self.estimator!r}")
    if self.group_size < 2:
      raise ValueError(f"group_size must be >= 2 (the baseline needs the other samples of "
                       f"a problem), got {self.group_size}")
    if self.micro_batches < 1:
      raise ValueError(f"micro_batches must be >= 1, got {self.micro_batches}")
    if self.clip_eps < 0 or self.epochs < 1:
      raise ValueError(f"need clip_eps >= 0 and epochs >= 1, got {self.clip_eps}, {self.epochs}")
    if self.max_new_tokens <= 0:
      raise ValueError(f"max_new_tokens must be positive, got {self.max_new_tokens}")

  @property
  def loss(self) -> "LossConfig":
    return LossConfig(self.beta, self.clip_eps)


@dataclasses.dataclass(frozen=True)
class LossConfig:
  beta: float
  clip_eps: float


def discounted_returns(rewards_B, lengths_B, gamma: float):
  """gamma^|Z| * r for each sample."""
  return rewards_B * jnp.power(gamma, lengths_B.astype(jnp.float32))


def group_advantages(returns_BxG, estimator: str = "loo", eps: float = 1e-6):
  """Advantage of each of the G samples of a problem against the others.

  'loo': R_i - mean_{j != i} R_j (an unbiased baseline, independent of sample i).
  'grpo': (R_i - mean_j R_j) / (std_j R_j + eps).
  A group whose samples all earn the same return gets zero advantage.
  """
  g = returns_BxG.shape[-1]
  mean_B = jnp.mean(returns_BxG, axis=-1, keepdims=True)
  if estimator == "loo":
    advantages = (returns_BxG - mean_B) * g / (g - 1)
  elif estimator == "grpo":
    advantages = (returns_BxG - mean_B) / (jnp.std(returns_BxG, axis=-1, keepdims=True) + eps)
  else:
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
  # The mean of G equal float32 returns can miss them by an ulp, which GRPO's division by
  # a near-zero spread would blow up to a uniform push of about 0.1 on every sample.
  same_B = jnp.all(returns_BxG == returns_BxG[..., :1], axis=-1, keepdims=True)
  return jnp.where(same_B, 0.0, advantages)


def clipped_surrogate(ratio, advantage, clip_eps: float):
  """PPO's min(rho A, clip(rho, 1 - eps, 1 + eps) A); plain rho A when clip_eps == 0."""
  if clip_eps == 0.0:
    return ratio * advantage
  clipped = jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  return jnp.minimum(ratio * advantage, clipped * advantage)


def token_logprobs_from_logits(logits_BxLxV, tokens_BxL):
  """[B, L]: entry t is log pi(tokens[t] | tokens[<t]); entry 0 (no context) is 0."""
  logp_BxLxV = jax.nn.log_softmax(logits_BxLxV[:, :-1])
  picked = jnp.take_along_axis(logp_BxLxV, tokens_BxL[:, 1:, None], -1)[..., 0]
  return jnp.pad(picked, ((0, 0), (1, 0)))


def token_kl(logits_BxLxV, ref_logits_BxLxV):
  """Exact KL(pi || pi_ref) of the next-token distributions at each position, [B, L]."""
  logp = jax.nn.log_softmax(logits_BxLxV)
  ref_logp = jax.nn.log_softmax(ref_logits_BxLxV)
  return jnp.sum(jnp.exp(logp) * (logp - ref_logp), axis=-1)


def token_entropy(logits_BxLxV):
  logp = jax.nn.log_softmax(logits_BxLxV)
  return -jnp.sum(jnp.exp(logp) * logp, axis=-1)


@functools.partial(jax.jit, static_argnames=("config", "micro_batches"))
def token_logprobs(params, tokens_BxL, *, config: ModelConfig, micro_batches: int = 1):
  """log pi(tokens[t] | tokens[<t]) under `params`, [B, L] (entry 0 is 0); computed in
  `micro_batches` slices of rows one after another (rows j, j + m, ... as in training)."""
  def logprobs(tokens):
    return token_logprobs_from_logits(forward(params, config, tokens)[0], tokens)
  if micro_batches == 1:
    return logprobs(tokens_BxL)
  sliced = jax.lax.map(logprobs, row_slices(tokens_BxL, micro_batches))  # [m, B / m, L]
  return jnp.swapaxes(sliced, 0, 1).reshape(tokens_BxL.shape)  # rows back in order


def rl_loss(params, ref_params, batch: dict, config: ModelConfig, loss: LossConfig,
            total=None):
  """Token-mean of -(clipped surrogate) + beta * KL over the generated tokens.

  batch: tokens [B, L] (prompt then generation), mask [B, L] (1 where a generated
  token is predicted), advantages [B], and optionally old_logprobs [B, L] of the
  rollout policy. Without them the step is on-policy (one epoch): pi_old is pi under
  stop_gradient, so the ratio is exactly 1 and no extra forward pass is needed.
  Token means divide by `total` when given (the whole batch's generated tokens, for
  a slice of it).
  """
  tokens, mask = batch["tokens"], batch["mask"]
  logits, _, _ = forward(params, config, tokens)
  ref_logits, _, _ = forward(ref_params, config, tokens)
  ref_logits = jax.lax.stop_gradient(ref_logits)
  # Position t's logits predict token t + 1: align everything to the predicted token.
  logp_BxL = token_logprobs_from_logits(logits, tokens)
  kl_BxL = jnp.pad(token_kl(logits[:, :-1], ref_logits[:, :-1]), ((0, 0), (1, 0)))
  entropy_BxL = jnp.pad(token_entropy(logits[:, :-1]), ((0, 0), (1, 0)))
  old_BxL = batch.get("old_logprobs")
  old_BxL = jax.lax.stop_gradient(logp_BxL) if old_BxL is None else old_BxL
  # the ratio only where a generated token is scored: elsewhere a drift of 88+ nats between
  # epochs would make it inf, and inf * 0 a NaN loss
  ratio_BxL = jnp.exp(jnp.where(mask > 0, logp_BxL - old_BxL, 0.0))
  surrogate_BxL = clipped_surrogate(ratio_BxL, batch["advantages"][:, None], loss.clip_eps)
  count = jnp.maximum(jnp.sum(mask) if total is None else total, 1.0)
  mean = lambda x: jnp.sum(x * mask) / count
  pg_loss, kl = -mean(surrogate_BxL), mean(kl_BxL)
  clipped = jnp.abs(ratio_BxL - 1.0) > loss.clip_eps if loss.clip_eps else jnp.zeros_like(mask)
  metrics = {"pg_loss": pg_loss, "kl": kl, "entropy": mean(entropy_BxL),
             "clip_fraction": mean(clipped.astype(jnp.float32)), "ratio": mean(ratio_BxL)}
  return pg_loss + loss.beta * kl, metrics


@functools.partial(jax.jit, static_argnames=("config", "loss", "micro_batches"),
                   donate_argnums=0)
def rl_step(state: TrainState, ref_params, batch: dict, *, config: ModelConfig,
            loss: LossConfig, micro_batches: int = 1):
  """One optimiser step on `rl_loss`; the reference policy is frozen."""
  total = jnp.sum(batch["mask"]) if micro_batches > 1 else None
  (value, metrics), grads = micro_batch_grads(
      lambda p, b: rl_loss(p, ref_params, b, config, loss, total), state.params, batch,
      micro_batches)
  metrics |= {"loss": value, "grad_norm": grad_norm(grads)}
  return state.apply_gradients(grads=grads), metrics
