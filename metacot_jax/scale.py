"""Data parallelism over a `jax.sharding.Mesh`: batches split over `data`, params replicated.

Jitted steps need no change: given inputs with these shardings, XLA partitions the
computation and inserts the gradient all-reduce. Every process of a multi-host run
runs the same program on the same global batches (they depend only on the seed),
and each puts its own devices' rows on the mesh. Functions that take `mesh=None`
leave their inputs as they are: one device, no sharding.
"""

from __future__ import annotations

import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = "data"
# Our launch convention for clusters JAX does not detect by itself (TPU pods and SLURM it does).
PROCESS_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def initialize_distributed() -> bool:
  """Joins a multi-host run; returns whether it did.

  With `JAX_COORDINATOR_ADDRESS` (host:port of process 0), `JAX_NUM_PROCESSES` and
  `JAX_PROCESS_ID` set, every process calls `jax.distributed.initialize` with them;
  on a TPU pod or in an `srun` step of several tasks JAX finds them itself. On CPU
  hosts the cross-process collectives go through gloo. Must run before anything
  touches a device.
  """
  given = [k for k in PROCESS_ENV if os.environ.get(k)]
  if given:
    if len(given) != len(PROCESS_ENV):
      missing = ", ".join(k for k in PROCESS_ENV if k not in given)
      raise ValueError(f"a multi-host launch needs all of {', '.join(PROCESS_ENV)}; "
                       f"{missing} is not set")
    # CPU devices talk across processes through gloo (no effect on GPU or TPU collectives)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(os.environ["JAX_COORDINATOR_ADDRESS"],
                               num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                               process_id=int(os.environ["JAX_PROCESS_ID"]))
    return True
  if "TPU_WORKER_HOSTNAMES" in os.environ or slurm_tasks() > 1:
    jax.distributed.initialize()
    return True
  return False


# What JAX's SLURM detection reads: all set only inside an `srun` step.
SLURM_STEP_ENV = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                  "SLURM_LOCALID")


def slurm_tasks() -> int:
  """Processes of this `srun` step; 0 outside one (an `salloc` shell, or a batch script
  that runs python without `srun`: one process, nothing to join)."""
  if not all(os.environ.get(k) for k in SLURM_STEP_ENV):
    return 0
  return int(os.environ["SLURM_NTASKS"])


def is_primary() -> bool:
  """Whether this process writes shared files (results, logs): process 0."""
  return jax.process_index() == 0


def on_primary(fn) -> None:
  """`fn()` on process 0 only (e.g. writing a file), then a barrier: afterwards every
  process can read what it wrote."""
  if is_primary():
    fn()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("on_primary")


def primary_first(fn):
  """`fn()` on process 0, then (after a barrier) on the others: for files that every
  process reads but one must write first, such as a prepared dataset."""
  if jax.process_count() == 1:
    return fn()
  result = fn() if is_primary() else None
  multihost_utils.sync_global_devices("primary_first")
  return result if is_primary() else fn()


def data_mesh(num_devices: int | None = None) -> Mesh:
  """A 1-D mesh named `data` over the first `num_devices` devices (by default all of them,
  on every host)."""
  n = num_devices or jax.device_count()
  if n > jax.device_count():
    raise ValueError(f"asked for {n} devices but JAX sees {jax.device_count()}")
  return jax.make_mesh((n,), (DATA,), devices=jax.devices()[:n],
                       axis_types=(jax.sharding.AxisType.Auto,))


def mesh_size(mesh: Mesh | None) -> int:
  return 1 if mesh is None else mesh.shape[DATA]


def chunk_size(batch_size: int, mesh: Mesh | None) -> int:
  """`batch_size` rounded up to a multiple of the mesh's devices: the padded shape of an
  evaluation chunk of `batch_size` items (the chunks themselves do not change)."""
  n = mesh_size(mesh)
  return -(-batch_size // n) * n


def pad_rows(items: list, mesh: Mesh | None) -> tuple[list, int]:
  """`items` padded with repeats of the last to a multiple of the devices, and how many
  are real (a single batch that must split over the mesh)."""
  padded = list(items) + [items[-1]] * (chunk_size(len(items), mesh) - len(items))
  return padded, len(items)


def shard_batch(tree, mesh: Mesh | None):
  """Splits every array's leading axis over `data` (it must divide by the mesh size);
  the tree as it is without a mesh."""
  if mesh is None:
    return tree
  n = mesh.shape[DATA]
  for leaf in jax.tree.leaves(tree):
    if leaf.shape[0] % n:
      raise ValueError(f"batch axis {leaf.shape[0]} does not divide over {n} devices; "
                       f"use a batch size that is a multiple of {n}")
  return jax.device_put(tree, NamedSharding(mesh, P(DATA)))


def replicate(tree, mesh: Mesh | None):
  """A copy of `tree` on every device of `mesh`; the tree as it is without a mesh."""
  if mesh is None:
    return tree
  return jax.device_put(tree, NamedSharding(mesh, P()))


def to_host(tree):
  """NumPy copies of (possibly sharded) arrays; on several hosts each process gets all rows."""
  def get(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
      return np.asarray(x)
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))  # the global array
  return jax.tree.map(get, tree)
