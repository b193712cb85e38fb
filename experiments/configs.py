"""Presets of the main job as `ml_collections.ConfigDict`s.

`quick` runs in a few minutes on a 2-core CPU (CI), `default` is the laptop run
of the README (at most 30 minutes on 2 cores), `full` is sized for one GPU or
TPU host. Every field can be overridden on the command line, e.g.
`--config.search.num_candidates=8`.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections

PRESETS = ("quick", "default", "full")


def default_manual_dir() -> str:
  """`$METACOT_GAME24_DIR`, else `../shared/data/game24` beside the repo if it exists, else ''."""
  env = os.environ.get("METACOT_GAME24_DIR")
  if env:
    return env
  beside_repo = Path(__file__).resolve().parents[2] / "shared" / "data" / "game24"
  return str(beside_repo) if (beside_repo / "24.csv").is_file() else ""


def _model(max_len, d_model, num_layers, num_heads, d_ff):
  return ml_collections.ConfigDict(dict(max_len=max_len, d_model=d_model, num_layers=num_layers,
                                        num_heads=num_heads, d_ff=d_ff))


def _train(steps, batch_size, learning_rate, warmup_steps, checkpoint_every, length):
  return ml_collections.ConfigDict(dict(
      steps=steps, batch_size=batch_size, learning_rate=learning_rate,
      warmup_steps=warmup_steps, checkpoint_every=checkpoint_every, length=length))


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""  # '' = <workdir>/tfds
  c.data.manual_dir = default_manual_dir()  # folder with ToT's 24.csv; '' = computed ranking
  c.data.train_puzzles = 900  # first N of the train split (ranks 1..900)
  c.data.test_puzzles = 100  # first N of the test split (ranks 901..1000)
  c.data.hard_puzzles = 362  # first N of the hard split (ranks 1001..1362)
  c.data.max_solutions = 8  # CoT: distinct solutions per training puzzle
  c.data.walks_per_problem = 4  # PRM: random legal walks per puzzle, labelled by the solver
  c.data.traces_per_problem = 4  # Meta-CoT: symbolic search traces per puzzle
  c.data.loss_variant = "all"  # Meta-CoT loss: 'all' | 'z_only' | 'mask_off_path'

  # Both models have the same trunk; the Meta-CoT one reads longer texts.
  c.model = _model(128, 128, 4, 4, 512)
  c.metacot_model = _model(192, 128, 4, 4, 512)
  c.sft = _train(1000, 32, 2e-3, 100, 250, 96)
  c.metacot_sft = _train(600, 32, 2e-3, 60, 200, 192)
  c.value_weight = 1.0

  c.search = ml_collections.ConfigDict()
  c.search.num_candidates = 4
  c.search.max_step_tokens = 20
  c.search.temperature = 1.0
  c.search.prior = "mean"
  c.search.simulations = (4, 8)  # MCTS budgets evaluated
  c.search.policy = "gumbel"
  c.search.batch_size = 50

  c.prm = ml_collections.ConfigDict()
  c.prm.mc_samples = 8  # completions per prefix for Monte Carlo value labels

  c.baselines = ml_collections.ConfigDict()
  c.baselines.beam_widths = (1, 4)  # BFS (PRM) and beam (log-prob) widths
  c.baselines.expansions = (4, 12)  # best-first and DFS budgets
  c.baselines.samples = 16  # N of sample-N: pass@k, maj@k, best-of-k for k <= N

  c.star = ml_collections.ConfigDict()
  c.star.rounds = 2
  c.star.simulations = 8  # MCTS budget per training puzzle
  c.star.train_puzzles = 150  # the first N training puzzles are searched each round
  c.star.from_previous = True  # fine-tune the previous round's weights (else the round-0 model)
  c.star.keep_round0 = True  # mix the symbolic traces into every round
  c.star.sft = _train(200, 32, 5e-4, 20, 100, 192)

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 100
  c.eval.max_new_tokens = 80  # whole CoT solutions (sampling baselines)

  if preset == "quick":
    c.data.train_puzzles, c.data.test_puzzles, c.data.hard_puzzles = 150, 50, 50
    c.data.max_solutions, c.data.walks_per_problem, c.data.traces_per_problem = 2, 1, 2
    c.model = _model(96, 64, 2, 4, 256)
    c.metacot_model = _model(192, 64, 2, 4, 256)
    c.sft = _train(60, 16, 3e-3, 10, 30, 96)
    c.metacot_sft = _train(60, 16, 3e-3, 10, 30, 192)
    c.search.simulations = (2, 4)
    c.star.rounds, c.star.simulations = 1, 4
    c.prm.mc_samples = 2
    c.baselines.beam_widths, c.baselines.expansions, c.baselines.samples = (2,), (3,), 4
    c.star.sft = _train(20, 16, 1e-3, 2, 10, 192)
    c.search.batch_size = 50
    c.eval.batch_size = 50
  elif preset == "full":
    c.data.max_solutions, c.data.walks_per_problem, c.data.traces_per_problem = 32, 16, 32
    c.model = _model(256, 512, 8, 8, 2048)
    c.metacot_model = _model(512, 512, 8, 8, 2048)
    c.star.train_puzzles = 900
    c.sft = _train(20_000, 256, 1e-3, 500, 1000, 96)
    c.metacot_sft = _train(20_000, 256, 1e-3, 500, 1000, 512)
    c.search.num_candidates = 8
    c.search.simulations = (4, 8, 16, 32, 64)
    c.baselines.samples = 64
    c.search.batch_size = 100
    c.star.rounds, c.star.simulations = 3, 32
    c.star.sft = _train(4000, 256, 3e-4, 100, 500, 512)
  return c
