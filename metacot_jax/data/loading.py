"""One-call loaders: build the TFDS dataset if needed, return a random-access source.

A source is a sequence of numpy dicts (`len(ds)`, `ds[i]`, iteration); strings
come back as bytes. Nothing here imports TensorFlow.

    ds = load_game24("test", data_dir, manual_dir=default_manual_dir())
    ds[0]["numbers"]  # array([ 4,  5,  6, 10], dtype=int32) with ToT's ranking
"""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import tensorflow_datasets as tfds
from etils import epath

from metacot_jax.data import countdown_tfds, game24_tfds

MANUAL_DIR_ENV = "METACOT_GAME24_DIR"

_log = logging.getLogger(__name__)

PathLike = os.PathLike | str


def default_manual_dir() -> str | None:
  """The folder holding ToT's `24.csv`: `$METACOT_GAME24_DIR` if set, else None."""
  return os.environ.get(MANUAL_DIR_ENV) or None


def game24_ranking(manual_dir: PathLike | None) -> str:
  """'tot' when `manual_dir` holds ToT's `24.csv`, else 'computed'."""
  if manual_dir and (epath.Path(manual_dir) / game24_tfds.CSV_NAME).is_file():
    return "tot"
  return "computed"


def game24_builder(data_dir: PathLike | None = None, manual_dir: PathLike | None = None,
                   *, ranking: str | None = None) -> game24_tfds.Game24:
  """The prepared Game24 builder (built into `data_dir` on first use).

  `ranking` None picks 'tot' or 'computed' from `manual_dir` (see `game24_ranking`)
  and warns when it falls back to 'computed'; 'tot' with no `24.csv` in
  `manual_dir` raises FileNotFoundError naming the expected path.
  """
  auto = ranking is None
  if auto:
    ranking = game24_ranking(manual_dir)
  builder = game24_tfds.Game24(data_dir=data_dir, config=ranking)
  if auto and ranking == "computed" and builder.is_prepared():
    # (A fresh build logs the same warning itself.)
    why = (f"no {game24_tfds.CSV_NAME} in manual_dir={os.fspath(manual_dir)!r}"
           if manual_dir else "manual_dir is None")
    _log.warning(game24_tfds.COMPUTED_WARNING, game24_tfds.CSV_NAME, why,
                 game24_tfds.CSV_NAME)
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(
          manual_dir=os.fspath(manual_dir) if manual_dir else None))
  return builder


def load_game24(split: str, data_dir: PathLike | None = None,
                manual_dir: PathLike | None = None, *, ranking: str | None = None
                ) -> Sequence[dict[str, Any]]:
  """Game of 24 split 'train' (ranks 1-900), 'test' (901-1000) or 'hard' (1001-1362).

  Pass `manual_dir=default_manual_dir()` to use ToT's ranking when it is set up;
  `manual_dir=None` always gives the computed ranking (with a warning).
  """
  return game24_builder(data_dir, manual_dir, ranking=ranking).as_data_source(split=split)


def countdown_builder(data_dir: PathLike | None = None, *, seed: int = 0,
                      train_size: int = 2000, test_size: int = 200,
                      held_out_size: int = 200) -> countdown_tfds.Countdown:
  """The prepared Countdown builder for these settings (built on first use)."""
  config = countdown_tfds.countdown_config(seed, train_size, test_size, held_out_size)
  if config.name in countdown_tfds.Countdown.builder_configs:
    config = config.name  # TFDS refuses a new object named like a listed config
  builder = countdown_tfds.Countdown(data_dir=data_dir, config=config)
  builder.download_and_prepare()
  return builder


def load_countdown(split: str, data_dir: PathLike | None = None, *, seed: int = 0,
                   train_size: int = 2000, test_size: int = 200,
                   held_out_size: int = 200) -> Sequence[dict[str, Any]]:
  """Countdown split 'train', 'test' or 'held_out_targets' for these settings."""
  return countdown_builder(data_dir, seed=seed, train_size=train_size, test_size=test_size,
                           held_out_size=held_out_size).as_data_source(split=split)
