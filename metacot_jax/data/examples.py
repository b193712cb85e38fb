"""Training examples as token arrays: policy loss masks and PRM value labels.

An example is a list of `Segment`s after `<bos>`: the prompt (no loss), then lines
of a chain of thought or a Meta-CoT trace, each with a loss weight and,
optionally, a PRM label for the prefix that ends with it. Three kinds are built
here: clean CoT solutions (label 1 after every step: the solution succeeds),
random legal walks (no policy loss; label = whether the state can still reach the
target, by the exact solver: outcome labels), and anything given as segments
(Meta-CoT traces, see `metacot_jax.metacot`).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from metacot_jax.data.tokenizer import Tokenizer, encode_sft_batch
from metacot_jax.tasks import countdown
from metacot_jax.tasks.countdown import Countdown


@dataclasses.dataclass(frozen=True)
class Segment:
  text: str
  loss: float = 1.0  # weight of the policy loss on these tokens
  value: float | None = None  # PRM label of the prefix ending here (None: unlabelled)
  # texts that must not be written where this segment starts (unlikelihood targets, e.g. the
  # steps already tried from the state a step after a backtrack starts from)
  avoid: tuple[str, ...] = ()


def cot_examples(problems: Sequence[Countdown], max_solutions: int, seed: int = 0
                 ) -> list[list[Segment]]:
  """Prompt -> clean solution, up to `max_solutions` distinct solutions per problem (seeded)."""
  rng = np.random.default_rng(seed)
  out = []
  for problem in problems:
    solutions = problem.solve()
    if not solutions:
      raise ValueError(f"{problem.prompt().strip()!r} has no solution; CoT data needs "
                       "solvable problems")
    for i in sorted(rng.permutation(len(solutions))[:max_solutions]):
      out.append(solution_example(problem, solutions[i].steps, solutions[i].answer))
  return out


def solution_example(problem: Countdown, steps: Sequence[str], answer: str) -> list[Segment]:
  """Prompt -> one clean solution: policy loss on every line, and PRM label 1 after each
  step (every state on a path to the answer can still reach the target)."""
  return ([Segment(problem.prompt(), 0.0)] + [Segment(l + "\n", 1.0, 1.0) for l in steps]
          + [Segment(answer + "\n", 1.0)])


def walk_examples(problems: Sequence[Countdown], walks_per_problem: int, seed: int = 0,
                  arithmetic_loss: float = 0.0, value_labels: bool = True
                  ) -> list[list[Segment]]:
  """Random legal step sequences, labelled by exact solvability after every step (PRM data).

  The choice of step is random, so it never carries policy loss. With
  `arithmetic_loss` > 0 each step is split after its `=`: the result and the
  numbers left (`9 (left: 6 9 10)`) get that weight, which teaches the policy to
  compute and to track the state on many more (random) steps than solutions hold.
  `value_labels=False` leaves the PRM out (walks kept for arithmetic only).
  """
  rng = np.random.default_rng(seed)
  out = []
  for problem in problems:
    for _ in range(walks_per_problem):
      state = tuple(sorted(problem.initial_state()))
      segments = [Segment(problem.prompt(), 0.0)]
      while len(state) > 1:
        kids = countdown.successors(state)
        step, state = kids[rng.integers(len(kids))]
        label = float(countdown.is_solvable(state, problem.target)) if value_labels else None
        if arithmetic_loss:
          lhs, rhs = step.split("= ", 1)
          segments += [Segment(lhs + "= ", 0.0), Segment(rhs + "\n", arithmetic_loss, label)]
        else:
          segments.append(Segment(step + "\n", 0.0, label))
      if arithmetic_loss:
        segments.append(Segment("", 0.0))  # no loss on <eos>: a walk never stops by choice
      out.append(segments)
  return out


# per-example slot groups of `encode`: positions into the row, a payload, and weights
VALUE_SLOTS = ("value_positions", "value_labels", "value_weights")
AVOID_SLOTS = ("avoid_positions", "avoid_ids", "avoid_weights")


def avoided_tokens(tokenizer: Tokenizer, seg_ids: Sequence[int], avoid: Sequence[str]
                   ) -> list[tuple[int, int]]:
  """(offset in the segment, token id) where each avoided text first leaves the segment's
  tokens: the token that, after the shared prefix, would start writing it. Texts the
  segment begins with, or that end inside its tokens, are skipped."""
  out = {}
  for text in avoid:
    a_ids = tokenizer.encode(text)
    j = next((j for j, (a, s) in enumerate(zip(a_ids, seg_ids)) if a != s), None)
    if j is not None:
      out[(j, a_ids[j])] = None
  return list(out)


def encode(tokenizer: Tokenizer, examples: Sequence[Sequence[Segment]], length: int,
           max_values: int = 8, max_avoids: int = 0) -> tuple[dict[str, np.ndarray], int]:
  """Token arrays for `train.sft_step`; examples longer than `length`, or with more than
  `max_values` value labels, are left out.

  Returns (arrays, number left out). Arrays: tokens [N, L] int32; loss_mask [N, L]
  (weight of predicting tokens[t]; `<eos>` takes the last segment's weight);
  value_positions / value_labels / value_weights [N, M] (the last token of each
  labelled segment). With `max_avoids` > 0 also avoid_positions / avoid_ids /
  avoid_weights [N, A]: the first `max_avoids` tokens of segments' `avoid` texts
  (`avoided_tokens`), each at the position it would take (the unlikelihood loss's targets).
  """
  rows, masks, positions, labels, avoids, dropped = [], [], [], [], [], 0
  too_long = too_many_values = 0  # why examples were left out, for the error below
  for segments in examples:
    ids, mask, pos, lab, avo = [tokenizer.bos_id], [0.0], [], [], []
    for seg in segments:
      seg_ids = tokenizer.encode(seg.text)
      if max_avoids:
        avo += [(len(ids) + j, t) for j, t in avoided_tokens(tokenizer, seg_ids, seg.avoid)]
      ids += seg_ids
      mask += [seg.loss] * len(seg_ids)
      if seg.value is not None:
        pos.append(len(ids) - 1)
        lab.append(seg.value)
    ids.append(tokenizer.eos_id)
    mask.append(segments[-1].loss)
    too_long += len(ids) > length
    too_many_values += len(pos) > max_values
    if len(ids) > length or len(pos) > max_values:
      dropped += 1
      continue
    rows.append(ids), masks.append(mask), positions.append(pos), labels.append(lab)
    avoids.append(avo[:max_avoids])
  if not rows:
    reasons = []
    if too_long:
      reasons.append(f"{too_long} are longer than {length} tokens; raise the model's max_len")
    if too_many_values:
      reasons.append(f"{too_many_values} have more than max_values={max_values} value labels; "
                     "raise max_values")
    raise ValueError(f"every example is left out: {' and '.join(reasons)}" if reasons
                     else "there are no examples to encode")
  n = len(rows)
  out = {"tokens": np.zeros((n, length), np.int32), "loss_mask": np.zeros((n, length), np.float32),
         "value_positions": np.zeros((n, max_values), np.int32),
         "value_labels": np.zeros((n, max_values), np.float32),
         "value_weights": np.zeros((n, max_values), np.float32)}
  for i in range(n):
    out["tokens"][i, :len(rows[i])] = rows[i]
    out["loss_mask"][i, :len(masks[i])] = masks[i]
    out["value_positions"][i, :len(positions[i])] = positions[i]
    out["value_labels"][i, :len(labels[i])] = labels[i]
    out["value_weights"][i, :len(labels[i])] = 1.0
  if max_avoids:
    out |= {"avoid_positions": np.zeros((n, max_avoids), np.int32),
            "avoid_ids": np.zeros((n, max_avoids), np.int32),
            "avoid_weights": np.zeros((n, max_avoids), np.float32)}
    for i, avo in enumerate(avoids):
      if avo:
        out["avoid_positions"][i, :len(avo)], out["avoid_ids"][i, :len(avo)] = zip(*avo)
        out["avoid_weights"][i, :len(avo)] = 1.0
  return out, dropped


def pack(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Packs `encode`'s examples several to a row of the same length, longest first, each
  into the fullest row it fits (best fit decreasing): short walks fill the room that
  long traces leave, so a training step carries 2-3x the tokens at the same cost.

  Adds positions [R, L] (restarting at 0 in each example) and segments [R, L] (1, 2, ...
  per example, 0 on padding) for `models.forward`, which then keeps attention inside
  each example; value (and avoid) positions index the packed row, and a row has as many
  slots as the fullest one needs (none when nothing is labelled). Losses are unchanged:
  an example's `<bos>` has no loss, so nothing is learnt across a boundary.
  """
  known = {"tokens", "loss_mask", *VALUE_SLOTS}
  if set(arrays) - set(AVOID_SLOTS) != known:
    raise ValueError(f"pack takes encode's arrays ({', '.join(sorted(known))}, optionally "
                     f"the avoid_ ones), got {', '.join(sorted(arrays))}")
  tokens = arrays["tokens"]
  n, length = tokens.shape
  lengths = np.sum(tokens != Tokenizer.pad_id, axis=1)  # encode pads on the right
  rows: list[list[int]] = []  # example indices per row
  by_room: list[list[int]] = [[] for _ in range(length + 1)]  # row ids by free positions
  for i in sorted(range(n), key=lambda i: (-lengths[i], i)):
    room = next((r for r in range(lengths[i], length + 1) if by_room[r]), None)
    if room is None:
      rows.append([])
      row, room = len(rows) - 1, length
    else:
      row = by_room[room].pop()
    rows[row].append(i)
    by_room[room - lengths[i]].append(row)

  out = {"tokens": np.full((len(rows), length), Tokenizer.pad_id, np.int32),
         "loss_mask": np.zeros((len(rows), length), np.float32),
         "positions": np.zeros((len(rows), length), np.int32),
         "segments": np.zeros((len(rows), length), np.int32)}
  starts = []  # per row, each example's first position
  for r, row in enumerate(rows):
    start, row_starts = 0, []
    for seg, i in enumerate(row, 1):
      end = start + lengths[i]
      out["tokens"][r, start:end] = tokens[i, :lengths[i]]
      out["loss_mask"][r, start:end] = arrays["loss_mask"][i, :lengths[i]]
      out["positions"][r, start:end] = np.arange(lengths[i])
      out["segments"][r, start:end] = seg
      row_starts.append(start)
      start = end
    starts.append(row_starts)
  for keys in (VALUE_SLOTS, AVOID_SLOTS):
    if keys[0] in arrays:
      out |= _pack_slots(arrays, keys, rows, starts)
  return out


def _pack_slots(arrays: dict[str, np.ndarray], keys: tuple[str, ...], rows, starts
                ) -> dict[str, np.ndarray]:
  """One slot group packed as `rows` packs the examples: each row gets its examples' used
  slots one after another (as many as the fullest row needs), positions shifted to where
  each example starts."""
  pos_key, _, weight_key = keys
  used = np.sum(arrays[weight_key] > 0, axis=1)
  slots = max(int(sum(used[i] for i in row)) for row in rows)
  out = {k: np.zeros((len(rows), slots), arrays[k].dtype) for k in keys}
  for r, (row, row_starts) in enumerate(zip(rows, starts)):
    slot = 0
    for i, start in zip(row, row_starts):
      m = used[i]
      for k in keys:  # used slots come first in each example
        out[k][r, slot:slot + m] = arrays[k][i, :m] + (start if k == pos_key else 0)
      slot += m
  return out


def fill(arrays: dict[str, np.ndarray]) -> float:
  """The fraction of token positions that hold a token rather than padding."""
  return float(np.mean(arrays["tokens"] != Tokenizer.pad_id))


def cot_pairs(problems: Sequence[Countdown], max_solutions: int, seed: int = 0
              ) -> list[tuple[str, str]]:
  """(prompt, solution text) pairs; see `cot_examples`."""
  return [(ex[0].text, "".join(s.text for s in ex[1:]))
          for ex in cot_examples(problems, max_solutions, seed)]


def sft_arrays(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], length: int
               ) -> dict[str, np.ndarray]:
  """Token and loss-mask arrays for (prompt, completion) pairs (no value labels)."""
  prompts, completions = zip(*pairs)
  return encode_sft_batch(tokenizer, prompts, completions, length)
