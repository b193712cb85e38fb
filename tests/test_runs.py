"""The run directory: phases that survive restarts, and configs that change between them."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from metacot_jax.runs import RunDir, write_atomically
from tests.jobs import REPO


def test_a_phase_runs_once_and_survives_a_restart(tmp_path):
  calls = []
  run = RunDir(tmp_path / "run")
  assert run.phase("a", lambda: calls.append(1) or {"x": 1}) == {"x": 1}
  assert run.phase("a", lambda: calls.append(2) or {"x": 2}) == {"x": 1}
  again = RunDir(tmp_path / "run")  # a restarted job reads results.json back
  assert again.phase("a", lambda: calls.append(3) or {"x": 3}) == {"x": 1}
  assert calls == [1]
  saved = json.loads((tmp_path / "run" / "results.json").read_text())
  assert saved["a"] == {"x": 1} and saved["seconds"]["a"] >= 0


def test_config_changes_name_every_changed_field(tmp_path):
  run = RunDir(tmp_path)
  config = {"seed": 0, "rl": {"gammas": (1.0, 0.99), "estimator": "grpo"}, "data": {"pack": True}}
  assert run.config_changes(config) == []  # nothing saved yet
  run.save("config", config)
  again = RunDir(tmp_path)
  assert again.config_changes(config) == []  # tuples saved as JSON lists still compare equal
  changed = {"seed": 0, "rl": {"gammas": (1.0,), "estimator": "loo", "beta": 0.1},
             "data": {}}
  assert again.config_changes(changed) == [
      "data.pack: True -> '(unset)'", "rl.beta: '(unset)' -> 0.1",
      "rl.estimator: 'grpo' -> 'loo'", "rl.gammas: [1.0, 0.99] -> [1.0]"]


def test_a_resumed_phase_forgets_the_rows_it_logs_again(tmp_path):
  run = RunDir(tmp_path)
  run.forget_log("sft", after_step=0)  # nothing logged yet: nothing to do
  for step in range(1, 6):  # killed after step 5; its last checkpoint was at step 3
    run.log("sft", step, {"loss": step})
  run.log("rl", 1, {"loss": 0.5})
  run.forget_log("sft", after_step=3)
  rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["phase"], r["step"], r["loss"]) for r in rows] == [
      ("sft", 1, 1.0), ("sft", 2, 2.0), ("sft", 3, 3.0), ("rl", 1, 0.5)]


def test_a_row_cut_off_by_a_crash_does_not_stop_a_resume(tmp_path):
  run = RunDir(tmp_path)
  run.log("sft", 1, {"loss": 1.0})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"phase": "sft", "st')  # a full disk or a lost host, mid-row
  run.forget_log("sft", after_step=1)
  rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [(r["phase"], r["step"]) for r in rows] == [("sft", 1)]


def test_kept_arrays_are_read_back_until_forgotten(tmp_path):
  """A phase killed part-way trains on the arrays it began with, not on a rebuild."""
  builds = []

  def build():
    builds.append(1)
    return {"tokens": np.arange(6, dtype=np.int32).reshape(2, 3) + len(builds)}

  first = RunDir(tmp_path).kept_arrays("star_1", build, "config A")
  again = RunDir(tmp_path).kept_arrays("star_1", build, "config A")  # the restarted job
  assert len(builds) == 1 and set(again) == {"tokens"}
  np.testing.assert_array_equal(again["tokens"], first["tokens"])
  assert again["tokens"].dtype == np.int32
  RunDir(tmp_path).forget_arrays("star_1")
  assert not (tmp_path / "arrays" / "star_1.npz").exists()
  RunDir(tmp_path).kept_arrays("star_1", build, "config A")
  assert len(builds) == 2
  assert not list((tmp_path / "arrays").glob("*.tmp"))


def test_kept_arrays_of_another_config_or_unreadable_are_built_again(tmp_path, caplog):
  """A run resumed with other overrides runs the rest with them, a killed round's data too."""
  builds = []
  build = lambda: builds.append(1) or {"x": np.full(3, len(builds))}
  RunDir(tmp_path).kept_arrays("star_1", build, "config A")
  resumed = RunDir(tmp_path).kept_arrays("star_1", build, "config B")
  assert len(builds) == 2 and (resumed["x"] == 2).all()
  assert "was built with another config: building star_1's data again" in caplog.text
  assert (RunDir(tmp_path).kept_arrays("star_1", build, "config B")["x"] == 2).all()
  (tmp_path / "arrays" / "star_1.npz").write_bytes(b"")  # a file a lost host left empty
  assert (RunDir(tmp_path).kept_arrays("star_1", build, "config B")["x"] == 3).all()
  assert "cannot be read" in caplog.text


def test_write_atomically_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
  path = tmp_path / "trial.json"
  write_atomically(path, '{"status": "done"}')
  def disk_full(fd):
    raise OSError(28, "No space left on device")
  monkeypatch.setattr(os, "fsync", disk_full)
  with pytest.raises(OSError, match="No space left"):
    write_atomically(path, '{"status": "failed", "error": "a long log"}')
  assert json.loads(path.read_text()) == {"status": "done"}


def test_a_second_job_on_a_locked_workdir_stops(tmp_path):
  held = RunDir(tmp_path)  # the lock lasts as long as the RunDir
  held.lock()
  code = ("import sys; from metacot_jax.runs import RunDir\n"
          "try:\n  RunDir(sys.argv[1]).lock()\n"
          "except RuntimeError as e:\n  print(e); sys.exit(3)\n")
  other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                         text=True, check=False, cwd=REPO, timeout=120)
  assert other.returncode == 3, other.stderr
  assert f"another job is running in {tmp_path}" in other.stdout
  del held  # the first job ends: the folder is free again
  again = RunDir(tmp_path)
  again.lock()
