"""TFDS builder for the Game of 24, split the way Tree of Thoughts (ToT) and TS-LLM did.

Two configs, so that data built with and without ToT's ranking file never mix in
one `data_dir`:

  tot       ToT's `24.csv` (1,362 puzzles ranked by human solve time), read from
            the TFDS manual dir. train = ranks 1-900, test = ranks 901-1000
            (ToT's test set), hard = ranks 1001-1362 (TS-LLM's test set).
  computed  No file needed: the same 1,362 solvable puzzles ranked by a computed
            difficulty (fewer distinct solutions = harder), same split sizes.
            `amt_seconds` and `solved_rate` are -1.0.

Examples are stored in rank order (`array_record`, no TensorFlow needed); read them
with `builder.as_data_source(split)` or `metacot_jax.data.load_game24`.
"""

from __future__ import annotations

import csv
import functools
import logging
import os
from fractions import Fraction
from typing import Iterator, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from metacot_jax.data.array_record_builder import ArrayRecordBuilder
from metacot_jax.tasks import countdown, game24

CSV_NAME = "24.csv"
CSV_HEADER = ("Rank", "Puzzles", "AMT (s)", "Solved rate", "1-sigma Mean (s)",
              "1-sigma STD (s)")
NUM_PUZZLES = 1362
SPLITS = {"train": (1, 900), "test": (901, 1000), "hard": (1001, 1362)}  # ranks, inclusive
TOT_SOURCE = "src/tot/data/24/24.csv in github.com/princeton-nlp/tree-of-thought-llm"
COMPUTED_WARNING = (
    "Game of 24: Tree of Thoughts' ranking file %s is not in use (%s); using the "
    "computed ranking (fewer distinct solutions = harder) instead. Split sizes are "
    "the same (900/100/362) but the test split is NOT ToT's test set. To use ToT's "
    "ranking, put %s (" + TOT_SOURCE + ") in a folder and pass it as manual_dir "
    "(or set METACOT_GAME24_DIR).")

_log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def solvable_puzzles() -> tuple[tuple[int, ...], ...]:
  """The 1,362 solvable puzzles, sorted (cached: takes about a second)."""
  return tuple(game24.solvable_puzzles())


@functools.lru_cache(maxsize=None)
def count_solutions(numbers: tuple[int, ...]) -> int:
  """`len(game24.solve(numbers))`, about 5x faster (no step strings are built).

  Runs the same search as `countdown.solve` and counts distinct answer
  expressions; building all 1,362 puzzles' counts takes seconds instead of 40 s.
  """
  found = set()

  def search(items):
    if len(items) == 1:
      if items[0][0] == game24.TARGET:
        found.add(items[0][1])
      return
    for i in range(len(items)):
      for j in range(i + 1, len(items)):
        rest = items[:i] + items[i + 1:j] + items[j + 1:]
        moves = countdown.canonical_moves(items[i], items[j])
        for (x, ex), op, (y, ey) in moves:
          search(rest + ((countdown.apply_op(x, op, y), f"({ex} {op} {ey})"),))

  search(tuple((Fraction(n), str(n)) for n in game24.parse_puzzle(numbers)))
  return len(found)


def read_tot_csv(path: os.PathLike | str) -> list[dict]:
  """Parses and validates ToT's `24.csv`: rows as dicts, in rank order.

  Raises ValueError naming the file and line for anything malformed, so a bad or
  truncated download never silently yields wrong splits.
  """
  path = epath.Path(path)
  lines = path.read_text(encoding="utf-8-sig").splitlines()

  def fail(lineno: int | None, msg: str):
    where = f"{path}, line {lineno}" if lineno else f"{path}"
    raise ValueError(f"{where}: {msg} (expected ToT's {CSV_NAME}: {TOT_SOURCE})")

  if not lines:
    fail(None, "file is empty")
  header = tuple(h.strip() for h in next(csv.reader([lines[0]])))
  if header != CSV_HEADER:
    fail(1, f"header is {','.join(header)!r}, expected {','.join(CSV_HEADER)!r}")
  solvable = set(solvable_puzzles())
  rows, seen = [], {}
  for lineno, line in enumerate(lines[1:], start=2):
    if not line.strip():
      continue
    fields = [f.strip() for f in next(csv.reader([line]))]
    if len(fields) != len(CSV_HEADER):
      fail(lineno, f"has {len(fields)} fields, expected {len(CSV_HEADER)}: {line!r}")
    rank_text, puzzle_text, amt_text, rate_text = fields[:4]
    try:
      rank = int(rank_text)
      numbers = game24.parse_puzzle(puzzle_text)
      amt = float(amt_text)
      if not rate_text.endswith("%"):
        raise ValueError(f"solved rate {rate_text!r} is not a percentage like '99.20%'")
      rate = float(rate_text[:-1]) / 100.0
    except ValueError as e:
      fail(lineno, f"cannot parse {line!r}: {e}")
    if rank != len(rows) + 1:
      fail(lineno, f"rank is {rank}, expected {len(rows) + 1} (ranks must be 1, 2, 3, ...)")
    if not 0.0 <= rate <= 1.0 or not amt >= 0.0:
      fail(lineno, f"solved rate {rate_text} or time {amt_text} is out of range")
    if numbers in seen:
      fail(lineno, f"puzzle {puzzle_text!r} repeats line {seen[numbers]}")
    if numbers not in solvable:
      fail(lineno, f"puzzle {puzzle_text!r} has no solution")
    seen[numbers] = lineno
    rows.append(dict(numbers=numbers, rank=rank, amt_seconds=amt, solved_rate=rate))
  if len(rows) != NUM_PUZZLES:
    fail(None, f"has {len(rows)} puzzles, expected {NUM_PUZZLES}")
  return rows


def computed_ranking() -> list[dict]:
  """All solvable puzzles, easiest first: more distinct solutions = easier.

  Ties are broken by the sorted numbers, so the order is fully deterministic.
  """
  puzzles = sorted(solvable_puzzles(), key=lambda p: (-count_solutions(p), p))
  return [dict(numbers=p, rank=r, amt_seconds=-1.0, solved_rate=-1.0)
          for r, p in enumerate(puzzles, start=1)]


class Game24(ArrayRecordBuilder):
  """The 1,362 solvable Game of 24 puzzles, split by difficulty rank."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(
          name="tot", description=f"Tree of Thoughts' human-time ranking ({CSV_NAME} "
          "from the manual dir)."),
      tfds.core.BuilderConfig(
          name="computed", description="Computed ranking (fewer distinct solutions = "
          "harder); needs no file."),
  ]
  DEFAULT_CONFIG_NAME = "tot"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'tot' needs Tree of Thoughts' {CSV_NAME} ({TOT_SOURCE}). Put it in a "
      "folder and pass that folder as manual_dir, e.g. "
      "`download_config=tfds.download.DownloadConfig(manual_dir=...)`. Config "
      "'computed' needs no file.")

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "numbers": tfds.features.Tensor(shape=(4,), dtype=np.int32),
            "rank": np.int32,
            "amt_seconds": np.float32,
            "solved_rate": np.float32,
            "num_solutions": np.int32,
            "ranking": tfds.features.Text(),
        }),
        disable_shuffling=True,  # keep rank order
        homepage="https://github.com/princeton-nlp/tree-of-thought-llm",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    if self.builder_config.name == "tot":
      rows = read_tot_csv(self._tot_csv_path(dl_manager))
    else:
      _log.warning(COMPUTED_WARNING, CSV_NAME, "config 'computed'", CSV_NAME)
      rows = computed_ranking()
    return {name: self._generate_examples(rows[lo - 1:hi])
            for name, (lo, hi) in SPLITS.items()}

  def _tot_csv_path(self, dl_manager) -> epath.Path:
    """`<manual_dir>/24.csv`, or a FileNotFoundError naming where it was expected."""
    try:
      manual_dir = dl_manager.manual_dir
    except AssertionError:  # TFDS: manual dir missing or empty
      manual_dir = getattr(dl_manager, "_manual_dir", None)
      path = epath.Path(manual_dir) / CSV_NAME if manual_dir else CSV_NAME
      raise FileNotFoundError(
          f"Game24 config 'tot' needs {path}, which does not exist. "
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}") from None
    path = manual_dir / CSV_NAME
    if not path.exists():
      raise FileNotFoundError(
          f"Game24 config 'tot' needs {path}, which does not exist. "
          f"{self.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    return path

  def _generate_examples(self, rows: Sequence[dict]) -> Iterator[tuple[int, dict]]:
    ranking = self.builder_config.name
    for row in rows:
      yield row["rank"], {
          "numbers": np.asarray(row["numbers"], np.int32),
          "rank": row["rank"],
          "amt_seconds": row["amt_seconds"],
          "solved_rate": row["solved_rate"],
          "num_solutions": count_solutions(row["numbers"]),
          "ranking": ranking,
      }
