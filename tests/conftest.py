"""Shared by every test module: the end-to-end tests' subprocesses share compiled programs."""

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def compilation_cache_for_subprocesses(tmp_path_factory):
  """JAX's persistent compilation cache, in a folder of this test session, for the processes
  the tests start (the main job several times, hosts, sharded checks): a later run of the
  same job loads what an earlier one compiled (the tiny job: 126 s cold, 49 s warm on 2
  cores). This process imported JAX before any fixture ran, so it keeps compiling in memory.
  Set only where the user has not set a cache of their own."""
  names = {"JAX_COMPILATION_CACHE_DIR": str(tmp_path_factory.mktemp("jax_cache")),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
  added = {k: v for k, v in names.items() if k not in os.environ}
  os.environ.update(added)
  yield
  for k in added:
    os.environ.pop(k, None)
