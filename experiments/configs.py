"""Presets of the main job as `ml_collections.ConfigDict`s.

`quick` runs in a few minutes on a 2-core CPU (CI), `default` is the laptop run
of the README, `full` is sized for one GPU or TPU host. Every field can be
overridden on the command line, e.g. `--config.sft.steps=2000`.
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


def get_config(preset: str = "default") -> ml_collections.ConfigDict:
  if preset not in PRESETS:
    raise ValueError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.data_dir = ""  # '' = <workdir>/tfds
  c.data.manual_dir = default_manual_dir()  # folder with ToT's 24.csv; '' = computed ranking
  c.data.max_solutions = 8  # distinct solutions per training puzzle in the CoT data
  c.data.train_puzzles = 900  # first N of the train split (ranks 1..900)
  c.data.test_puzzles = 100  # first N of the test split (ranks 901..1000)

  c.model = ml_collections.ConfigDict()
  c.model.max_len = 128
  c.model.d_model = 128
  c.model.num_layers = 4
  c.model.num_heads = 4
  c.model.d_ff = 512

  c.sft = ml_collections.ConfigDict()
  c.sft.steps = 1000
  c.sft.batch_size = 64
  c.sft.learning_rate = 2e-3
  c.sft.warmup_steps = 100
  c.sft.checkpoint_every = 200

  c.eval = ml_collections.ConfigDict()
  c.eval.max_new_tokens = 96
  c.eval.batch_size = 100

  if preset == "quick":
    c.data.max_solutions = 2
    c.data.train_puzzles = 200
    c.data.test_puzzles = 100
    c.model.d_model, c.model.num_layers, c.model.num_heads, c.model.d_ff = 64, 2, 4, 256
    c.sft.steps, c.sft.batch_size, c.sft.warmup_steps, c.sft.checkpoint_every = 100, 32, 20, 50
  elif preset == "full":
    c.data.max_solutions = 64
    c.model.d_model, c.model.num_layers, c.model.num_heads, c.model.d_ff = 512, 8, 8, 2048
    c.sft.steps, c.sft.batch_size, c.sft.learning_rate = 20_000, 256, 1e-3
    c.eval.batch_size = 200
  return c
