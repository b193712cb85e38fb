"""The run directory: phases that survive restarts, and configs that change between them."""

import json

from metacot_jax.runs import RunDir


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
