"""The main job's command line, a resumable end-to-end run, and the sweep runner."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest
from absl import app

from experiments import configs, game24_mcts, report, sweep
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import evaluate
from metacot_jax import runs
from metacot_jax.runs import RunDir
from metacot_jax.train.state import OptimizerConfig, create_train_state
from tests.jobs import REPO, TINY, run_job
from tests.processes import run_hosts

FAKE_JOB = "tests.scripts.fake_job"


def test_unknown_override_fails_before_work(tmp_path):
  done = run_job(tmp_path / "run", "--preset=quick", "--config.sft.stepz=3", timeout=120)
  assert done.returncode != 0
  assert "stepz" in done.stderr
  assert not (tmp_path / "run" / "results.json").exists()


def test_ill_typed_override_fails_before_work(tmp_path):
  done = run_job(tmp_path / "run", "--preset=quick", "--config.sft.steps=many", timeout=120)
  assert done.returncode != 0
  assert "steps" in done.stderr
  assert not (tmp_path / "run" / "results.json").exists()


def test_a_field_given_twice_fails_before_work(tmp_path):
  done = run_job(tmp_path / "run", "--preset=quick", "--config.rl.gammas=(1.0,)",
                 "--config.sft.steps=3", "--config.rl.gammas=(0.99,)", timeout=60)
  assert done.returncode != 0
  assert "--config.rl.gammas given more than once: give each config field once" in done.stderr
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "run").exists()


def test_repeated_overrides_are_named_once_each():
  argv = ["job", "--config.sft.steps=3", "--config.rl.gammas=(1.0,)", "--workdir=w",
          "--config.sft.steps", "4", "-config.rl.gammas=()", "--config.sft.steps=5"]
  assert game24_mcts.repeated_overrides(argv) == ["--config.rl.gammas", "--config.sft.steps"]
  assert game24_mcts.repeated_overrides(["job", "--config.sft.steps=3", "--preset=quick"]) == []


@pytest.mark.parametrize("override, message", [
    ("--config.metacot_model.dtype=float16",
     "--config.metacot_model: ModelConfig.dtype must be 'float32' or 'bfloat16'"),
    ("--config.data.dfs_noise_scales=(0.3,-1.0)",
     "--config.data.dfs_noise_scales: DFS noise scales must be"),
    ("--config.metacot_model.num_layers=3", "metacot_sft.init_from_cot"),
    ("--config.data.loss_variant=zonly", "--config.data.loss_variant='zonly': choose one of"),
    ("--config.sft.micro_batches=0", "--config.sft.micro_batches=0: must be a whole number"),
    ("-preset=default", "the config was built for preset 'quick' but --preset is 'default'"),
])
def test_bad_config_fails_before_work_with_the_flag_named(tmp_path, override, message):
  done = run_job(tmp_path / "run", "--preset=quick", override, timeout=120)
  assert done.returncode != 0
  assert message in done.stderr
  assert "Traceback" not in done.stderr
  assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("field, value, message", [
    ("data.test_puzzles", 0, "data.test_puzzles=0: must be a whole number >= 1"),
    ("data.hard_puzzles", -3, "data.hard_puzzles=-3: must be a whole number >= 1"),
    ("data.loss_variant", "zonly", "data.loss_variant='zonly': choose one of"),
    ("unlikelihood_weight", -0.5, "unlikelihood_weight=-0.5: must be a number >= 0"),
    ("unlikelihood_form", "sequence", "unlikelihood_form='sequence': choose one of"),
    ("data.dfs_noise_scales", (), "data.dfs_noise_scales: DFS noise scales must be"),
    ("data.bfs_fraction", 1.5, "data.bfs_fraction: the shares of BFS and A* traces must be"),
    ("data.astar_fraction", -0.1, "data.astar_fraction: the shares of BFS and A* traces"),
    ("data.astar_fraction", 1.5, "data.astar_fraction: the shares of BFS and A* traces"),
    ("eval.max_new_tokens", 30, "eval.max_new_tokens=30: must be above 30"),
    ("eval.max_new_tokens", 181, "eval.max_new_tokens=181: the CoT model's samples must fit "
     "it: at most model.max_len=192 less the 12-token prompt = 180"),
    ("eval.batch_size", 0, "eval.batch_size=0: must be a whole number >= 1"),
    ("data.manual_dir", "/nowhere/game24", "data.manual_dir='/nowhere/game24': holds no 24.csv"),
    ("sft.steps", 0, "sft.steps=0: must be a whole number >= 1"),
    ("sft.batch_size", 0, "sft.batch_size=0"),
    ("metacot_sft.checkpoint_every", 0, "metacot_sft.checkpoint_every=0"),
    ("metacot_sft.warmup_steps", -1, "--config.metacot_sft: need total_steps > 0 and warmup"),
    ("metacot_sft.length", 384, "metacot_sft.length=384: training rows must fit the model: 1 "
     "to metacot_model.max_len=192 tokens (raise --config.metacot_model.max_len with it)"),
    ("search.policy", "muzero", "--config.search.simulations: policy must be 'gumbel' or"),
    ("search.simulations", (8, 0), "--config.search.simulations: num_simulations must be at"),
    ("search.prior", "max", "--config.search: prior must be 'mean' or 'sum'"),
    ("search.max_step_tokens", 61, "search.max_step_tokens=61: three steps after the 12-token "
     "prompt must fit model.max_len and metacot_model.max_len (the smaller is 192): at most 60"),
    ("search.hard_puzzles", -1, "search.hard_puzzles=-1: must be a whole number >= 0"),
    ("baselines.beam_widths", (1, 0), "baselines.beam_widths=(1, 0): each must be"),
    ("star.value_target", "x", "star.value_target='x': choose one of ('outcome', 'q')"),
    ("star.trace_order", "bfs", "star.trace_order='bfs': choose one of ('simulation', "
     "'depth_first')"),
    ("star.simulations", 0, "--config.star.simulations: num_simulations must be at least 1"),
    ("star.train_puzzles", 0, "star.train_puzzles=0"),
    ("star.source", "mcts", "star.source='mcts': choose one of ('search', 'generations', "
     "'both')"),
    ("rl.estimator", "ppo", "--config.rl: estimator must be one of ('loo', 'grpo')"),
    ("rl.gammas", (1.0, 0.0), "--config.rl: gamma must be in (0, 1], got 0.0"),
    ("rl.gammas", (1, 1.0), "rl.gammas=(1, 1.0): each gamma once"),
    ("rl.micro_batches", 0, "--config.rl: micro_batches must be >= 1"),
    ("rl.updates", 0, "rl.updates=0: must be a whole number >= 1"),
    ("rl.train_puzzles", 7, "rl.problems_per_update=8: each update draws this many distinct "
     "puzzles, but RL has 7"),
    ("rl.wrong_answer_reward", 1.0, "rl.wrong_answer_reward=1.0: must be in [0, 1), below a "
     "right answer's reward of 1"),
    ("rl.wrong_answer_reward", 0.05, "rl.wrong_answer_reward=0.05: must be below min(rl.gammas)"
     "^rl.max_new_tokens = 0.98^150 = 0.0483, else a wrong answer at once out-earns a right one"),
    ("rl.max_new_tokens", 190, "rl.max_new_tokens=190: rollouts must fit the model: 1 to "
     "metacot_model.max_len=192 less the 12-token prompt = 180"),
])
def test_config_check_names_the_field_of_each_value_a_phase_would_reject(field, value, message):
  for preset in configs.PRESETS:
    configs.check(configs.get_config(preset))  # every preset as it ships
  cfg = configs.get_config("default")
  *group, name = field.split(".")  # a group's field, or a top-level one
  with cfg.unlocked():
    (cfg[group[0]] if group else cfg)[name] = value
  with pytest.raises(ValueError) as e:
    configs.check(cfg)
  assert message in str(e.value)


def test_config_check_bounds_the_wrong_answer_reward_by_the_smallest_gamma():
  cfg = configs.get_config("default")  # gammas down to 0.98, 150-token rollouts
  with cfg.unlocked():
    cfg.rl.wrong_answer_reward = 0.04  # below 0.98^150 = 0.048
    configs.check(cfg)
    cfg.rl.wrong_answer_reward, cfg.rl.gammas = 0.1, (1.0, 0.99)  # below 0.99^150 = 0.22
    configs.check(cfg)
    cfg.rl.length_unit = "steps"  # |Z| in lines: never more than in tokens, the same bound
    configs.check(cfg)
    cfg.rl.wrong_answer_reward = 0.3
    with pytest.raises(ValueError, match="0.99\\^150 = 0.221"):
      configs.check(cfg)


def test_config_check_rejects_search_shares_that_sum_past_one():
  cfg = configs.get_config("default")
  cfg.data.bfs_fraction, cfg.data.astar_fraction = 0.6, 0.4
  configs.check(cfg)  # the rest, none, are DFS
  cfg.data.astar_fraction = 0.6
  with pytest.raises(ValueError, match=r"data.astar_fraction: .* sum to at most 1 .* got 0.6 "
                     r"and 0.6"):
    configs.check(cfg)


def test_config_check_of_meta_star_on_the_policys_own_generations():
  cfg = configs.get_config("quick")
  cfg.star.source, cfg.star.generations = "generations", 0
  with pytest.raises(ValueError, match=r"star.generations=0: must be a whole number >= 1"):
    configs.check(cfg)
  cfg.star.generations = 4  # the quick preset's AlphaZero steps need the search's targets
  with pytest.raises(ValueError, match=r"star.alphazero.steps=4: AlphaZero steps need the "):
    configs.check(cfg)
  cfg.star.source = "both"
  configs.check(cfg)
  cfg.star.source, cfg.star.alphazero.steps = "generations", 0
  configs.check(cfg)
  cfg.star.source, cfg.star.generations = "search", 0
  with pytest.raises(ValueError, match=r"star.generations=0"):  # the CoT baseline's STaR
    configs.check(cfg)
  cfg.star.matched_cot = False  # unused: no generations sampled
  configs.check(cfg)
  cfg.star.repair = True  # repairs need failed generations
  with pytest.raises(ValueError, match=r"star.repair=True: repairs finish the policy's failed "
                     r"generations: set star.source 'generations' or 'both'"):
    configs.check(cfg)
  cfg.star.source, cfg.star.generations = "both", 2
  configs.check(cfg)


def test_config_check_fits_the_cot_baselines_star_rounds_to_the_cot_model():
  """With star.matched_cot the CoT model trains on star.sft's rows too."""
  cfg = configs.get_config("default")
  cfg.metacot_sft.init_from_cot = False  # the two models may then differ in max_len
  cfg.model.max_len, cfg.sft.length = 160, 96
  with pytest.raises(ValueError, match=r"star.sft.length=192: training rows must fit the "
                     r"model: 1 to model.max_len=160 tokens"):
    configs.check(cfg)
  cfg.star.matched_cot = False
  configs.check(cfg)


def test_config_check_skips_the_phases_that_do_not_run():
  cfg = configs.get_config("default")
  cfg.star.rounds = 0
  cfg.star.sft.steps = 0  # unused: no Meta-STaR round
  cfg.star.value_target = "x"
  cfg.rl.gammas = ()
  cfg.rl.estimator = "ppo"  # unused: no RL run
  configs.check(cfg)
  cfg.star.rounds = 1
  with pytest.raises(ValueError, match="star.sft.steps=0"):
    configs.check(cfg)


def test_models_may_differ_in_compute_dtype_and_local_heads_only():
  cfg = configs.get_config("quick")
  cfg.model.dtype = "bfloat16"
  cfg.metacot_model.local_heads = 2  # a mask: the CoT model's weights fit it
  cot, metacot = game24_mcts.model_configs(cfg, Tokenizer())
  assert (cot.dtype, metacot.dtype) == ("bfloat16", "float32")
  assert (cot.local_heads, metacot.local_heads, metacot.local_window) == (0, 2, 32)
  cfg.metacot_model.max_len = 2 * cfg.model.max_len
  with pytest.raises(app.UsageError, match="init_from_cot"):
    game24_mcts.model_configs(cfg, Tokenizer())
  cfg.metacot_model.max_len = cfg.model.max_len
  cfg.metacot_model.d_model = 2 * cfg.model.d_model
  with pytest.raises(app.UsageError, match="init_from_cot"):
    game24_mcts.model_configs(cfg, Tokenizer())
  cfg.metacot_sft.init_from_cot = False
  assert game24_mcts.model_configs(cfg, Tokenizer())[1].d_model == 2 * cfg.model.d_model


def test_a_run_resumes_only_with_the_models_of_its_checkpoints(tmp_path):
  tok = Tokenizer()
  run = RunDir(tmp_path / "run")
  cfg = configs.get_config("quick")
  cfg.metacot_sft.init_from_cot = False  # the models may differ (a check of its own, above)
  check = lambda: game24_mcts.check_models_unchanged(
      run, *game24_mcts.model_configs(cfg, tok), tok)
  check()  # nothing saved yet
  before = cfg.to_dict()  # a run from before dtype and RoPE: float32, learned positions
  for flag in ("model", "metacot_model"):
    del before[flag]["position"], before[flag]["dtype"]
  def save(name, config):
    checkpoints = run.checkpoints(name)
    checkpoints.save(1, {"w": np.zeros(2)}, config)
    checkpoints.close()
  save("sft_cot", before)  # stopped before the Meta-CoT phase: only the CoT model is held to it
  with pytest.raises(app.UsageError, match=r"other models; resume with "
                     r"--config.model.position=learned, or use a new --workdir"):
    check()
  save("sft_metacot", before)
  with pytest.raises(app.UsageError, match=r"resume with --config.model.position=learned "
                     r"--config.metacot_model.position=learned, or"):  # both in one message
    check()
  cfg.model.position = cfg.metacot_model.position = "learned"
  check()
  cfg.model.dtype = "bfloat16"  # the compute dtype may change: the parameters are the same
  check()
  cfg.model.max_len += 8  # learned positions: one embedding per place, so max_len counts
  with pytest.raises(app.UsageError, match=r"--config.model.max_len=192,"):
    check()
  save("star_1", configs.get_config("quick").to_dict())  # later phases: RoPE, 192 places
  cfg = configs.get_config("quick")
  cfg.metacot_sft.init_from_cot = False
  cfg.model.position = "learned"
  cfg.metacot_model.max_len = 256  # RoPE's parameters do not depend on max_len
  shutil.rmtree(run.path / "checkpoints" / "sft_metacot")
  check()
  cfg.metacot_model.d_ff *= 2
  with pytest.raises(app.UsageError, match=r"resume with --config.metacot_model.d_ff=256,"):
    check()
  for name in ("sft_cot", "star_1"):  # left: the CoT baseline's STaR round, the CoT model's
    shutil.rmtree(run.path / "checkpoints" / name)
  save("star_cot_1", configs.get_config("quick").to_dict())
  cfg = configs.get_config("quick")
  check()
  cfg.metacot_sft.init_from_cot = False
  cfg.model.d_ff *= 2
  with pytest.raises(app.UsageError, match=r"resume with --config.model.d_ff=256, or"):
    check()
  cfg.model.d_ff //= 2  # back lines that list the steps tried: 3 more tokens, other embeddings
  shutil.rmtree(run.path / "checkpoints" / "star_cot_1")
  listed = configs.get_config("quick").to_dict()
  listed["data"]["back_lists_tried"] = True
  save("star_cot_2", listed)
  with pytest.raises(app.UsageError,
                     match=r"resume with --config.data.back_lists_tried=True, or use a new"):
    check()
  cfg.data.back_lists_tried = True
  tok = game24_mcts.run_tokenizer(cfg)
  check()


def test_resumed_runs_from_before_a_model_field_compare_as_they_were():
  before = configs.get_config("quick").to_dict()
  del before["model"]["position"], before["metacot_model"]["dtype"]
  filled = game24_mcts.with_legacy_model_defaults(before)
  assert filled["model"]["position"] == "learned" and filled["metacot_model"]["dtype"] == "float32"
  assert "position" not in before["model"]  # the saved dict itself is left as it was


@pytest.mark.parametrize("preset", configs.PRESETS)
def test_every_preset_passes_the_checks_made_before_work(preset):
  cfg = configs.get_config(preset)
  game24_mcts.check_batches_divide(cfg, 1)
  cot, metacot = game24_mcts.model_configs(cfg, Tokenizer())
  assert cot.dtype == metacot.dtype == ("bfloat16" if preset == "full" else "float32")


def test_batches_must_divide_only_in_the_phases_that_run():
  cfg = configs.get_config("default")
  game24_mcts.check_batches_divide(cfg, 2)
  cfg.rl.micro_batches = cfg.star.sft.micro_batches = 3
  with pytest.raises(app.UsageError, match=r"star.sft.batch_size=\d+ is not a multiple of 6, "
                     r"rl.problems_per_update=8 is not a multiple of 6"):
    game24_mcts.check_batches_divide(cfg, 2)
  cfg.rl.gammas, cfg.star.rounds = (), 0  # no RL, no Meta-STaR rounds: nothing to divide
  game24_mcts.check_batches_divide(cfg, 2)


def test_long_preset_is_the_default_trained_longer_on_more_traces():
  """Only Meta-CoT's steps and traces and Meta-STaR's data change, so the CoT baseline still
  follows its budget."""
  default, long = configs.get_config("default").to_dict(), configs.get_config("long").to_dict()
  assert long["data"].pop("traces_per_problem") == 16 > default["data"].pop("traces_per_problem")
  assert long["star"].pop("train_puzzles") == 900 > default["star"].pop("train_puzzles")
  assert (long["star"].pop("source"), default["star"].pop("source")) == ("generations", "search")
  assert not long["star"].pop("keep_round0") and default["star"].pop("keep_round0")
  assert long["metacot_sft"].pop("steps") == 3 * default["metacot_sft"].pop("steps")
  assert long["metacot_sft"].pop("checkpoint_every") == 1500
  del default["metacot_sft"]["checkpoint_every"]
  assert {**long, "preset": "default"} == default
  assert long["metacot_sft"]["matched_cot"] and long["metacot_sft"]["init_from_cot"]


def _stable(results):
  """results.json without fields that legitimately differ between runs."""
  return {k: v for k, v in results.items() if k not in ("config", "seconds")}


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
  """The run directory of one uninterrupted TINY run on one device."""
  workdir = tmp_path_factory.mktemp("whole")
  whole = run_job(workdir, *TINY)
  assert whole.returncode == 0, whole.stderr[-3000:]
  assert (workdir / "report.md").exists()
  assert (workdir / "success_vs_compute.png").exists()
  return workdir


@pytest.fixture(scope="module")
def tiny_results(tiny_workdir):
  """results.json of that run."""
  return json.loads((tiny_workdir / "results.json").read_text())


def test_unlikelihood_loss_trains_the_meta_cot_phases_only(tiny_workdir):
  """With unlikelihood_weight the Meta-CoT phases log the loss on the steps tried before a
  backtrack; the CoT phase has no backtracks, so no targets."""
  logged = [json.loads(l) for l in (tiny_workdir / "metrics.jsonl").read_text().splitlines()]
  by_phase = {}
  for record in logged:
    by_phase.setdefault(record["phase"], []).append(record)
  assert all("unlikelihood_loss" not in r for r in by_phase["sft_cot"])
  assert by_phase["sft_metacot"] and all(
      r["unlikelihood_loss"] > 0 and 0 < r["avoided_probability"] < 1
      for r in by_phase["sft_metacot"])
  # a round's traces are the policy's and its searches': some rounds hold no backtrack
  assert by_phase["star_1"] and all(0 <= r["avoided_probability"] < 1 for r in by_phase["star_1"])


def test_resuming_with_other_overrides_says_what_changed(tmp_path, tiny_workdir, tiny_results):
  """A finished run resumed with another override keeps its results and records the change."""
  workdir = tmp_path / "run"
  shutil.copytree(tiny_workdir, workdir)
  older = dict(tiny_results)  # as written before greedy results split right and wrong
  older["greedy/metacot/test"] = {k: v for k, v in older["greedy/metacot/test"].items()
                                  if k not in ("solved_after_backtrack_rate", "cut_off_rate",
                                               "mean_tokens_right", "mean_tokens_wrong",
                                               "cut_off_legal_rate", "first_error_kinds",
                                               "repeated_step_rate")}
  (workdir / "results.json").write_text(json.dumps(older))
  again = run_job(workdir, *TINY, "--config.rl.beta=0.5")
  assert again.returncode == 0, again.stderr[-3000:]
  acc = tiny_results["greedy/metacot/test"]["accuracy"]
  assert f"greedy metacot  test: {acc:.1%}" in again.stdout
  assert "- solved after a backtrack, - cut off" in again.stdout  # the older result has neither
  assert ("first errors: -; - cut off with every step legal, - with a step taken again"
          in again.stdout)
  cot = tiny_results["greedy/cot/test"]  # a result that has them prints them
  assert (f"first errors: {report.first_errors(cot)}; {cot['cut_off_legal_rate']:.1%} cut off "
          f"with every step legal, {cot['repeated_step_rate']:.1%} with a step taken "
          "again") in again.stdout
  assert "was started with another config (rl.beta: 0.02 -> 0.5)" in again.stderr
  results = json.loads((workdir / "results.json").read_text())
  assert results["config_changes"] == ["rl.beta: 0.02 -> 0.5"]
  assert results["config"]["rl"]["beta"] == 0.5
  assert results["rl/1.0"] == tiny_results["rl/1.0"]  # finished phases are not redone
  assert "`rl.beta: 0.02 -> 0.5`" in (workdir / "report.md").read_text()


@pytest.mark.slow
def test_main_job_splits_batches_over_8_devices(tmp_path, tiny_results):
  """The whole TINY run on 8 devices (about 5 min; CI runs `test_job_on_devices`'s quick form)."""
  done = run_job(tmp_path, *TINY, devices=8)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["devices"]["count"] == 8 and tiny_results["devices"]["count"] == 1
  assert set(results) == set(tiny_results)  # every phase ran
  assert results["data"] == tiny_results["data"]
  assert "split over 8 cpu device(s) in 1 process(es)" in (tmp_path / "report.md").read_text()


def test_greedy_results_split_right_and_wrong_lengths(tiny_workdir, tiny_results):
  rl = [k for k in tiny_results if k.startswith("rl/")]
  assert len(rl) == 3  # the reference and two gammas
  for key in ["greedy/cot/test", "greedy/metacot/hard"] + rl:
    g = tiny_results[key]
    right = [n for n, c in zip(g["tokens"], g["correct"]) if c] if "tokens" in g else None
    if right is not None:  # the lengths of the right and wrong generations, and their mix
      assert g["mean_tokens_right"] == (np.mean(right) if right else None)
    parts = [(g["accuracy"], g["mean_tokens_right"]), (1 - g["accuracy"], g["mean_tokens_wrong"])]
    assert sum(w * n for w, n in parts if n is not None) == pytest.approx(g["mean_tokens"])
    assert 0 <= g["solved_after_backtrack_rate"] <= g["accuracy"]
    if "tokens" in g:  # as the sampler counted: at most max_len - 12 prompt tokens, and a
      # generation cut off wrote them all (one that ended with its last token was not cut off)
      limit = tiny_results["config"]["metacot_model"]["max_len"] - 12
      assert max(g["tokens"]) <= limit
      assert g["cut_off_rate"] <= np.mean([n == limit for n in g["tokens"]])
  for key in ["greedy/cot/test", "greedy/metacot/test", "greedy/metacot/hard"] + rl:
    g = tiny_results[key]  # every generation with an illegal line has one first error kind
    assert sum(g["first_error_kinds"].values()) == pytest.approx(g["illegal_step_rate"])
    assert 0 <= g["cut_off_legal_rate"] <= g["cut_off_rate"]
    # a step taken again needs two steps or more (its back lines list the steps tried: TINY)
    assert 0 <= g["repeated_step_rate"] <= np.mean([n >= 2 for n in g.get("steps", [2])])
  text = (tiny_workdir / "report.md").read_text()
  assert ("| solved after a backtrack | mean generated tokens (right / wrong) | cut off by the "
          "length limit |") in text
  assert ("| solved after a backtrack | greedy tokens (right / wrong) | greedy cut off by the "
          "length limit |") in text
  assert ("| with an illegal step | malformed line | number not available | division by zero | "
          "wrong result | wrong numbers left | backtrack to an unvisited state | line after the "
          "last number | cut off, every step legal | with a step taken again |") in text
  assert "| RL reference | test | " in text and "| RL gamma 0.99 | test | " in text


def test_report_is_written_again_for_a_run_stopped_part_way(tmp_path, tiny_results, capsys):
  # stopped after the greedy evaluations: every later phase's key is missing
  later = ("arithmetic", "traced", "mcts/", "hard/", "bfs/", "beam/", "best_first/", "dfs/",
           "sampling", "prm", "star", "rl")
  partial = {k: v for k, v in tiny_results.items() if not k.startswith(later)}
  assert "greedy/metacot/hard" in partial and "rl/1.0" not in partial
  (tmp_path / "results.json").write_text(json.dumps(partial))
  assert report.main(["--workdir", str(tmp_path)]) == 0
  assert f"wrote {tmp_path / 'report.md'}" in capsys.readouterr().out
  text = (tmp_path / "report.md").read_text()
  acc = tiny_results["greedy/metacot/test"]["accuracy"]
  assert f"| metacot | test | {acc:.1%}" in text
  assert "| RL with gamma < 1 shortens traces >= 30% at no loss of accuracy (test, greedy) | " \
         "not run |" in text
  for target in report.MCTS_TARGETS:  # no MCTS ran: nothing is "not met"
    assert f"| {target} | not run | not measured (no MCTS ran" in text
  # stopped before either model was trained: no parameter counts yet
  (tmp_path / "results.json").write_text(json.dumps(
      {k: tiny_results[k] for k in ("config", "data", "devices")}))
  assert report.main(["--workdir", str(tmp_path)]) == 0
  assert "Models: CoT - parameters, Meta-CoT -" in (tmp_path / "report.md").read_text()
  # no Meta-STaR rounds: the SFT model's own MCTS (policy 0, value 0) is still shown
  no_rounds = {k: v for k, v in tiny_results.items()
               if not k.startswith("star") or k == "star/pairs/0/0"}
  (tmp_path / "results.json").write_text(json.dumps(no_rounds))
  assert report.main(["--workdir", str(tmp_path)]) == 0
  text = (tmp_path / "report.md").read_text()
  assert "## Meta-STaR rounds" not in text
  assert f"| 0 | {tiny_results['star/pairs/0/0']:.1%} |" in text
  with pytest.raises(SystemExit, match="no results.json there"):
    report.main(["--workdir", str(tmp_path / "elsewhere")])
  (tmp_path / "results.json").write_text(json.dumps({"config": tiny_results["config"]}))
  with pytest.raises(SystemExit, match="has no data yet: the run stopped before it loaded"):
    report.main(["--workdir", str(tmp_path)])


def test_mcts_targets_say_what_was_measured():
  tree = lambda acc, nodes: {"accuracy": acc, "nodes": nodes, "tokens_generated": 10 * nodes}
  mcts = [("mcts/verifier/tree", tree(0.6, 12)), ("mcts/learned/tree", tree(0.4, 12))]
  curve = lambda acc: {"k": [1, 16], "accuracy": [0.1, acc], "nodes": [3, 48],
                       "tokens_generated": [30, 960]}
  rows = report._mcts_targets(mcts, curve(0.5))
  assert rows[0][1:] == ("60.0% at 12.0 nodes", "not met") and rows[1][1:] == ("40.0%", "not met")
  assert rows[2] == ("MCTS reaches best-of-16 (50.0%) with >= 4x fewer nodes and tokens",
                     "4.0x nodes, 8.0x tokens", "met")
  assert report._mcts_targets(mcts, curve(0.7))[2][1:] == (
      "best-of-N 70.0%; no MCTS budget reached it", "not met")
  assert report._mcts_targets(mcts, curve(0.0))[2][1:] == (
      "best-of-N 0.0%: nothing to reach", "not measured")
  assert len(report._mcts_targets(mcts, None)) == 2  # no sample-N: no comparison row


def test_rl_target_allows_one_puzzle_in_a_hundred_whatever_the_rounding():
  def rows(base, other):  # 100 test puzzles, gamma 0.98 30% shorter
    return {"rl/1.0": {"accuracy": base / 100, "mean_tokens": 100.0},
            "rl/0.98": {"accuracy": other / 100, "mean_tokens": 70.0}}
  for base in range(1, 101):  # 0.07 - 0.01 < 0.06 in floating point: once "not met"
    assert report.rl_target(rows(base, base - 1))[2] == "met by gamma=0.98", base
    assert report.rl_target(rows(base, base - 2))[2] == "not met", base
  slower = rows(50, 50) | {"rl/0.98": {"accuracy": 0.5, "mean_tokens": 71.0}}
  assert report.rl_target(slower)[2] == "not met"  # 29% shorter


def test_report_lists_first_errors_most_frequent_first():
  kinds = {"wrong result": 0.17, "wrong numbers left": 0.29, "division by zero": 0.0,
           "malformed line": 0.003}
  assert report.first_errors({"first_error_kinds": kinds}) == (
      "29% wrong numbers left, 17% wrong result, <1% malformed line")
  assert report.first_errors({"first_error_kinds": dict.fromkeys(kinds, 0.0)}) == "none"
  assert report.first_errors({"accuracy": 0.3}) == "-"  # a run from before they were counted


def test_report_gaps_by_hand():
  """Meta-CoT minus CoT, and each Meta-STaR round minus the one before, on the same puzzles."""
  meta, cot = [1, 1, 0, 0] * 25, [0, 1, 0, 0] * 25  # 50% against 25%: 25 puzzles differ
  diff, low, high = evaluate.paired_difference(meta, cot)
  assert diff == 0.25 and 0.15 < low < 0.2 and 0.3 < high < 0.35
  results = {"greedy/metacot/test": {"accuracy": 0.5, "correct": meta},
             "greedy/cot/test": {"accuracy": 0.25, "correct": cot},
             "star/1": {"greedy_test": 0.25, "greedy_correct": cot},
             "star/2": {"greedy_test": 0.25},  # a round from before greedy_correct was kept
             "star/3": {"greedy_test": 0.25, "greedy_correct": cot}}
  rows = {target: measured for target, measured, _ in report.targets(results)}
  assert rows["Meta-CoT greedy >= 90% and >= 25 points above CoT (test)"] == (
      f"Meta-CoT 50.0%, CoT 25.0%, +25.0 points (95% interval {100 * low:+.1f} to "
      f"{100 * high:+.1f})")
  assert report.star_changes(results) == [
      f"-25.0 points (95% interval {-100 * high:+.1f} to {-100 * low:+.1f})", "-", "-"]
  results["star/2"]["greedy_correct"] = cot  # unchanged from round 1: no interval to give
  assert report.star_changes(results)[1:] == ["+0.0 points (alike on every puzzle: no "
                                              "interval)"] * 2
  # the hard split pairs each round's `star/<r>/hard` with the one before, as the test split
  results |= {"greedy/metacot/hard": {"accuracy": 0.25, "correct": cot},
              "star/1/hard": {"accuracy": 0.5, "correct": meta},  # round 2 was not evaluated
              "star/3/hard": {"accuracy": 0.5, "correct": meta}}
  assert report.star_changes(results, "hard") == [
      f"+25.0 points (95% interval {100 * low:+.1f} to {100 * high:+.1f})", "-", "-"]
  # the CoT baseline's STaR rounds: Meta-CoT's lead after as many rounds, its last in targets
  results |= {"star_cot/1/test": {"accuracy": 0.5, "correct": meta},
              "star_cot/1/hard": {"accuracy": 0.25, "correct": cot},
              "star_cot/1/generations": {"kept": 7},
              "star_cot/3/test": {"accuracy": 0.5, "correct": meta}}
  rows = {target: measured for target, measured, _ in report.targets(results)}
  assert rows["The same after 3 round(s) of self-training each (Meta-STaR, STaR)"] == (
      f"Meta-CoT 25.0%, CoT 50.0%, -25.0 points (95% interval {-100 * high:+.1f} to "
      f"{-100 * low:+.1f})")
  table = report._cot_rounds_table(results, [1, 2, 3])  # pylint: disable=protected-access
  assert table[-2:] == [
      f"| 1 | 50.0% | 25.0% | 7 | -25.0 points (95% interval {-100 * high:+.1f} to "
      f"{-100 * low:+.1f}) | +25.0 points (95% interval {100 * low:+.1f} to {100 * high:+.1f}) "
      "|", "| 3 | 50.0% | - | - | -25.0 points (95% interval "
      f"{-100 * high:+.1f} to {-100 * low:+.1f}) | - |"]
  # met only at >= 90% and >= 25 points above CoT, after SFT as after the rounds
  after = "The same after 3 round(s) of self-training each (Meta-STaR, STaR)"
  for cot_acc, verdict in ((0.65, "met"), (0.66, "not met")):
    results |= {"star/3": {"greedy_test": 0.9, "greedy_correct": [1] * 90 + [0] * 10},
                "star_cot/3/test": {"accuracy": cot_acc, "correct": [1] * round(100 * cot_acc)
                                    + [0] * round(100 * (1 - cot_acc))}}
    verdicts = {target: v for target, _, v in report.targets(results)}
    assert verdicts[after] == verdict
    assert verdicts["Meta-CoT greedy >= 90% and >= 25 points above CoT (test)"] == "not met"


def test_report_gives_intervals_and_the_paired_gap(tiny_workdir, tiny_results):
  """The job keeps the per-puzzle results the report pairs (the figures: by hand, above)."""
  meta, cot = tiny_results["greedy/metacot/test"], tiny_results["greedy/cot/test"]
  assert len(meta["correct"]) == len(cot["correct"]) == tiny_results["data"]["test"]
  text = (tiny_workdir / "report.md").read_text()
  gap = report._gap(meta, cot)  # pylint: disable=protected-access
  assert gap.startswith(f", {100 * (meta['accuracy'] - cot['accuracy']):+.1f} points (")
  assert f"CoT {cot['accuracy']:.1%}{gap} |" in text
  low, high = evaluate.accuracy_interval(meta["correct"])
  assert f"| metacot | test | {meta['accuracy']:.1%} ({100 * low:.1f}-{100 * high:.1f}) |" in text
  star = tiny_results["star/1"]  # each Meta-STaR round against the one before, paired
  assert np.mean(star["greedy_correct"]) == star["greedy_test"]
  assert len(star["greedy_correct"]) == len(meta["correct"])
  change = report.star_changes(tiny_results)[0]
  assert change.startswith(f"{100 * (star['greedy_test'] - meta['accuracy']):+.1f} points (")
  hard, hard_before = tiny_results["star/1/hard"], tiny_results["greedy/metacot/hard"]
  assert len(hard["correct"]) == len(hard_before["correct"]) == tiny_results["data"]["hard"]
  assert np.mean(hard["correct"]) == hard["accuracy"]
  hard_change = report.star_changes(tiny_results, "hard")[0]
  assert hard_change.startswith(
      f"{100 * (hard['accuracy'] - hard_before['accuracy']):+.1f} points")
  assert (f"| 1 | {star['greedy_test']:.1%} | {change} | {hard['accuracy']:.1%} | "
          f"{hard_change} |") in text
  rl, rl_base = tiny_results["rl/0.99"], tiny_results["rl/1.0"]  # each gamma against gamma 1
  rl_change = report._gap(rl, rl_base).removeprefix(", ")  # pylint: disable=protected-access
  assert rl_change.startswith(f"{100 * (rl['accuracy'] - rl_base['accuracy']):+.1f} points")
  assert f"| gamma = 0.99 | {rl['accuracy']:.1%} | {rl_change} |" in text
  before = {k: {f: x for f, x in v.items() if f != "correct"} if k.startswith("greedy/") else v
            for k, v in tiny_results.items()}  # a run that kept no per-puzzle results
  rows = {target: measured for target, measured, _ in report.targets(before)}
  assert rows["Meta-CoT greedy >= 90% and >= 25 points above CoT (test)"] == (
      f"Meta-CoT {meta['accuracy']:.1%}, CoT {cot['accuracy']:.1%}")


def test_main_job_scores_traced_steps_after_backtracks_apart(tiny_workdir, tiny_results):
  t = tiny_results["traced/metacot"]
  assert t["traces"] >= 10 and 0 < t["steps_after_backtrack"] < t["steps"]
  assert 0 <= t["after_backtrack"] <= 1 and 0 <= t["elsewhere"] <= 1
  assert 0 <= t["after_backtrack_from_path"] <= 1
  assert (f"{t['steps_after_backtrack']} steps right after a backtrack "
          f"({t['after_backtrack_from_path']:.1%} of them below only the prompt and the path") in (
      tiny_workdir / "report.md").read_text()
  assert tiny_results["config"]["model"]["position"] == "rope"


def test_cot_baseline_trains_to_the_meta_cot_budget(tiny_workdir, tiny_results):
  """The CoT-only model continues from the CoT weights for metacot_sft's steps on CoT data,
  so both models take as many SFT steps; it is the CoT model every later phase uses."""
  cfg = tiny_results["config"]
  steps = cfg["sft"]["steps"] + cfg["metacot_sft"]["steps"]
  assert cfg["metacot_sft"]["matched_cot"] and cfg["metacot_sft"]["init_from_cot"]
  assert tiny_results["models"]["cot_steps"] == tiny_results["models"]["metacot_steps"] == steps
  assert f"SFT steps from scratch: CoT {steps:,}, Meta-CoT {steps:,}" in (
      tiny_workdir / "report.md").read_text()
  data = tiny_results["cot_matched_data"]
  assert data["examples"] == tiny_results["cot_data"]["examples"] and data["rows"] > 0
  logged = [json.loads(l) for l in (tiny_workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in logged if r["phase"] == "sft_cot_matched") == (
      cfg["metacot_sft"]["steps"])

  config = ml_collections.ConfigDict(cfg)
  tok = game24_mcts.run_tokenizer(config)
  assert tok.vocab_size == Tokenizer().vocab_size + 3  # TINY lists the steps tried
  plain = configs.get_config("quick").to_dict()
  del plain["data"]["back_lists_tried"]  # a run from before the option: the plain vocabulary
  assert game24_mcts.run_tokenizer(ml_collections.ConfigDict(plain)).vocab == Tokenizer().vocab
  model, _ = game24_mcts.model_configs(config, tok)
  run = RunDir(tiny_workdir)
  params = {}
  for name in ("sft_cot", "sft_cot_matched"):
    checkpoints = run.checkpoints(name)
    state = create_train_state(jax.random.PRNGKey(0), model, OptimizerConfig(1e-3, 1, 10))
    params[name] = checkpoints.restore(state)[1].params
    checkpoints.close()
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                                       params["sft_cot"], params["sft_cot_matched"]))
  assert max(moved) > 0  # the continuation trained
  problems, _, _ = game24_mcts.load_problems(config, run)
  greedy = evaluate.in_context(params["sft_cot_matched"], model, tok, problems["test"],
                               batch_size=cfg["eval"]["batch_size"])
  assert greedy["tokens"] == tiny_results["greedy/cot/test"]["tokens"]
  assert greedy["correct"] == tiny_results["greedy/cot/test"]["correct"]


def test_main_job_packs_its_training_rows(tiny_results):
  """With data.pack (every preset) several examples share a training row."""
  for key in ("cot_data", "metacot_data", "star/1/data"):
    data = tiny_results[key]
    assert data["rows"] < data["examples"], (key, data)
    assert 0.5 < data["fill"] <= 1.0, (key, data)
  assert tiny_results["config"]["data"]["pack"]
  assert tiny_results["metacot_data"]["fill"] > 0.8  # short walks fill the traces' rows


def test_meta_star_round_samples_the_policys_own_generations(tiny_workdir, tiny_results):
  """TINY's rounds take both sources: MCTS trees and the policy's verified generations, and
  its failed generations repaired."""
  stats = tiny_results["star/1/generations"]
  assert stats["generations"] == 40 * 2  # star.generations per searched train puzzle
  assert stats["generations"] >= stats["verified"] >= stats["kept"] >= stats["puzzles_solved"]
  assert stats["kept"] >= stats["kept_with_backtracks"]
  solved = tiny_results["star/1/solved"]
  assert solved == sorted(set(solved)) and len(solved) >= stats["puzzles_solved"]
  assert tiny_results["star/1"]["train_solved_by_search"] == len(solved)
  assert tiny_results["star/1"]["source"] == "both"
  assert stats["generations"] - stats["verified"] <= stats["failed"] <= stats["generations"]
  assert 0 < stats["repaired"] <= stats["failed"] >= stats["failed_with_a_loop"]
  # a round's traces: one per tree solved by search, each kept generation and repair, the
  # symbolic ones
  own = stats["kept"] + stats["repaired"] + tiny_results["metacot_data"]["traces"]
  assert len(solved) + own >= tiny_results["star/1/data"]["traces"] >= own
  assert report.STAR_SOURCES["both"] in (tiny_workdir / "report.md").read_text()


def test_cot_baseline_gets_as_many_star_rounds(tiny_workdir, tiny_results):
  """With star.matched_cot the CoT model samples solutions to the same train puzzles, keeps
  the verified ones and fine-tunes on them for star.sft's steps from its own weights; the
  report sets Meta-CoT's lead after as many rounds beside the targets."""
  cfg = tiny_results["config"]
  assert cfg["star"]["matched_cot"] and cfg["star"]["rounds"] == 1
  stats = tiny_results["star_cot/1/generations"]
  assert stats["generations"] == 40 * 2  # star.generations per train puzzle, as Meta-STaR's
  # verified generations that backtrack are not clean solutions: dropped
  assert stats["generations"] >= stats["verified"] >= (
      stats["kept"] + stats["dropped_with_backtracks"])
  assert stats["kept"] >= stats["puzzles_solved"]
  data = tiny_results["star_cot/1/data"]
  assert data["solutions"] == stats["kept"] and data["rows"] > 0
  # the solver's solutions stay in the mix (star.keep_round0), as the symbolic traces do; the
  # same rows' length as the matched CoT phase's
  assert data["examples"] == tiny_results["cot_matched_data"]["examples"] + stats["kept"]
  logged = [json.loads(l) for l in (tiny_workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(r["step"] for r in logged if r["phase"] == "star_cot_1") == cfg["star"]["sft"][
      "steps"]
  for split in ("test", "hard"):
    g = tiny_results[f"star_cot/1/{split}"]
    assert len(g["correct"]) == tiny_results["data"][split]
    assert np.mean(g["correct"]) == g["accuracy"] and g["mean_tokens"] > 0
  text = (tiny_workdir / "report.md").read_text()
  cot, meta = tiny_results["star_cot/1/test"], tiny_results["star/1"]
  assert (f"| The same after 1 round(s) of self-training each (Meta-STaR, STaR) | Meta-CoT "
          f"{meta['greedy_test']:.1%}, CoT {cot['accuracy']:.1%}") in text
  assert f"| 1 | {cot['accuracy']:.1%} | {tiny_results['star_cot/1/hard']['accuracy']:.1%} | " \
      f"{stats['kept']} | " in text


@pytest.mark.slow
def test_main_job_on_two_hosts(tmp_path, tiny_results):
  """The TINY run as two 4-device processes joined through jax.distributed (about 5 min)."""
  run_hosts([sys.executable, "-m", "experiments.game24_mcts", f"--workdir={tmp_path / 'run'}",
             *TINY], tmp_path / "logs", timeout=1800, cwd=REPO)
  results = json.loads((tmp_path / "run" / "results.json").read_text())
  assert results["devices"] == {"count": 8, "processes": 2, "kind": "cpu"}
  assert set(results) == set(tiny_results)


def test_killed_run_resumes_to_the_same_results(tmp_path, tiny_workdir, tiny_results):
  expected = tiny_results

  # kill -9 once the first SFT checkpoint exists, again inside the first RL run, then
  # run the same command to the end
  workdir = tmp_path / "killed"
  for pattern in ("sft_cot/*", "rl_gamma_1.0/*"):
    _kill_when(workdir, pattern)
  assert list((workdir / "checkpoints").glob("rl_gamma_1.0/*"))
  again = run_job(workdir, *TINY)
  assert again.returncode == 0, again.stderr[-3000:]
  resumed = json.loads((workdir / "results.json").read_text())
  assert _stable(resumed) == _stable(expected)
  assert {"rl/reference", "rl/1.0", "rl/0.99", "hard/mcts/verifier/tree/2"} <= set(resumed)
  assert (workdir / "rl_frontier.png").stat().st_size > 0
  # each step logged once, as in the whole run, though the kills came after some were logged
  logged = lambda path: [(r["phase"], r["step"]) for r in map(
      json.loads, (path / "metrics.jsonl").read_text().splitlines())]
  assert sorted(logged(workdir)) == sorted(logged(tiny_workdir))
  assert len(set(logged(workdir))) == len(logged(workdir))


def _kill_when(workdir, pattern, timeout=600):
  """Starts the TINY job and kills it (SIGKILL) once `checkpoints/<pattern>` exists."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.Popen([sys.executable, "-m", "experiments.game24_mcts",
                           f"--workdir={workdir}", *TINY], cwd=REPO, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while not list((workdir / "checkpoints").glob(pattern)) and time.time() < deadline:
    if proc.poll() is not None:
      break
    time.sleep(0.2)
  proc.send_signal(signal.SIGKILL)
  proc.wait()


def _sweep(args):
  """sweep.main with the fake job, from the repo root (where its module is found)."""
  old = os.getcwd()
  os.chdir(REPO)
  try:
    return sweep.main(["--module", FAKE_JOB] + [str(a) for a in args])
  finally:
    os.chdir(old)


def test_sweep_skips_done_trials_and_records_failures(tmp_path, capsys):
  args = ["--workdir", tmp_path, "--grid", "acc=0.25,0.75", "--grid", "fail=0,1"]
  assert _sweep(args) == 1  # one trial per acc fails
  first = capsys.readouterr().out
  assert _sweep(args) == 1
  second = capsys.readouterr().out
  assert first.count("[run]") == 4
  assert second.count("[skip]") == 2 and second.count("[run]") == 2
  for acc in ("0.25", "0.75"):
    assert (tmp_path / f"acc={acc}_fail=0" / "runs.txt").read_text() == "x"  # ran once
    failed = json.loads((tmp_path / f"acc={acc}_fail=1" / "trial.json").read_text())
    assert failed["status"] == "failed" and "boom" in failed["error"]
  summary = (tmp_path / "summary.md").read_text()
  assert "| acc=0.25_fail=0 | done | 25.0%" in summary
  assert "| acc=0.75_fail=1 | failed | -" in summary
  # a done trial run with another preset is kept, and said to be
  assert _sweep(args + ["--preset", "default"]) == 1
  third = capsys.readouterr().out
  assert third.count("[skip] acc=0.25_fail=0: done, with other --preset (quick); delete") == 1
  with pytest.raises(SystemExit):
    _sweep(args + ["--preset", "defualt"])
  assert "invalid choice: 'defualt'" in capsys.readouterr().err
  # a folder names a field by its last part: another field of that name is not this trial
  assert _sweep(["--workdir", tmp_path, "--grid", "other.acc=0.25", "--grid", "fail=0"]) == 0
  assert ("[skip] acc=0.25_fail=0: done, with other --grid (acc=0.25 fail=0); "
          "delete") in capsys.readouterr().out
  assert _sweep(["--workdir", tmp_path, "--grid", "acc= 0.25", "--grid", "fail=0"]) == 0
  assert "[skip] acc=0.25_fail=0: done\n" in capsys.readouterr().out  # the same values


def test_a_second_sweep_in_a_folder_in_use_stops_at_once(tmp_path):
  """Two sweeps on one folder would start the same trials and record each other's trials
  as failed."""
  held = runs.lock_folder(tmp_path)  # a sweep running there
  with pytest.raises(SystemExit, match=f"another job is running in {tmp_path}"):
    _sweep(["--workdir", tmp_path, "--grid", "acc=0.25"])
  assert not list(tmp_path.glob("acc=*"))  # nothing started
  held.close()
  assert _sweep(["--workdir", tmp_path, "--grid", "acc=0.25"]) == 0


def test_sweep_summarises_each_config_over_its_seeds(tmp_path):
  # Meta-CoT - CoT per seed: 0.10, 0.11, 0.12 (hard: half). Their mean 11.0 points, standard
  # deviation 1.0, so the 95% t interval (2 degrees of freedom, t = 4.3027) is
  # 11.0 -+ 4.3027 * 1.0 / sqrt(3) = 8.5 to 13.5; hard 5.5 -+ 1.24.
  assert _sweep(["--workdir", tmp_path, "--grid", "metacot=0.3,0.5", "--grid", "seed=0,1,2",
                 "--set", "acc=0.2"]) == 0
  summary = (tmp_path / "summary.md").read_text()
  assert ("| metacot=0.3 | 3 | 20.0% (20-20) | 31.0% (30-32) | "
          "+11.0 points (95% interval +8.5 to +13.5) | "
          "+5.5 points (95% interval +4.3 to +6.7) |") in summary
  assert "| metacot=0.5 | 3 | 20.0% (20-20) | 51.0% (50-52) | +31.0 points (95% interval +28.5" in (
      summary)
  rows = sweep.seed_rows([({"seed": "0"}, {"greedy/cot/test": {"accuracy": 0.2},
                                           "greedy/metacot/test": {"accuracy": 0.3}}),
                          ({"seed": "1"}, {"greedy/cot/test": {"accuracy": 0.2}})])
  assert rows == ["| base | 1 | 20.0% (20-20) | 30.0% (30-30) | +10.0 points (one seed) | - |"]
  assert _sweep(["--workdir", tmp_path / "no_seeds", "--grid", "acc=0.1"]) == 0
  assert "Over seeds" not in (tmp_path / "no_seeds" / "summary.md").read_text()


def test_sweep_rejects_malformed_grid(tmp_path):
  with pytest.raises(SystemExit, match="FIELD=V1,V2"):
    sweep.main(["--workdir", str(tmp_path), "--grid", "search.num_candidates"])


def test_sweep_runs_trials_side_by_side_with_shared_overrides(tmp_path, monkeypatch):
  monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
  # each trial waits until all three have started: one at a time, the first would time out
  assert _sweep(["--workdir", tmp_path, "--parallel", 3, "--grid", "acc=0.25,0.5,0.75",
                 "--set", "barrier=3", "--set", "data.dfs_noise_scales=(0.1,0.2)"]) == 0
  for acc in ("0.25", "0.5", "0.75"):
    seen = json.loads((tmp_path / f"acc={acc}" / "seen.json").read_text())
    assert seen["overrides"] == {"barrier": "3", "data.dfs_noise_scales": "(0.1,0.2)", "acc": acc}
    assert seen["preallocate"] == "false"  # side by side on one GPU: allocate as needed
  rows = (tmp_path / "summary.md").read_text().splitlines()[2:]
  assert [r.split(" | ")[0] for r in rows] == ["| acc=0.25", "| acc=0.5", "| acc=0.75"]
  assert "| acc=0.75 | done | 75.0%" in rows[2]


def test_sweep_stops_at_once_when_interrupted(tmp_path, monkeypatch):
  def interrupted(*_):
    raise KeyboardInterrupt  # as if Ctrl-C came while the first trial was being recorded
  monkeypatch.setattr(sweep, "record", interrupted)
  with pytest.raises(KeyboardInterrupt):
    _sweep(["--workdir", tmp_path, "--grid", "acc=0.1,0.2,0.3,0.4", "--set", "sleep=1"])
  ran = sorted(p.parent.name for p in tmp_path.glob("*/runs.txt"))
  assert ran[0] == "acc=0.1" and len(ran) <= 2  # the queued trials never started


def test_sweep_starts_new_trials_from_a_copy_of_a_base_run(tmp_path, capsys):
  base = tmp_path / "base"
  (base / "checkpoints" / "sft_metacot").mkdir(parents=True)
  (base / "checkpoints" / "sft_metacot" / "1500").write_text("weights")
  (base / "results.json").write_text(json.dumps({"greedy/metacot/test": {"accuracy": 0.3}}))
  (base / "trial.json").write_text(json.dumps({"status": "done"}))  # the base was a trial
  args = ["--workdir", tmp_path / "rl", "--base", base, "--grid", "gamma=1.0,0.9"]
  assert _sweep(args) == 0
  for gamma in ("1.0", "0.9"):
    trial = tmp_path / "rl" / f"gamma={gamma}"
    assert (trial / "checkpoints" / "sft_metacot" / "1500").read_text() == "weights"
    results = json.loads((trial / "results.json").read_text())
    assert results["greedy/metacot/test"] == {"accuracy": 0.3} and f"rl/{gamma}" in results
    assert (trial / "runs.txt").read_text() == "x"
  assert not (base / "runs.txt").exists()  # the base itself is left as it was
  summary = (tmp_path / "rl" / "summary.md").read_text()
  assert "| gamma=0.9 | done | 50.0% | 30.0% | 50.0% | - | 0.9: 50% at 80 tokens |" in summary
  assert _sweep(args) == 0  # done trials are skipped, not copied over again
  assert (tmp_path / "rl" / "gamma=0.9" / "runs.txt").read_text() == "x"
  capsys.readouterr()
  assert _sweep(args + ["--set", "rl.updates=9"]) == 0
  assert capsys.readouterr().out.count("done, with other --set ([]); delete") == 2
  with pytest.raises(SystemExit, match="not a run directory"):
    _sweep(["--workdir", tmp_path / "x", "--base", tmp_path / "missing"])
  (base / "checkpoints" / "gone").symlink_to(tmp_path / "nowhere")  # a copy cannot be made
  assert _sweep(["--workdir", tmp_path / "broken", "--base", base, "--grid", "gamma=1.0"]) == 1
  failed = json.loads((tmp_path / "broken" / "gamma=1.0" / "trial.json").read_text())
  assert failed["status"] == "failed" and "gone" in failed["error"]


def test_sweep_grid_values_keep_commas_inside_parentheses(tmp_path):
  assert sweep.parse_grid(["data.dfs_noise_scales=(0.1,0.2,0.4),(0.3,0.6,1.0)", "seed=0,1"]) == [
      ("data.dfs_noise_scales", ["(0.1,0.2,0.4)", "(0.3,0.6,1.0)"]), ("seed", ["0", "1"])]
  assert sweep.trial_name({"data.dfs_noise_scales": "(0.1,0.2,0.4)", "seed": "1"}) == (
      "dfs_noise_scales=0.1-0.2-0.4_seed=1")
  for bad, message in (("rl.gammas=(1.0,0.9", "unbalanced"), ("x=1),(2", "unbalanced"),
                       ("seed=0,,1", "FIELD=V1,V2")):
    with pytest.raises(SystemExit, match=message):
      sweep.parse_grid([bad])
  for args, message in ((["--set", "star.rounds"], "FIELD=VALUE"),
                        (["--parallel", "0"], "at least 1"),
                        (["--grid", "x=(1,2),1-2"], "share a trial folder name"),
                        (["--grid", "seed=0", "--grid", "seed=1"], "more than once"),
                        (["--set", "seed=0", "--grid", "seed=1,2"], "seed: given more than once"),
                        (["--set", "seed=0", "--set", "seed=1"], "seed: given more than once")):
    with pytest.raises(SystemExit, match=message):
      _sweep(["--workdir", tmp_path] + args)


@pytest.mark.slow
def test_quick_preset_end_to_end(tmp_path):
  """The full quick preset (CI runs the TINY form above instead): every phase and artefact."""
  done = run_job(tmp_path, "--preset=quick", timeout=1200)
  assert done.returncode == 0, done.stderr[-3000:]
  results = json.loads((tmp_path / "results.json").read_text())
  for key in ("greedy/cot/test", "greedy/metacot/hard", "prm", "sampling", "star/1",
              "mcts/verifier/tree/2", "mcts/learned/play/4", "bfs/2", "dfs/3", "star/pairs/1/0",
              "rl/reference", "rl/1.0", "rl/0.99"):
    assert key in results, key
  for name in ("report.md", "success_vs_compute.png", "pass_maj_best_of_k.png",
               "metacot_rounds_and_length.png", "rl_frontier.png"):
    assert (tmp_path / name).stat().st_size > 0, name
  assert "## Targets" in (tmp_path / "report.md").read_text()


def test_a_phase_on_kept_data_resumes_on_the_same_arrays(tmp_path):
  """A Meta-STaR round killed part-way trains on to its end on the data it began with: its
  search is not run again (hours at scale, and not bit-for-bit repeatable across devices)."""
  cfg = configs.get_config("quick")
  model = game24_mcts.model_config(Tokenizer(), cfg.model)
  tc = ml_collections.ConfigDict(dict(cfg.star.sft))
  tc.steps, tc.checkpoint_every, tc.batch_size, tc.micro_batches = 4, 2, 2, 1
  rng = np.random.default_rng(0)
  builds = []

  def round_data():  # another draw each call, as a search on another device may give
    builds.append({"tokens": rng.integers(3, model.vocab_size, (6, 16)).astype(np.int32),
                   "loss_mask": np.ones((6, 16), np.float32)})
    return builds[-1]

  class Killed(Exception):
    pass

  def step_killed_after_2(state, batch, **kw):
    if int(state.step) == 2:
      raise Killed  # the job dies after its checkpoint at step 2
    seen.append(np.asarray(batch["tokens"]))
    return game24_mcts.sft_step(state, batch, config=model, **kw)

  run, seen = RunDir(tmp_path), []
  with pytest.raises(Killed):
    game24_mcts.sft(cfg, run, "star_1", model, tc, round_data, None, step=step_killed_after_2,
                    keep_data=True)
  assert len(seen) == 2
  seen.clear()
  state = game24_mcts.sft(cfg, RunDir(tmp_path), "star_1", model, tc, round_data, None,
                          step=lambda s, b, **kw: seen.append(np.asarray(b["tokens"])) or
                          game24_mcts.sft_step(s, b, config=model, **kw), keep_data=True)
  assert int(state.step) == 4 and len(builds) == 1 and len(seen) == 2  # steps 3 and 4
  first_rows = {row.tobytes() for row in builds[0]["tokens"]}
  assert all(row.tobytes() in first_rows for batch in seen for row in batch)
  assert not (tmp_path / "arrays" / "star_1.npz").exists()  # gone once the phase is done
