"""Data parallelism on 8 forced CPU devices (in a subprocess: the flag must precede JAX)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "sharded_check.py"


@pytest.fixture(scope="module")
def report():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def test_sharded_sft_steps_match_one_device(report):
  # Adam divides by sqrt(v): reduction-order noise in the gradient shows up at ~lr * 1e-2
  assert float(report["max_param_diff"]) < 2e-4, report
  assert float(report["loss_diff"]) < 1e-5, report


def test_params_replicated_over_data_mesh(report):
  assert "spec=P()" in report["param_sharding"], report


def test_sharded_search_matches_one_device(report):
  assert report["same_answers"] == "True", report
  assert "'data'" in report["search_sharding"], report
