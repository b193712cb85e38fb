"""Parsing and checking of generated step tokens inside jit: the task's rules in JAX.

A step `a op b = c (left: x1 x2 ...)\n` is read token by token with a `lax.scan`
state machine (numbers may span several tokens, be negative, or be fractions
`p/q`); `check` then applies the rule-based process verifier of
`metacot_jax.tasks.countdown.check_step` to a state of exact rationals. Both are
written for one step and `vmap`-ed by callers.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.search import rational

# Separator codes.
NONE, PLUS, MINUS_OP, TIMES, DIVIDE, EQUALS, LEFT, SPACE, RPAREN, NEWLINE = range(10)
_SEPARATORS = {" + ": PLUS, " - ": MINUS_OP, " * ": TIMES, " / ": DIVIDE, " = ": EQUALS,
               " (left: ": LEFT, " ": SPACE, ")": RPAREN, "\n": NEWLINE}
MAX_DIGITS = 4  # a number has at most 2 * MAX_DIGITS digits (numerator and denominator together),
# so it parses within int32; rational.LIMIT then bounds its value


@dataclasses.dataclass(frozen=True)
class StepFormat:
  """Per-token lookup tables for the parser, built from the tokenizer. Hashable (static)."""
  digit_value: tuple[int, ...]  # value of a digit-string token, -1 for others
  digit_count: tuple[int, ...]
  separator: tuple[int, ...]  # separator code, NONE for others
  minus_id: int
  slash_id: int
  max_numbers: int  # the largest state the checker handles

  @classmethod
  def from_tokenizer(cls, tokenizer: Tokenizer, max_numbers: int = 6) -> "StepFormat":
    value, count, sep = [], [], []
    for piece in tokenizer.vocab:
      is_digits = piece.isascii() and piece.isdigit()
      value.append(int(piece) if is_digits else -1)
      count.append(len(piece) if is_digits else 0)
      sep.append(_SEPARATORS.get(piece, NONE))
    return cls(tuple(value), tuple(count), tuple(sep), tokenizer.id_of("-"),
               tokenizer.id_of("/"), max_numbers)


class ParsedStep(NamedTuple):
  ok: jax.Array  # bool: well formed
  op: jax.Array  # int32 0..3 = + - * /
  a: jax.Array  # [2] rational
  b: jax.Array  # [2]
  c: jax.Array  # [2]
  left: jax.Array  # [N, 2] the state the step claims, padded with 0/1
  num_left: jax.Array  # int32


def parse(fmt: StepFormat, tokens_L, length) -> ParsedStep:
  """Reads one step from `tokens_L[:length]` (the final newline included)."""
  max_items = 3 + fmt.max_numbers
  digit_value = jnp.asarray(fmt.digit_value, jnp.int32)
  digit_count = jnp.asarray(fmt.digit_count, jnp.int32)
  separator = jnp.asarray(fmt.separator, jnp.int32)

  def body(carry, inputs):
    (active, neg, num, in_frac, den, frac_digits, ndigits, numbers, n, seps, s, err,
     ended) = carry
    token, t = inputs
    live = t < length
    v, d, sep = digit_value[token], digit_count[token], separator[token]
    is_digit, is_minus, is_slash = v >= 0, token == fmt.minus_id, token == fmt.slash_id
    is_sep = sep != NONE
    err_here = ended | ~(is_digit | is_minus | is_slash | is_sep)
    # digits extend the numerator, or the denominator after '/'
    scale = jnp.asarray(10, jnp.int32) ** d
    new_num = jnp.where(is_digit & ~in_frac, num * scale + v, num)
    new_den = jnp.where(is_digit & in_frac, den * scale + v, den)
    new_ndigits = ndigits + jnp.where(is_digit, d, 0)
    err_here |= is_digit & (new_ndigits > 2 * MAX_DIGITS)
    err_here |= is_minus & active
    err_here |= is_slash & (~active | in_frac | (ndigits == 0))
    # a separator closes the pending number, if any
    closes = is_sep & active
    err_here |= closes & ((ndigits == 0) | (in_frac & ~frac_digits) | (in_frac & (den == 0)))
    bare_sep_ok = (sep == NEWLINE) & (s > 0) & (seps[jnp.maximum(s - 1, 0)] == RPAREN)
    err_here |= is_sep & ~active & ~bare_sep_ok
    err_here |= closes & (n >= max_items)
    err_here |= is_sep & (s >= max_items + 1)
    value = rational.make(jnp.where(neg, -new_num, new_num), jnp.where(in_frac, new_den, 1))
    numbers = jnp.where(live & closes, numbers.at[jnp.minimum(n, max_items - 1)].set(value),
                        numbers)
    n = n + (live & closes)
    seps = jnp.where(live & is_sep, seps.at[jnp.minimum(s, max_items)].set(sep), seps)
    s = s + (live & is_sep)
    reset = is_sep
    carry = (
        jnp.where(live, (active | is_digit | is_minus) & ~reset, active),
        jnp.where(live, (neg | is_minus) & ~reset, neg),
        jnp.where(live, jnp.where(reset, 0, new_num), num),
        jnp.where(live, (in_frac | is_slash) & ~reset, in_frac),
        jnp.where(live, jnp.where(reset, 0, new_den), den),
        jnp.where(live, (frac_digits | (is_digit & in_frac)) & ~reset, frac_digits),
        jnp.where(live, jnp.where(reset, 0, new_ndigits), ndigits),
        numbers, n, seps, s,
        err | (live & err_here),
        ended | (live & (sep == NEWLINE)),
    )
    return carry, None

  init = (False, False, jnp.int32(0), False, jnp.int32(0), False, jnp.int32(0),
          jnp.zeros((max_items, 2), jnp.int32), jnp.int32(0),
          jnp.zeros((max_items + 1,), jnp.int32), jnp.int32(0), False, False)
  init = jax.tree.map(jnp.asarray, init)
  steps = jnp.arange(tokens_L.shape[0])
  (_, _, _, _, _, _, _, numbers, n, seps, s, err, ended), _ = jax.lax.scan(
      body, init, (tokens_L, steps))

  idx = jnp.arange(max_items + 1)
  expected = jnp.select(
      [idx == 0, idx == 1, idx == 2, idx < n - 1, idx == n - 1, idx == n],
      [seps[0], EQUALS, LEFT, SPACE, RPAREN, NEWLINE], NONE)
  op_ok = (seps[0] >= PLUS) & (seps[0] <= DIVIDE)
  shape_ok = (n >= 4) & (s == n + 1) & jnp.all(jnp.where(idx <= n, seps == expected, True))
  ok = ~err & ended & op_ok & shape_ok
  num_left = jnp.clip(n - 3, 0, fmt.max_numbers)
  slots = jnp.arange(fmt.max_numbers)
  left = jnp.where((slots < num_left)[:, None], numbers[3:3 + fmt.max_numbers], jnp.array([0, 1]))
  return ParsedStep(ok, seps[0] - PLUS, numbers[0], numbers[1], numbers[2], left,
                    num_left.astype(jnp.int32))


def _take_one(state, count, x, used):
  """Marks the first unused slot of `state[:count]` equal to x; returns (found, used)."""
  match = (jnp.arange(state.shape[0]) < count) & ~used & rational.equal(state, x)
  first = jnp.argmax(match)
  found = jnp.any(match)
  return found, used.at[first].set(used[first] | found)


def _multiset_equal(a, count_a, b, count_b):
  """Equal multisets of rationals (first `count` slots of each)."""
  n = a.shape[0]
  in_a, in_b = jnp.arange(n) < count_a, jnp.arange(n) < count_b
  same_ab = rational.equal(a[:, None], b[None, :]) & in_a[:, None] & in_b[None, :]
  same_aa = rational.equal(a[:, None], a[None, :]) & in_a[:, None] & in_a[None, :]
  counts_match = jnp.where(in_a, jnp.sum(same_ab, 1) == jnp.sum(same_aa, 1), True)
  return (count_a == count_b) & jnp.all(counts_match)


def check(step: ParsedStep, state, count):
  """The rule-based process verifier: (legal, next state, next count).

  Legal when the step is well formed, a and b are two available numbers of
  `state[:count]`, c = a op b exactly, and `left` is what remains.
  """
  used = jnp.zeros(state.shape[0], bool)
  found_a, used = _take_one(state, count, step.a, used)
  found_b, used = _take_one(state, count, step.b, used)
  value, valid = rational.apply(step.op, step.a, step.b)
  remaining = jnp.where(jnp.arange(state.shape[0]) < count, ~used, False)
  # the state after the step: remaining numbers, then c
  order = jnp.argsort(~remaining, stable=True)
  after = state[order]
  after = after.at[count - 2].set(value)
  after_count = count - 1
  after = jnp.where((jnp.arange(state.shape[0]) < after_count)[:, None], after,
                    jnp.array([0, 1]))
  legal = (step.ok & found_a & found_b & valid & rational.equal(value, step.c)
           & _multiset_equal(after, after_count, step.left, step.num_left))
  return legal, step.left, step.num_left


def state_from_numbers(numbers, max_numbers: int):
  """Initial state arrays ([N, 2] rationals, count) from a list of ints."""
  state = np.zeros((max_numbers, 2), np.int32)
  state[:, 1] = 1
  if len(numbers) > max_numbers:
    raise ValueError(f"{len(numbers)} numbers exceed the checker's max_numbers={max_numbers}")
  state[:len(numbers), 0] = numbers
  return state, np.int32(len(numbers))
