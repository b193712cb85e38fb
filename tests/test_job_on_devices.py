"""The main job with its batches split over 8 CPU devices (quick form: CI's 2 cores).

The whole TINY run on 8 devices, and on two 4-device hosts, are `slow` tests in
test_experiments.py; tests/test_sharding.py checks each sharded part against one device.
"""

import json

from tests.jobs import TINY, run_job, tiny

# TINY without the search grid, the baselines' beams and best-first, and Meta-STaR rounds:
# SFT, greedy and sampled evaluation, the PRM's labels and one RL run on the mesh.
QUICK_PHASES = tiny("--config.search.simulations=()", "--config.baselines.beam_widths=()",
                    "--config.baselines.expansions=()", "--config.star.rounds=0",
                    "--config.rl.gammas=(0.99,)")


def test_main_job_splits_its_batches_over_8_devices(tmp_path):
  done = run_job(tmp_path, *QUICK_PHASES, devices=8)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["devices"] == {"count": 8, "processes": 1, "kind": "cpu"}
  assert {"train": 40, "test": 10, "hard": 10}.items() <= results["data"].items()
  ran = {"greedy/cot/test", "greedy/metacot/hard", "traced/metacot", "sampling", "prm",
         "star/pairs/0/0", "rl/reference", "rl/0.99"}
  assert ran <= set(results), sorted(ran - set(results))
  assert not [k for k in results if "mcts/" in k or k.startswith("star/1")]  # turned off
  logged = [json.loads(line)["phase"] for line in (tmp_path / "metrics.jsonl").open()]
  assert logged.count("rl_gamma_0.99") == 3  # each update of the sharded RL run
  assert "split over 8 cpu device(s) in 1 process(es)" in (tmp_path / "report.md").read_text()


def test_batch_sizes_that_do_not_divide_over_the_devices_fail_before_work(tmp_path):
  done = run_job(tmp_path / "run", *tiny("--config.sft.batch_size=12"), devices=8, timeout=120)
  assert done.returncode != 0
  assert "sft.batch_size=12" in done.stderr and "--config.sft.batch_size=16" in done.stderr
  assert not (tmp_path / "run" / "results.json").exists()
  # and each micro-batch: 8 problems x 4 samples do not split into 3 slices
  done = run_job(tmp_path / "run", *TINY, "--config.rl.micro_batches=3", timeout=120)
  assert done.returncode != 0
  assert "rl.problems_per_update=8 is not a multiple of 3" in done.stderr, done.stderr[-500:]
  assert not (tmp_path / "run" / "results.json").exists()
