"""Runs a command as several "hosts" on this machine, joined by jax.distributed on localhost."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def cpu_env(devices: int, **extra) -> dict:
  return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
              JAX_PLATFORMS="cpu", **extra)


def run_hosts(argv: list[str], log_dir: Path, *, hosts: int = 2, devices_per_host: int = 4,
              timeout: float = 900, cwd=None) -> list[str]:
  """Starts `argv` once per host and waits for all; returns each host's stdout.

  Output goes to files under `log_dir` (a full pipe cannot stall a host in a collective);
  if any host fails or the time runs out, every host is killed and the test fails with
  that host's stderr.
  """
  env = cpu_env(devices_per_host, JAX_COORDINATOR_ADDRESS=f"localhost:{free_port()}",
                JAX_NUM_PROCESSES=str(hosts))
  log_dir.mkdir(parents=True, exist_ok=True)
  logs = [(log_dir / f"host{i}.out", log_dir / f"host{i}.err") for i in range(hosts)]
  procs = []
  try:
    for i, (out, err) in enumerate(logs):
      with open(out, "w") as o, open(err, "w") as e:
        procs.append(subprocess.Popen(argv, cwd=cwd, stdout=o, stderr=e,
                                      env=dict(env, JAX_PROCESS_ID=str(i))))
    for proc in procs:
      proc.wait(timeout=timeout)
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  for proc, (_, err) in zip(procs, logs):
    assert proc.returncode == 0, err.read_text()[-3000:]
  return [out.read_text() for out, _ in logs]
