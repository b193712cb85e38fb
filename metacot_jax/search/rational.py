"""Exact rational arithmetic on int32 pairs, for JAX: `[..., 2]` = (numerator, denominator).

Fractions are kept reduced with a positive denominator, so equality is elementwise.
Operands and results must stay below `LIMIT` = 2**15 in magnitude, so every product
of two parts fits in int32 (Game of 24 never exceeds 13**4 = 28561); `valid` flags a
division by zero or a value past the limit, never a wrong value.
"""

from __future__ import annotations

import jax.numpy as jnp

LIMIT = 1 << 15


def make(num, den=1):
  return normalize(jnp.stack(jnp.broadcast_arrays(jnp.asarray(num, jnp.int32),
                                                  jnp.asarray(den, jnp.int32)), -1))


def normalize(x):
  num, den = x[..., 0], x[..., 1]
  g = jnp.gcd(jnp.abs(num), jnp.abs(den))
  g = jnp.where(g == 0, 1, g)
  sign = jnp.where(den < 0, -1, 1)
  return jnp.stack([sign * num // g, jnp.where(den == 0, 0, sign * den // g)], -1)


def apply(op, a, b):
  """`a op b` for op codes 0..3 = + - * /; returns (value, valid)."""
  in_range = jnp.all((jnp.abs(a) < LIMIT) & (jnp.abs(b) < LIMIT), axis=-1)
  a, b = jnp.where(in_range[..., None], a, 1), jnp.where(in_range[..., None], b, 1)
  an, ad, bn, bd = a[..., 0], a[..., 1], b[..., 0], b[..., 1]
  num = jnp.select([op == 0, op == 1, op == 2], [an * bd + bn * ad, an * bd - bn * ad, an * bn],
                   an * bd)
  den = jnp.select([op == 0, op == 1, op == 2], [ad * bd, ad * bd, ad * bd], ad * bn)
  value = normalize(jnp.stack([num, den], -1))
  valid = in_range & (value[..., 1] != 0) & (jnp.abs(value[..., 0]) < LIMIT) & (value[..., 1] < LIMIT)
  return value, valid


def equal(a, b):
  return jnp.all(a == b, axis=-1)
