"""The main job as the tests start it: a very small config (TINY) run in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# A very small run of the whole pipeline (the quick preset made smaller still).
TINY = ["--preset=quick", "--config.data.train_puzzles=40", "--config.data.test_puzzles=10",
        "--config.data.hard_puzzles=10", "--config.sft.steps=12", "--config.metacot_sft.steps=12",
        "--config.sft.checkpoint_every=4", "--config.metacot_sft.checkpoint_every=4",
        "--config.search.simulations=(2,)", "--config.search.batch_size=10",
        "--config.eval.batch_size=10", "--config.baselines.samples=2",
        "--config.star.simulations=2", "--config.rl.updates=3", "--config.rl.checkpoint_every=1",
        "--config.rl.train_puzzles=20", "--config.rl.max_new_tokens=60",
        "--config.search.hard_puzzles=5", "--config.rl.problems_per_update=8",
        "--config.star.source=both", "--config.star.generations=2", "--config.star.repair=True",
        "--config.data.back_lists_tried=True", "--config.unlikelihood_weight=1.0"]


def run_job(workdir, *extra, timeout=900, devices=1, **env_extra):
  """`python -m experiments.game24_mcts --workdir=workdir *extra` on `devices` CPU devices."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", **env_extra)
  if devices > 1:
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  return subprocess.run([sys.executable, "-m", "experiments.game24_mcts", f"--workdir={workdir}",
                         *extra], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=timeout, check=False)


def tiny(*changes: str) -> list[str]:
  """TINY less its values of the fields `changes` names, then `changes` (each
  `--config.<field>=<value>`): the job refuses a field given twice."""
  fields = {c.split("=", 1)[0]: c for c in changes}
  kept = [arg for arg in TINY if arg.split("=", 1)[0] not in fields]
  return kept + list(changes)
