"""Tests of the exact tokenizer and the SFT batch encoder."""

import re
import string

import chex
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from metacot_jax.data.tokenizer import Tokenizer, encode_sft_batch, fixed_size_chunks, pad_batch
from metacot_jax.tasks import game24

TOK = Tokenizer()
PRINTABLE = "".join(chr(c) for c in range(0x20, 0x7F)) + "\n"

TASK_TEXTS = [
    "Input: 4 5 6 10 -> 24\n",
    "Input: 1 1 4 6 -> 24\n",
    "8 / 3 = 8/3 (left: 8/3 3 8)\n",
    "3 - 8/3 = 1/3 (left: 1/3 8)\n",
    "8 / 1/3 = 24 (left: 24)\n",
    "2 - 7 = -5 (left: -5 3 13)\n",
    "-5 * -1/2 = 5/2 (left: 5/2)\n",
    "Answer: 8 / (3 - (8 / 3)) = 24\n",
    "Answer: ((5 * 4) - 6) + 10 = 24\n",
    "999 + 1000 = 1999 (left: 1999)\n",
]


@pytest.mark.parametrize("text", TASK_TEXTS)
def test_round_trip_task_formats(text):
  ids = TOK.encode(text)
  assert TOK.decode(ids) == text
  assert all(3 <= i < TOK.vocab_size for i in ids)


def test_round_trip_real_solutions():
  problem = game24.make("3 3 8 8")
  for solution in problem.solve()[:5]:
    text = problem.prompt() + solution.text
    assert TOK.decode(TOK.encode(text, bos=True, eos=True)) == text


def test_format_pieces_are_single_tokens():
  ids = TOK.encode("13 * 12 = 156")
  assert ids == [TOK.id_of("13"), TOK.id_of(" * "), TOK.id_of("12"), TOK.id_of(" = "),
                 TOK.id_of("156")]
  assert TOK.encode("Answer: ")[0] == TOK.id_of("Answer: ")
  assert len(TOK.encode("Answer: ")) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=PRINTABLE, max_size=80))
def test_round_trip_printable_ascii(text):
  ids = TOK.encode(text, bos=True, eos=True)
  assert ids[0] == TOK.bos_id and ids[-1] == TOK.eos_id
  assert TOK.decode(ids) == text
  assert TOK.decode(ids[1:-1]) == text


@pytest.mark.parametrize("bad", ["é", "\t", "\r", "€"])
def test_unencodable_character_is_named(bad):
  text = f"Input: 4 5{bad}6 -> 24"
  with pytest.raises(ValueError, match=re.escape(repr(bad))) as info:
    TOK.encode(text)
  assert f"position {text.index(bad)}" in str(info.value)


def test_error_names_first_bad_character():
  with pytest.raises(ValueError, match=r"cannot encode 'é' at position 1"):
    TOK.encode("aé\tb")


@pytest.mark.parametrize("n", [0, 7, 10, 24, 99, 100, 500, 999])
def test_numbers_are_single_tokens(n):
  ids = TOK.encode(str(n))
  assert len(ids) == 1
  assert TOK.vocab[ids[0]] == str(n)


def test_all_numbers_below_1000_are_single_distinct_tokens():
  ids = [TOK.encode(str(n)) for n in range(1000)]
  assert all(len(i) == 1 for i in ids)
  assert len({i[0] for i in ids}) == 1000
  assert len(TOK.encode("1000")) == 2


def test_decode_stops_at_eos_and_drops_specials():
  ids = TOK.encode("ab", bos=True, eos=True) + TOK.encode("cd")
  assert TOK.decode(ids) == "ab"
  assert TOK.decode(ids, stop_at_eos=False) == "abcd"
  assert TOK.decode([TOK.pad_id, *TOK.encode("x"), TOK.pad_id]) == "x"


def test_decode_rejects_ids_outside_vocab():
  with pytest.raises(ValueError, match="outside the vocabulary"):
    TOK.decode([3, TOK.vocab_size])


def test_newline_id_decodes_to_newline():
  assert TOK.decode([TOK.newline_id]) == "\n"


def test_pad_batch_pads_right():
  out = pad_batch([[5, 6, 7], [8]], 5)
  np.testing.assert_array_equal(out, [[5, 6, 7, 0, 0], [8, 0, 0, 0, 0]])
  assert out.dtype == np.int32


def test_pad_batch_too_long_raises():
  with pytest.raises(ValueError, match="has 4 tokens but the length is 3"):
    pad_batch([[1, 2], [1, 2, 3, 4]], 3)


def test_fixed_size_chunks_pad_the_last_chunk():
  assert list(fixed_size_chunks("abcde", 2)) == [
      (0, ["a", "b"], 2), (2, ["c", "d"], 2), (4, ["e", "e"], 1)]
  assert list(fixed_size_chunks("abc", 2, 4)) == [(0, list("abbb"), 2), (2, list("cccc"), 1)]


@pytest.mark.parametrize("size", [0, -1])
def test_fixed_size_chunks_rejects_a_size_below_1(size):
  """A clear error up front, not range()'s from inside the generator (or no chunks)."""
  with pytest.raises(ValueError, match=f"batch size must be >= 1, got {size}"):
    next(fixed_size_chunks([1, 2, 3], size))


def test_encode_sft_batch_mask():
  prompts = ["Input: 4 5 6 10 -> 24\n", "Input: 1 1 4 6 -> 24\n"]
  completions = ["10 - 4 = 6 (left: 5 6 6)\n", "Answer: 6 / (1 - (1 / 4)) = 8\n"]
  batch = encode_sft_batch(TOK, prompts, completions, 40)
  tokens, mask, plen = batch["tokens"], batch["loss_mask"], batch["prompt_lengths"]
  chex.assert_shape([tokens, mask], (2, 40))
  chex.assert_shape(plen, (2,))
  assert mask.dtype == np.float32 and tokens.dtype == np.int32
  for b, (p, c) in enumerate(zip(prompts, completions)):
    p_ids, c_ids = TOK.encode(p, bos=True), TOK.encode(c, eos=True)
    n = len(p_ids) + len(c_ids)
    assert plen[b] == len(p_ids)
    assert tokens[b, 0] == TOK.bos_id
    assert tokens[b, n - 1] == TOK.eos_id
    np.testing.assert_array_equal(tokens[b, :n], p_ids + c_ids)
    np.testing.assert_array_equal(mask[b, :len(p_ids)], 0.0)
    np.testing.assert_array_equal(mask[b, len(p_ids):n], 1.0)
    np.testing.assert_array_equal(mask[b, n:], 0.0)
    np.testing.assert_array_equal(tokens[b, n:], TOK.pad_id)
    assert TOK.decode(tokens[b, len(p_ids):]) == c
  # The mask covers exactly the completion and eos.
  np.testing.assert_array_equal(mask.sum(1), [len(TOK.encode(c, eos=True)) for c in completions])


def test_encode_sft_batch_too_long_raises():
  with pytest.raises(ValueError, match="max_len"):
    encode_sft_batch(TOK, ["Input: 1 2 3 4 -> 24\n"], ["Answer: 1 * 2 * 3 * 4 = 24\n"], 8)


def test_vocabulary_has_printable_ascii_and_specials():
  assert TOK.vocab[:3] == ["<pad>", "<bos>", "<eos>"]
  for c in PRINTABLE:
    assert TOK.encode(c) == [TOK.id_of(c)]
  assert all(c not in TOK.vocab for c in string.whitespace if c not in " \n")
