"""Tests of `examples.encode`'s error when it leaves every example out."""

import pytest

from metacot_jax.data import examples
from metacot_jax.data.examples import Segment
from metacot_jax.data.tokenizer import Tokenizer

TOK = Tokenizer()
# a prompt and two labelled steps: 2 value labels
EXAMPLE = [Segment("Input: 4 5 6 10 -> 24\n", 0.0),
           Segment("10 - 4 = 6 (left: 5 6 6)\n", value=1.0),
           Segment("6 * 5 = 30 (left: 6 30)\n", value=1.0)]


def test_encode_keeps_an_example_within_both_limits():
  arrays, dropped = examples.encode(TOK, [EXAMPLE], 96, max_values=2)
  assert dropped == 0 and arrays["tokens"].shape == (1, 96)


@pytest.mark.parametrize("length, max_values, named, not_named", [
    (96, 1, ["2 have more than max_values=1 value labels; raise max_values"], ["max_len"]),
    (10, 2, ["2 are longer than 10 tokens; raise the model's max_len"], ["max_values"]),
    (10, 1, ["longer than 10 tokens", "more than max_values=1"], []),
])
def test_encode_error_names_why_every_example_was_left_out(length, max_values, named,
                                                           not_named):
  """Raising max_len cannot help when the value labels are what left examples out."""
  with pytest.raises(ValueError) as error:
    examples.encode(TOK, [EXAMPLE, EXAMPLE], length, max_values=max_values)
  for text in named:
    assert text in str(error.value)
  for text in not_named:
    assert text not in str(error.value)


def test_encode_error_for_no_examples():
  with pytest.raises(ValueError, match="no examples"):
    examples.encode(TOK, [], 96)
