"""RL post-training loop: batched rollouts, verifier rewards, jitted updates, resumable.

Each update samples `problems_per_update` training problems (depending only on
(seed, update), like the SFT loop's batches), draws G whole generations per
problem in one jitted, KV-cached call, scores them on the host with a reward
function (the task's verifier: it reads text, once per update), turns rewards
into discounted returns and group advantages, and takes `epochs` jitted steps
(with one epoch the rollout policy is the policy being updated: no old log-probs).
With a mesh, the update's problems are split over its `data` axis.
A run killed after a checkpoint resumes at the next update and replays exactly
the updates an uninterrupted run takes.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from metacot_jax import scale
from metacot_jax.data.tokenizer import pad_batch
from metacot_jax.models import sampling
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.train import rl
from metacot_jax.train.checkpoint import Checkpoints
from metacot_jax.train.loop import batch_indices

# reward_fn(problem_ids [R], generated [R, N], lengths [R]) -> (rewards [R], trace_lengths [R]);
# a reward of 1 is a success (counted in `accuracy`), partial credit is below 1.
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class Rollout(NamedTuple):
  tokens_BxL: jax.Array  # prompt then generation, L = P + N; row b*G + g is sample g of problem b
  mask_BxL: jax.Array  # 1.0 at generated tokens (the ones the policy gradient scores)
  generated_BxN: jax.Array
  lengths_B: jax.Array  # generated tokens, the stop token included


@functools.partial(jax.jit, static_argnames=("config", "sampling_config", "group_size"))
def rollout(params, rng, prompts_BxP, prompt_lengths_B, *, config: ModelConfig,
            sampling_config: sampling.SamplingConfig, group_size: int) -> Rollout:
  """G sampled generations per prompt: one prefill per prompt, its cache copied G times."""
  out = sampling.sample(params, rng, prompts_BxP, prompt_lengths_B, config=config,
                        sampling=sampling_config, group_size=group_size)
  prompts = jnp.repeat(prompts_BxP, group_size, axis=0)
  starts_B = jnp.repeat(prompt_lengths_B, group_size)
  rows, n = prompts.shape[0], sampling_config.max_new_tokens
  tokens = jnp.pad(prompts, ((0, 0), (0, n)))
  tokens = tokens.at[jnp.arange(rows)[:, None], starts_B[:, None] + jnp.arange(n)].set(
      out.tokens_BxN)
  offset_BxL = jnp.arange(tokens.shape[1])[None] - starts_B[:, None]
  mask = ((offset_BxL >= 0) & (offset_BxL < out.lengths_B[:, None])).astype(jnp.float32)
  return Rollout(tokens, mask, out.tokens_BxN, out.lengths_B)


def rollout_batch(rollout_out: Rollout, rewards_B, trace_lengths_B, old_logprobs_BxL,
                  cfg: rl.RLConfig) -> tuple[dict, dict]:
  """The update's batch (tokens, mask, advantages; old log-probs unless None) and its
  statistics: accuracy (the share with reward 1), mean return gamma^|Z| r, mean |Z|,
  generated tokens, and the fraction of groups whose samples disagree (the only ones with a
  gradient)."""
  returns_B = rl.discounted_returns(jnp.asarray(rewards_B, jnp.float32),
                                    jnp.asarray(trace_lengths_B), cfg.gamma)
  advantages_B = rl.group_advantages(returns_B.reshape(-1, cfg.group_size),
                                     cfg.estimator).reshape(-1)
  batch = {"tokens": rollout_out.tokens_BxL, "mask": rollout_out.mask_BxL,
           "advantages": advantages_B}
  if old_logprobs_BxL is not None:
    batch["old_logprobs"] = old_logprobs_BxL
  stats = {"accuracy": float(np.mean(np.asarray(rewards_B) >= 1.0)),
           "return": float(jnp.mean(returns_B)),
           "trace_length": float(np.mean(trace_lengths_B)),
           "generated_tokens": float(jnp.mean(rollout_out.lengths_B)),
           "groups_with_signal": float(jnp.mean(jnp.any(advantages_B.reshape(-1, cfg.group_size)
                                                         != 0, axis=1)))}
  return batch, stats


def train_rl(state, ref_params, config: ModelConfig, cfg: rl.RLConfig,
             prompts: Sequence[Sequence[int]], reward_fn: RewardFn, *, num_updates: int,
             problems_per_update: int, seed: int, checkpoints: Checkpoints | None = None,
             checkpoint_every: int = 10, config_to_save: dict | None = None,
             log_fn: Callable[[int, dict], None] | None = None, stop_ids: tuple[int, ...] = (),
             desc: str = "rl", mesh=None):
  """Runs updates until `num_updates`; returns (state, metrics of the last update).

  `prompts` are token ids of the training problems (their index is the problem id
  given to `reward_fn`). A checkpoint records the updates done beside the config, so a run
  resumes at its next update even with another `cfg.epochs` (steps per update).
  """
  width = max(len(p) for p in prompts)
  # temperature 1: the rollouts sample the policy the gradient scores (on-policy)
  sampling_config = sampling.SamplingConfig(cfg.max_new_tokens, 1.0, 0, stop_ids)
  sampling.check_fits(config, width, sampling_config)
  all_prompts = pad_batch(prompts, width)
  all_lengths = np.asarray([len(p) for p in prompts], np.int32)
  if problems_per_update % scale.mesh_size(mesh):
    raise ValueError(f"problems_per_update={problems_per_update} does not divide over "
                     f"{scale.mesh_size(mesh)} devices; use a multiple of the device count")
  state, ref_params = scale.replicate((state, ref_params), mesh)
  start = int(state.step) // cfg.epochs  # a state handed in part way, with no checkpoint
  if checkpoints is not None:
    latest = checkpoints.latest_step()
    if latest is not None and latest >= int(state.step):
      if latest > int(state.step):
        state = checkpoints.restore(state, latest)[1]
      start = updates_done(checkpoints, cfg.epochs)
  step = functools.partial(rl.rl_step, config=config, loss=cfg.loss,
                          micro_batches=cfg.micro_batches)
  metrics = {}
  with tqdm(total=num_updates, initial=start, desc=desc, leave=False, mininterval=2.0) as bar:
    for update in range(start, num_updates):
      ids = batch_indices(len(prompts), problems_per_update, seed, update)
      rng = jax.random.fold_in(jax.random.PRNGKey(seed), update)
      batch = scale.shard_batch((all_prompts[ids], all_lengths[ids]), mesh)
      out = rollout(state.params, rng, *batch, config=config, sampling_config=sampling_config,
                    group_size=cfg.group_size)
      generated, lengths = scale.to_host((out.generated_BxN, out.lengths_B))
      rewards, trace_lengths = reward_fn(np.repeat(ids, cfg.group_size), generated, lengths)
      old = (rl.token_logprobs(state.params, out.tokens_BxL, config=config,
                               micro_batches=cfg.micro_batches) if cfg.epochs > 1 else None)
      batch, stats = rollout_batch(out, rewards, trace_lengths, old, cfg)
      batch["advantages"] = scale.shard_batch(batch["advantages"], mesh)  # like the tokens
      for _ in range(cfg.epochs):
        state, step_metrics = step(state, ref_params, batch)
      metrics = stats | {k: float(v) for k, v in jax.device_get(step_metrics).items()}
      bar.update(1)
      bar.set_postfix(accuracy=f"{stats['accuracy']:.3f}", length=f"{stats['trace_length']:.0f}",
                      kl=f"{metrics['kl']:.4f}")
      if log_fn is not None:
        log_fn(update + 1, metrics)
      if checkpoints is not None and ((update + 1) % checkpoint_every == 0
                                      or update + 1 == num_updates):
        checkpoints.save(int(state.step), state,
                         dict(config_to_save or {}, **{UPDATES_DONE: update + 1}))
  return state, metrics


UPDATES_DONE = "rl_updates_done"


def updates_done(checkpoints: Checkpoints, epochs: int) -> int:
  """The updates an RL run's latest checkpoint holds (0 with none). Checkpoints from before
  the count was saved give their step / `epochs`, right only for the epochs they ran with."""
  latest = checkpoints.latest_step()
  if latest is None:
    return 0
  saved = checkpoints.restore_config(latest) or {}
  return int(saved.get(UPDATES_DONE, latest // epochs))
