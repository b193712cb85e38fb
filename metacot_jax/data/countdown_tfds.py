"""TFDS builder for Countdown problems in the Stream-of-Search (SoS) setting.

Four numbers from 1..99 and a target from 10..100, solvable only: each problem
comes with a solution that `countdown.verify_answer` accepts. Targets in
`HELD_OUT_TARGETS` (17, 27, ..., 97: every target that is 7 mod 10, 9 of the 91,
none of them round numbers) never appear in train or test; they form their own
split to measure generalisation to unseen targets:

  train             seen targets
  test              seen targets, no (numbers, target) pair shared with train
  held_out_targets  held-out targets only

Sampling: numbers uniform from 1..99 (sorted), then a target uniform among the
split's targets that those numbers can reach; numbers that reach none are redrawn.
Solvability is proven by the verified solution rather than by
`countdown.is_solvable`, which costs about 9 ms a problem. Everything follows
from the config's seed (numpy `default_rng`), so a config always builds the same
data. The config name spells out the seed and sizes, so different configs never
collide in one `data_dir`.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np
import tensorflow_datasets as tfds

from metacot_jax.data.array_record_builder import ArrayRecordBuilder
from metacot_jax.tasks import countdown

NUM_NUMBERS = 4
MIN_NUMBER, MAX_NUMBER = 1, 99
MIN_TARGET, MAX_TARGET = 10, 100
HELD_OUT_TARGETS = tuple(range(17, MAX_TARGET + 1, 10))
SEEN_TARGETS = tuple(t for t in range(MIN_TARGET, MAX_TARGET + 1) if t not in HELD_OUT_TARGETS)


@dataclasses.dataclass(eq=False)
class CountdownConfig(tfds.core.BuilderConfig):
  """Seed and split sizes; build with `countdown_config(...)` to get a unique name."""
  seed: int = 0
  train_size: int = 2000
  test_size: int = 200
  held_out_size: int = 200


def countdown_config(seed: int = 0, train_size: int = 2000, test_size: int = 200,
                     held_out_size: int = 200) -> CountdownConfig:
  """A config whose name encodes all its settings (e.g. `seed0_2000_200_200`)."""
  for name, value in dict(seed=seed, train_size=train_size, test_size=test_size,
                          held_out_size=held_out_size).items():
    if not isinstance(value, (int, np.integer)) or value < 0:
      raise ValueError(f"{name} must be a non-negative int, got {value!r}")
  return CountdownConfig(
      name=f"seed{seed}_{train_size}_{test_size}_{held_out_size}",
      description=f"seed {seed}; train {train_size}, test {test_size}, "
      f"held_out_targets {held_out_size} problems.",
      seed=int(seed), train_size=int(train_size), test_size=int(test_size),
      held_out_size=int(held_out_size))


def _witnesses(numbers: tuple[int, ...]) -> dict[int, str]:
  """Integer value -> one expression reaching it, using every number once.

  Float arithmetic over subsets (fast); the caller confirms a witness exactly with
  `countdown.verify_answer`. Moves are `countdown.solve`'s: larger operand first,
  no negative results.
  """
  n = len(numbers)
  values: dict[int, dict[float, str]] = {1 << i: {float(x): str(x)}
                                         for i, x in enumerate(numbers)}
  for mask in sorted(range(1, 1 << n), key=lambda m: bin(m).count("1")):
    if mask in values:
      continue
    out: dict[float, str] = {}
    sub = (mask - 1) & mask
    while sub:
      rest = mask ^ sub
      if sub < rest:  # each unordered split once
        for a, ea in values[sub].items():
          for b, eb in values[rest].items():
            (x, ex), (y, ey) = ((a, ea), (b, eb)) if a >= b else ((b, eb), (a, ea))
            for v, op in ((x + y, "+"), (x * y, "*"), (x - y, "-")):
              if v not in out:
                out[v] = f"({ex} {op} {ey})"
            if y and x / y not in out:
              out[x / y] = f"({ex} / {ey})"
            if x and x != y and y / x not in out:
              out[y / x] = f"({ey} / {ex})"
      sub = (sub - 1) & mask
    values[mask] = out
  found: dict[int, str] = {}
  for v, expr in values[(1 << n) - 1].items():
    if abs(v - round(v)) < 1e-6:
      found.setdefault(round(v), expr[1:-1] if n > 1 else expr)
  return found


def sample_problem(rng: np.random.Generator, targets: tuple[int, ...]
                   ) -> tuple[tuple[int, ...], int, str]:
  """One solvable (sorted numbers, target, solution expression), target from `targets`.

  The solution is checked by `countdown.verify_answer`, so the problem is solvable.
  """
  allowed = set(targets)
  while True:
    numbers = tuple(sorted(int(x) for x in rng.integers(
        MIN_NUMBER, MAX_NUMBER + 1, size=NUM_NUMBERS)))
    witnesses = _witnesses(numbers)
    candidates = sorted(set(witnesses) & allowed)
    for i in rng.permutation(len(candidates)):
      target = candidates[i]
      if countdown.verify_answer(numbers, target, witnesses[target]).ok:
        return numbers, target, witnesses[target]


def generate_problems(config: CountdownConfig) -> dict[str, list[tuple[tuple[int, ...], int, str]]]:
  """The three splits' (numbers, target, solution), deterministic for `config`.

  No (numbers, target) pair appears twice, within or across splits.
  """
  seen_rng, held_rng = (np.random.default_rng(s)
                        for s in np.random.SeedSequence(config.seed).spawn(2))
  used: set = set()

  def draw(rng, targets, size):
    problems = []
    while len(problems) < size:
      numbers, target, solution = sample_problem(rng, targets)
      if (numbers, target) not in used:
        used.add((numbers, target))
        problems.append((numbers, target, solution))
    return problems

  train = draw(seen_rng, SEEN_TARGETS, config.train_size)
  test = draw(seen_rng, SEEN_TARGETS, config.test_size)
  held_out = draw(held_rng, HELD_OUT_TARGETS, config.held_out_size)
  return {"train": train, "test": test, "held_out_targets": held_out}


class Countdown(ArrayRecordBuilder):
  """Solvable 4-number Countdown problems with a held-out-targets split."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = [countdown_config()]

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(
        builder=self,
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "numbers": tfds.features.Tensor(shape=(NUM_NUMBERS,), dtype=np.int32),
            "target": np.int32,
            "index": np.int32,  # position in its split (the generation order)
            # One answer expression checked by `countdown.verify_answer`, fully
            # parenthesised, e.g. `94 - (80 - (32 * 1))`; not necessarily the simplest.
            "solution": tfds.features.Text(),
        }),
        disable_shuffling=True,  # keep generation order
        homepage="https://arxiv.org/abs/2404.03683",
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    del dl_manager  # generated, nothing to download
    return {name: self._generate_examples(problems)
            for name, problems in generate_problems(self.builder_config).items()}

  def _generate_examples(self, problems) -> Iterator[tuple[int, dict]]:
    for index, (numbers, target, solution) in enumerate(problems):
      yield index, {"numbers": np.asarray(numbers, np.int32), "target": target,
                    "index": index, "solution": solution}
