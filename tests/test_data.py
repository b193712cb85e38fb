"""TFDS builders for Game of 24 and Countdown, read without TensorFlow."""

import logging
import os
import sys
from pathlib import Path

import pytest

from metacot_jax.data import countdown_tfds, game24_tfds, loading
from metacot_jax.tasks import countdown, game24

REPO = Path(__file__).resolve().parents[1]
SIZES = {"train": 900, "test": 100, "hard": 362}
CD_SPLITS = ("train", "test", "held_out_targets")


def _game24_dir() -> Path:
  """ToT's data folder: $METACOT_GAME24_DIR, else ../shared/data/game24 beside the repo."""
  return Path(os.environ.get(loading.MANUAL_DIR_ENV) or REPO.parent / "shared/data/game24")


def _numbers(ex) -> tuple[int, ...]:
  return tuple(int(x) for x in ex["numbers"])


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tot(data_dir):
  """ToT-ranked splits; FAILS (never skips) when 24.csv is missing: CI has it."""
  path = _game24_dir() / game24_tfds.CSV_NAME
  if not path.is_file():
    pytest.fail(f"ToT's ranking file not found at {path}. Put Tree of Thoughts' 24.csv "
                f"there (shared/ beside the repo) or set {loading.MANUAL_DIR_ENV}.")
  return {s: list(loading.load_game24(s, data_dir, _game24_dir())) for s in SIZES}


@pytest.fixture(scope="session")
def cd_data(data_dir):
  return {s: list(loading.load_countdown(s, data_dir)) for s in CD_SPLITS}


def _check_game24_splits(splits, ranking):
  assert {s: len(v) for s, v in splits.items()} == SIZES
  ranks = [int(ex["rank"]) for s in SIZES for ex in splits[s]]
  assert ranks == list(range(1, 1363))  # contiguous, in order, across splits
  puzzles = [_numbers(ex) for s in SIZES for ex in splits[s]]
  assert len(set(puzzles)) == 1362  # no puzzle twice, within or across splits
  assert set(puzzles) == set(game24.solvable_puzzles())
  for ex in (ex for s in SIZES for ex in splits[s]):
    assert list(ex["numbers"]) == sorted(ex["numbers"])
    assert ex["num_solutions"] > 0
    assert ex["ranking"] == ranking.encode()


def test_tot_splits(tot):
  _check_game24_splits(tot, "tot")
  first = tot["test"][0]
  assert _numbers(first) == (4, 5, 6, 10) and first["rank"] == 901
  assert tot["test"][-1]["rank"] == 1000 and tot["hard"][0]["rank"] == 1001
  assert first["amt_seconds"] == pytest.approx(10.02)
  assert first["solved_rate"] == pytest.approx(0.903)
  assert all(0.0 <= ex["solved_rate"] <= 1.0 and ex["amt_seconds"] > 0
             for s in SIZES for ex in tot[s])


def test_tot_puzzles_solvable_and_counts_match_solve(tot):
  examples = [ex for s in SIZES for ex in tot[s]]
  assert all(game24.is_solvable(_numbers(ex)) for ex in examples)
  for ex in examples[::97]:  # the fast counter agrees with the reference solver
    assert ex["num_solutions"] == len(game24.solve(_numbers(ex)))


def test_no_tensorflow(tot, cd_data):
  assert "tensorflow" not in sys.modules


def test_computed_fallback(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    splits = {s: list(loading.load_game24(s, tmp_path, manual_dir=None)) for s in SIZES}
  assert "ranking file 24.csv is not in use" in caplog.text
  assert "manual_dir" in caplog.text
  _check_game24_splits(splits, "computed")
  assert all(ex["amt_seconds"] == -1.0 and ex["solved_rate"] == -1.0
             for s in SIZES for ex in splits[s])
  counts = [int(ex["num_solutions"]) for s in SIZES for ex in splits[s]]
  assert counts == sorted(counts, reverse=True)  # fewer solutions = harder
  # Reading the already-built data warns again; a folder without 24.csv also falls back.
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    again = loading.load_game24("test", tmp_path, manual_dir=tmp_path / "empty")
  assert "not in use" in caplog.text and len(again) == 100


def test_tot_and_computed_do_not_collide(tot, data_dir):
  computed = loading.load_game24("test", data_dir, manual_dir=None)
  assert computed[0]["ranking"] == b"computed"
  assert loading.load_game24("test", data_dir, _game24_dir())[0]["ranking"] == b"tot"


def test_ranking_choice(tmp_path, monkeypatch):
  assert loading.game24_ranking(None) == "computed"
  assert loading.game24_ranking(tmp_path) == "computed"
  (tmp_path / "24.csv").write_text("x")
  assert loading.game24_ranking(tmp_path) == "tot"
  monkeypatch.setenv(loading.MANUAL_DIR_ENV, str(tmp_path))
  assert loading.default_manual_dir() == str(tmp_path)
  monkeypatch.delenv(loading.MANUAL_DIR_ENV)
  assert loading.default_manual_dir() is None


def test_tot_config_without_file_names_expected_path(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "other.txt").write_text("not it")
  with pytest.raises(FileNotFoundError, match=r"manual[/\\]24\.csv"):
    loading.load_game24("test", tmp_path / "data", manual, ranking="tot")
  with pytest.raises(FileNotFoundError, match=r"24\.csv"):
    loading.load_game24("test", tmp_path / "data", tmp_path / "missing", ranking="tot")


HEADER = "Rank,Puzzles,AMT (s),Solved rate,1-sigma Mean (s),1-sigma STD (s)\n"


@pytest.mark.parametrize("body, line, what", [
    ("1,1 1 4 6,4.4,99.20%,4.67,1.48\n2,1 1 x 11,4.41,99.60%,4.68,1.45\n", 3, "cannot parse"),
    ("1,1 1 4 6,4.4,99.20%,4.67\n", 2, "5 fields"),
    ("1,1 1 4 6,4.4,99.20%,4.67,1.48\n3,1 1 11 11,4.41,99.60%,4.68,1.45\n", 3, "rank is 3"),
    ("1,1 1 4 6,4.4,99.20%,4.67,1.48\n2,1 1 1 1,4.41,99.60%,4.68,1.45\n", 3, "no solution"),
    ("1,1 1 4 6,4.4,99.20%,4.67,1.48\n2,6 4 1 1,4.41,99.60%,4.68,1.45\n", 3, "repeats line 2"),
    ("1,1 1 4 6,4.4,0.992,4.67,1.48\n", 2, "percentage"),
    ("1,1 1 4 6,4.4,99.20%,4.67,1.48\n", None, "has 1 puzzles, expected 1362"),
])
def test_malformed_csv(tmp_path, body, line, what):
  path = tmp_path / "24.csv"
  path.write_text(HEADER + body)
  where = f"{path}, line {line}" if line else f"{path}:"
  with pytest.raises(ValueError, match=what) as info:
    game24_tfds.read_tot_csv(path)
  assert where in str(info.value)


def test_malformed_csv_through_loader(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  (manual / "24.csv").write_text("Rank,Puzzle\n1,1 1 4 6\n")
  with pytest.raises(ValueError, match=r"24\.csv, line 1: header"):
    loading.load_game24("test", tmp_path / "data", manual)


def test_countdown_splits(cd_data):
  assert {s: len(v) for s, v in cd_data.items()} == {
      "train": 2000, "test": 200, "held_out_targets": 200}
  held = set(countdown_tfds.HELD_OUT_TARGETS)
  pairs = set()
  for split, examples in cd_data.items():
    for ex in examples:
      numbers, target = _numbers(ex), int(ex["target"])
      assert len(numbers) == 4 and all(1 <= n <= 99 for n in numbers)
      assert list(numbers) == sorted(numbers) and 10 <= target <= 100
      assert (target in held) == (split == "held_out_targets")
      assert countdown.verify_answer(numbers, target, ex["solution"].decode()).ok
      pairs.add((numbers, target))
  assert len(pairs) == 2400  # no problem twice, within or across splits
  assert {int(ex["target"]) for ex in cd_data["held_out_targets"]} == held


def test_countdown_solvable_by_reference(cd_data):
  for split in CD_SPLITS:
    for ex in cd_data[split][:25]:
      assert countdown.is_solvable(_numbers(ex), int(ex["target"]))


def test_countdown_deterministic(cd_data):
  config = countdown_tfds.countdown_config()
  again = countdown_tfds.generate_problems(config)
  for split in CD_SPLITS:
    assert [(_numbers(ex), int(ex["target"])) for ex in cd_data[split]] == [
        (p[0], p[1]) for p in again[split]]
  small = countdown_tfds.countdown_config(seed=5, train_size=40, test_size=10, held_out_size=10)
  assert countdown_tfds.generate_problems(small) == countdown_tfds.generate_problems(small)
  other = countdown_tfds.countdown_config(seed=6, train_size=40, test_size=10, held_out_size=10)
  assert countdown_tfds.generate_problems(other) != countdown_tfds.generate_problems(small)


def test_countdown_configs_do_not_collide(tmp_path):
  """Two settings in one data_dir: each reads its own data, the first still after the second."""
  def load(**settings):
    return {s: [(_numbers(ex), int(ex["target"]))
                for ex in loading.load_countdown(s, tmp_path, **settings)] for s in CD_SPLITS}
  first = dict(seed=1, train_size=5, test_size=3, held_out_size=4)
  second = dict(seed=2, train_size=6, test_size=2, held_out_size=3)
  a = load(**first)
  b = load(**second)
  assert [len(a[s]) for s in CD_SPLITS] == [5, 3, 4]
  assert [len(b[s]) for s in CD_SPLITS] == [6, 2, 3]
  expected = countdown_tfds.generate_problems(countdown_tfds.countdown_config(**first))
  assert a == {s: [(p[0], p[1]) for p in expected[s]] for s in CD_SPLITS}
  assert load(**first) == a
  assert countdown_tfds.countdown_config(1, 5, 3, 4).name == "seed1_5_3_4"
  with pytest.raises(ValueError, match="train_size"):
    countdown_tfds.countdown_config(train_size=-1)


def test_count_solutions_matches_solve():
  for puzzle in [(4, 5, 6, 10), (1, 1, 4, 6), (2, 3, 5, 12), (1, 1, 1, 1)]:
    assert game24_tfds.count_solutions(puzzle) == len(game24.solve(puzzle))
