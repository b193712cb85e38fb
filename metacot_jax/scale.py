"""Data parallelism over a `jax.sharding.Mesh`: batches split over `data`, params replicated.

Jitted steps need no change: given inputs with these shardings, XLA partitions the
computation and inserts the gradient all-reduce. On a pod, call
`initialize_distributed()` first on every host.
"""

from __future__ import annotations

import os

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"


def initialize_distributed() -> bool:
  """`jax.distributed.initialize()` when launched multi-host (a coordinator is set, or
  on a TPU pod / SLURM); returns whether it ran."""
  multi_host = any(k in os.environ for k in (
      "JAX_COORDINATOR_ADDRESS", "COORDINATOR_ADDRESS", "SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES"))
  if multi_host:
    jax.distributed.initialize()
  return multi_host


def data_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh named `data` over the first `num_devices` devices (all by default)."""
  n = num_devices or jax.device_count()
  if n > jax.device_count():
    raise ValueError(f"asked for {n} devices but JAX sees {jax.device_count()}")
  return jax.make_mesh((n,), (DATA,), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def shard_batch(tree, mesh: Mesh):
  """Splits every array's leading axis over `data` (it must divide by the mesh size)."""
  n = mesh.shape[DATA]
  for leaf in jax.tree.leaves(tree):
    if leaf.shape[0] % n:
      raise ValueError(f"batch axis {leaf.shape[0]} does not divide over {n} devices; "
                       f"use a batch size that is a multiple of {n}")
  return jax.device_put(tree, NamedSharding(mesh, P(DATA)))


def replicate(tree, mesh: Mesh):
  return jax.device_put(tree, NamedSharding(mesh, P()))
