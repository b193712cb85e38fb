"""Data parallelism over 8 CPU devices, in one process and as two "hosts" of 4 devices.

The checks run in subprocesses (the device flag must precede JAX); the two-process
run joins through `jax.distributed.initialize` on localhost, as hosts of a pod do.
"""

import subprocess
import sys
from pathlib import Path

import jax
import pytest

from metacot_jax import scale
from tests.processes import cpu_env, run_hosts

SCRIPT = Path(__file__).parent / "scripts" / "sharded_check.py"


def _parse(stdout: str) -> dict:
  return dict(line.split("=", 1) for line in stdout.splitlines() if "=" in line)


@pytest.fixture(scope="module", params=["one_host", "two_hosts"])
def report(request, tmp_path_factory):
  if request.param == "one_host":
    done = subprocess.run([sys.executable, str(SCRIPT)], env=cpu_env(8), capture_output=True,
                          text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return _parse(done.stdout)
  first, second = (_parse(out) for out in run_hosts(
      [sys.executable, str(SCRIPT)], tmp_path_factory.mktemp("hosts")))
  assert first == second  # every process computes and reads back the same global results
  return first


def test_processes(report, request):
  assert report["processes"] == {"one_host": "1", "two_hosts": "2"}[request.node.callspec.id]


def test_sharded_sft_steps_match_one_device(report):
  # Adam divides by sqrt(v): reduction-order noise in the gradient shows up at ~lr * 1e-2
  assert float(report["max_param_diff"]) < 2e-4, report
  assert float(report["loss_diff"]) < 1e-5, report
  assert float(report["loop_param_diff"]) < 2e-4, report


def test_params_replicated_over_data_mesh(report):
  assert "spec=P()" in report["param_sharding"], report


def test_sharded_search_matches_one_device(report):
  assert report["same_answers"] == "True", report
  assert "'data'" in report["search_sharding"], report
  assert report["same_search_summary"] == "True", report  # a padded chunk rounded up to 8


def test_sharded_generation_matches_one_device(report):
  assert report["same_generations"] == "True", report
  assert report["same_samples"] == "True", report
  assert float(report["sample_value_diff"]) < 1e-5, report
  assert report["same_sampled"] == "True", report


def test_sharded_rl_updates_match_one_device(report):
  change, diff = float(report["rl_param_change"]), float(report["rl_param_diff"])
  assert change > 1e-4, report  # the updates moved the params
  assert diff < 0.05 * change, report


@pytest.mark.parametrize("env, joins", [
    ({}, False),
    ({"SLURM_JOB_ID": "7"}, False),  # an salloc shell, or a batch script without srun
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1",
      "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, False),  # srun with one task
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
      "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, True),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1"}, True),
])
def test_joins_only_a_launch_of_several_processes(env, joins, monkeypatch):
  for key in (*scale.PROCESS_ENV, *scale.SLURM_STEP_ENV, "TPU_WORKER_HOSTNAMES"):
    monkeypatch.delenv(key, raising=False)
  for key, value in env.items():
    monkeypatch.setenv(key, value)
  calls = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda *a, **k: calls.append((a, k)))
  assert scale.initialize_distributed() == joins
  assert calls == ([((), {})] if joins else [])
