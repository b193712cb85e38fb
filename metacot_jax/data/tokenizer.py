"""A small, exact tokenizer for the task formats and search traces.

The vocabulary is: three special tokens, every printable ASCII character and the
newline (so any such text encodes), the integers 0..999 as single tokens (a number
is one token, so the LM reads `13 * 12 = 156` as five symbols), and a few
frequent pieces of the formats (` = `, ` (left: `, `Answer: `, ...). Encoding
is greedy longest match, so `decode(encode(s)) == s` for every encodable `s`.
"""

from __future__ import annotations

import re
import string
from typing import Sequence

import numpy as np

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
MAX_NUMBER_TOKEN = 999
FORMAT_PIECES = (
    "Input: ", " -> ", " = ", " + ", " - ", " * ", " / ", " (left: ", "Answer: ",
)


class Tokenizer:
  """Text <-> int ids; ids 0, 1, 2 are pad, bos, eos."""

  def __init__(self, extra_pieces: Sequence[str] = ()):
    chars = [c for c in string.printable if c == "\n" or c not in string.whitespace]
    chars.insert(chars.index("!"), " ")
    numbers = [str(n) for n in range(10, MAX_NUMBER_TOKEN + 1)]
    pieces = list(dict.fromkeys([*chars, *numbers, *FORMAT_PIECES, *extra_pieces]))
    self.vocab = [PAD, BOS, EOS, *pieces]
    self._ids = {p: i for i, p in enumerate(self.vocab)}
    self._chars = frozenset(chars)
    by_length = sorted(pieces, key=len, reverse=True)
    self._pattern = re.compile("|".join(re.escape(p) for p in by_length))

  pad_id = 0
  bos_id = 1
  eos_id = 2

  @property
  def vocab_size(self) -> int:
    return len(self.vocab)

  @property
  def newline_id(self) -> int:
    """Ends every step and the answer line: the stop token of step sampling."""
    return self._ids["\n"]

  def id_of(self, piece: str) -> int:
    return self._ids[piece]

  def encode(self, text: str, *, bos: bool = False, eos: bool = False) -> list[int]:
    """Greedy longest-match ids; ValueError naming any character not in the vocabulary."""
    bad = set(text) - self._chars
    if bad:
      first = min(text.index(c) for c in bad)
      raise ValueError(
          f"cannot encode {text[first]!r} at position {first} (also: "
          f"{''.join(sorted(bad))!r}); the vocabulary has printable ASCII and newline only")
    ids = [self._ids[p] for p in self._pattern.findall(text)]
    return [self.bos_id] * bos + ids + [self.eos_id] * eos

  def decode(self, ids: Sequence[int], *, stop_at_eos: bool = True) -> str:
    """Concatenates pieces, dropping pad and bos; stops at eos unless told not to."""
    out = []
    for i in np.asarray(ids).tolist():
      if i == self.eos_id and stop_at_eos:
        break
      if i >= len(self.vocab) or i < 0:
        raise ValueError(f"id {i} is outside the vocabulary of {len(self.vocab)}")
      if i > self.eos_id:
        out.append(self.vocab[i])
    return "".join(out)


def pad_batch(rows: Sequence[Sequence[int]], length: int, pad_id: int = 0) -> np.ndarray:
  """Right-pads int rows to [B, length]; ValueError if any row is longer."""
  longest = max((len(r) for r in rows), default=0)
  if longest > length:
    raise ValueError(f"a sequence has {longest} tokens but the length is {length}; "
                     "raise the model's max_len or shorten the inputs")
  out = np.full((len(rows), length), pad_id, np.int32)
  for i, r in enumerate(rows):
    out[i, :len(r)] = r
  return out


def encode_sft_batch(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                     length: int) -> dict[str, np.ndarray]:
  """`<bos> prompt completion <eos>`, padded; `loss_mask` is 1 on completion and eos only.

  Returns tokens [B, L] int32, loss_mask [B, L] float32 (on the *target* position:
  `loss_mask[b, t]` weights predicting `tokens[b, t]` from the tokens before it),
  and prompt_lengths [B] int32 (bos included).
  """
  rows, masks, prompt_lengths = [], [], []
  for p, c in zip(prompts, completions, strict=True):
    p_ids = tokenizer.encode(p, bos=True)
    c_ids = tokenizer.encode(c, eos=True)
    rows.append(p_ids + c_ids)
    masks.append([0] * len(p_ids) + [1] * len(c_ids))
    prompt_lengths.append(len(p_ids))
  return {
      "tokens": pad_batch(rows, length),
      "loss_mask": pad_batch(masks, length).astype(np.float32),
      "prompt_lengths": np.asarray(prompt_lengths, np.int32),
  }


def fixed_size_chunks(items: Sequence, size: int, padded_size: int | None = None):
  """Yields (start, chunk, real): consecutive chunks of `size` items, each padded with
  repeats of its final item to `padded_size` (default `size`; e.g. a multiple of the
  devices), so that a jitted call sees one shape (one compile); `real` items of each
  chunk are genuine."""
  if size < 1:  # else range() fails with a message that names neither the size nor the batch
    raise ValueError(f"batch size must be >= 1, got {size}")
  padded_size = padded_size or size
  if padded_size < size:
    raise ValueError(f"padded_size={padded_size} is smaller than the chunk size {size}")
  for start in range(0, len(items), size):
    chunk = list(items[start:start + size])
    real = len(chunk)
    yield start, chunk + [chunk[-1]] * (padded_size - real), real
