"""A resumable training loop: deterministic batches, periodic orbax checkpoints.

The batch at step s depends only on (seed, s), so a run killed after its last
checkpoint and started again replays exactly the steps an uninterrupted run takes.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from tqdm.auto import tqdm

from metacot_jax import scale
from metacot_jax.train.checkpoint import Checkpoints


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """Example indices of step `step`: epoch-wise shuffles seeded by (seed, epoch)."""
  if num_examples < batch_size:
    raise ValueError(f"{num_examples} examples cannot fill a batch of {batch_size}; "
                     "lower the batch size or add data")
  per_epoch = num_examples // batch_size
  epoch, k = divmod(step, per_epoch)
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  return order[k * batch_size:(k + 1) * batch_size]


def train(state, data: dict[str, np.ndarray], step_fn: Callable, *, num_steps: int,
          batch_size: int, seed: int, checkpoints: Checkpoints | None = None,
          checkpoint_every: int = 200, config_to_save: dict | None = None,
          log_fn: Callable[[int, dict], None] | None = None, log_every: int = 50,
          desc: str = "train", mesh=None):
  """Runs `state, metrics = step_fn(state, batch)` until `state.step == num_steps`.

  Resumes from `checkpoints` when they hold a later step than `state`. With a `mesh`,
  the state is replicated and each batch split over its `data` axis.
  """
  num_examples = len(next(iter(data.values())))
  if batch_size % scale.mesh_size(mesh):
    raise ValueError(f"batch size {batch_size} does not divide over {scale.mesh_size(mesh)} "
                     "devices; use a multiple of the device count")
  state = scale.replicate(state, mesh)
  if checkpoints is not None:
    latest = checkpoints.latest_step()
    if latest is not None and latest > int(state.step):
      state = checkpoints.restore(state, latest)[1]
  start = int(state.step)
  metrics = None
  with tqdm(total=num_steps, initial=start, desc=desc, leave=False, mininterval=2.0) as bar:
    for step in range(start, num_steps):
      idx = batch_indices(num_examples, batch_size, seed, step)
      state, metrics = step_fn(state, scale.shard_batch({k: v[idx] for k, v in data.items()},
                                                        mesh))
      bar.update(1)
      if log_fn is not None and ((step + 1) % log_every == 0 or step + 1 == num_steps):
        log_fn(step + 1, jax.device_get(metrics))
      if checkpoints is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == num_steps):
        checkpoints.save(step + 1, state, config_to_save)
  return state, (jax.device_get(metrics) if metrics is not None else {})
