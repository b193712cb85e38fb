"""Tests of the policy-value transformer and its KV-cache sampler."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from metacot_jax.models import (ModelConfig, SamplingConfig, forward, init_cache, init_params,
                                prefill, sample, sequence_logprobs)
from metacot_jax.models import transformer
from metacot_jax.models.sampling import check_fits

CFG = ModelConfig(vocab_size=61, max_len=32, d_model=32, num_layers=2, num_heads=4, d_ff=64)
# Right-padded prompts of different lengths (5, 2 and 3 tokens).
PROMPT = np.array([[5, 6, 7, 8, 9], [10, 11, 0, 0, 0], [12, 13, 14, 0, 0]], np.int32)
PROMPT_LENGTHS = np.array([5, 2, 3], np.int32)


@functools.cache
def _params():
  return jax.jit(init_params, static_argnums=0)(CFG, jax.random.PRNGKey(0))


@pytest.fixture(scope="module")
def params():
  return _params()


def _random_tokens(seed, shape):
  return np.asarray(jax.random.randint(jax.random.PRNGKey(seed), shape, 3, CFG.vocab_size),
                    np.int32)


@jax.jit
def _forward_max_len(params, tokens_BxT):
  logits, values, _ = forward(params, CFG, tokens_BxT)
  return logits, values


def _full_forward(params, tokens):
  """Reference full forward; padded on the right to max_len so it compiles once per batch."""
  tokens = np.asarray(tokens, np.int32)
  width = tokens.shape[1]
  padded = np.zeros((tokens.shape[0], CFG.max_len), np.int32)
  padded[:, :width] = tokens
  logits, values = _forward_max_len(params, padded)
  return np.asarray(logits[:, :width]), np.asarray(values[:, :width])


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


class ForwardTest(chex.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = _params()

  @chex.variants(with_jit=True, without_jit=True)
  def test_output_shapes(self):
    fn = self.variant(functools.partial(forward, config=CFG))
    tokens = _random_tokens(1, (3, 11))
    logits, values, cache = fn(self.params, tokens_BxL=tokens)
    chex.assert_shape(logits, (3, 11, CFG.vocab_size))
    chex.assert_shape(values, (3, 11))
    chex.assert_tree_all_finite((logits, values))
    assert cache is None

  @chex.variants(with_jit=True, without_jit=True)
  def test_causal_by_perturbation(self):
    fn = self.variant(lambda p, x: forward(p, CFG, x)[:2])
    tokens = _random_tokens(3, (2, 12))
    t = 6
    changed = tokens.copy()
    changed[:, t] = (changed[:, t] + 7 - 3) % (CFG.vocab_size - 3) + 3
    assert (changed[:, t] != tokens[:, t]).all()
    logits, values = fn(self.params, tokens)
    logits2, values2 = fn(self.params, changed)
    np.testing.assert_allclose(logits2[:, :t], logits[:, :t], atol=1e-6)
    np.testing.assert_allclose(values2[:, :t], values[:, :t], atol=1e-6)
    # Position t and later do see the change.
    assert np.abs(np.asarray(logits2[:, t:] - logits[:, t:])).max(-1).min() > 1e-4
    assert np.abs(np.asarray(values2[:, t:] - values[:, t:])).min() > 0

  @chex.variants(with_jit=True, without_jit=True)
  def test_packed_row_equals_its_examples_alone(self):
    """Examples packed in one row (positions restart, segments number them) get the
    outputs each gets alone: attention never crosses into a neighbour."""
    fn = self.variant(lambda p, x, pos, seg: forward(p, CFG, x, pos, segments_BxL=seg)[:2])
    lengths = (7, 4, 9)
    alone = [_random_tokens(10 + i, (1, n)) for i, n in enumerate(lengths)]
    width = sum(lengths) + 3  # and some padding (segment 0)
    tokens = np.zeros((1, width), np.int32)
    positions = np.zeros((1, width), np.int32)
    segments = np.zeros((1, width), np.int32)
    start = 0
    for i, (n, row) in enumerate(zip(lengths, alone)):
      tokens[0, start:start + n] = row[0]
      positions[0, start:start + n] = np.arange(n)
      segments[0, start:start + n] = i + 1
      start += n
    logits, values = fn(self.params, tokens, positions, segments)
    chex.assert_shape(logits, (1, width, CFG.vocab_size))
    start = 0
    for n, row in zip(lengths, alone):
      want_logits, want_values = _full_forward(self.params, row)
      np.testing.assert_allclose(logits[0, start:start + n], want_logits[0], atol=2e-5)
      np.testing.assert_allclose(values[0, start:start + n], want_values[0], atol=2e-5)
      start += n
    # without segments the second example sees the first: its outputs differ
    unpacked, _ = fn(self.params, tokens, positions, None)
    assert np.abs(np.asarray(unpacked[0, 7:11] - logits[0, 7:11])).max() > 1e-3

  def test_segments_with_a_cache_raise(self):
    cache = init_cache(CFG, 1)
    tokens = _random_tokens(5, (1, 3))
    with pytest.raises(ValueError, match="cannot be combined"):
      forward(self.params, CFG, tokens, np.arange(3)[None], cache, np.ones((1, 3), np.int32))
    with pytest.raises(ValueError, match="need their positions"):
      forward(self.params, CFG, tokens, segments_BxL=np.ones((1, 3), np.int32))

  def test_causal_by_gradient(self):
    """Output t has zero gradient w.r.t. the embeddings of the tokens at positions > t."""
    tokens = 3 + np.arange(20, dtype=np.int32).reshape(2, 10)  # each token id at one place

    def output_t(embedding, t):
      params = {**self.params, "embed": {"embedding": embedding}}
      logits, values, _ = forward(params, CFG, tokens)
      return logits[:, t].sum() + values[:, t].sum()

    grad_fn = jax.jit(jax.grad(output_t))
    for t in (0, 4, 9):
      g = grad_fn(self.params["embed"]["embedding"], t)
      chex.assert_shape(g, (CFG.vocab_size, CFG.d_model))
      norms_BxL = np.abs(np.asarray(g)).sum(-1)[tokens]
      np.testing.assert_array_equal(norms_BxL[:, t + 1:], 0.0)
      assert (norms_BxL[:, :t + 1] > 0).all()

  @parameterized.parameters((4, 3, 5), (2, 3, 0), (4, 32, 0))
  def test_local_heads_see_only_their_window_by_gradient(self, local_heads, window, blind):
    """With every head local (window 3, two layers) output 9 reads positions 5-9 only, the
    earlier ones not at all; with two local heads of four, or a window as long as the row,
    it reads every earlier position. Local heads add no parameters."""
    cfg = dataclasses.replace(CFG, local_heads=local_heads, local_window=window)
    tokens = 3 + np.arange(20, dtype=np.int32).reshape(2, 10)

    def output_9(embedding):
      params = {**self.params, "embed": {"embedding": embedding}}
      logits, values, _ = forward(params, cfg, tokens)
      return logits[:, 9].sum() + values[:, 9].sum()

    norms_BxL = np.abs(np.asarray(jax.grad(output_9)(self.params["embed"]["embedding"]))).sum(
        -1)[tokens]
    chex.assert_shape(norms_BxL, (2, 10))
    np.testing.assert_array_equal(norms_BxL[:, :blind], 0.0)
    assert (norms_BxL[:, blind:] > 0).all()
    if window >= CFG.max_len:  # every key inside the window: the plain model's outputs
      np.testing.assert_allclose(forward(self.params, cfg, tokens)[0],
                                 forward(self.params, CFG, tokens)[0], atol=1e-6)

  def test_bad_local_heads_are_a_clear_error(self):
    with pytest.raises(ValueError, match="local_heads must be 0 to num_heads=4, got 5"):
      dataclasses.replace(CFG, local_heads=5)
    with pytest.raises(ValueError, match="local_window must be positive, got 0"):
      dataclasses.replace(CFG, local_heads=1, local_window=0)

  @parameterized.parameters("rope", "learned")
  def test_rotary_attention_sees_gaps_not_places(self, position):
    """With RoPE, shifting every position by 9 leaves the outputs as they were: the model
    computes the same at any depth of a trace. With learned positions they change."""
    cfg = dataclasses.replace(CFG, position=position)
    params = init_params(cfg, jax.random.PRNGKey(1))
    assert ("pos_embed" in params) == (position == "learned")
    tokens = _random_tokens(7, (2, 12))
    positions = np.broadcast_to(np.arange(12), (2, 12))
    at_0, values_0, _ = forward(params, cfg, tokens, positions)
    at_9, values_9, _ = forward(params, cfg, tokens, positions + 9)
    chex.assert_shape(at_0, (2, 12, CFG.vocab_size))
    gap = np.abs(np.asarray(at_0 - at_9)).max()
    if position == "rope":
      np.testing.assert_allclose(at_9, at_0, atol=2e-5)
      np.testing.assert_allclose(values_9, values_0, atol=2e-5)
      spread, _, _ = forward(params, cfg, tokens, 2 * positions)  # other gaps: other outputs
      assert np.abs(np.asarray(spread - at_0)).max() > 1e-3
    else:
      assert gap > 1e-3, gap

  @chex.variants(with_jit=True, without_jit=True)
  def test_rotated_dot_products_depend_on_the_gap_only(self):
    """rotate(q, m) . rotate(k, n) == rotate(q, m - n) . k, and differs from q . k."""
    q, k = jax.random.normal(jax.random.PRNGKey(4), (2, 1, 1, 2, 8))  # [B=1, L=1, H=2, K=8]
    rotate = self.variant(transformer.rotate)
    dot = lambda a, b: np.asarray((a * b).sum(-1))
    at = lambda x, p: rotate(x, jnp.full((1, 1), p))
    chex.assert_shape(at(q, 3), (1, 1, 2, 8))
    for m, n in ((7, 3), (104, 100), (3, 7), (150, 0)):
      np.testing.assert_allclose(dot(at(q, m), at(k, n)), dot(at(q, m - n), k), rtol=1e-4,
                                 atol=1e-5)
    assert np.abs(dot(at(q, 4), k) - dot(q, k)).max() > 1e-3  # a gap of 4 is seen
    np.testing.assert_allclose(np.linalg.norm(at(q, 9), axis=-1), np.linalg.norm(q, axis=-1),
                               rtol=1e-5)  # a rotation: lengths kept

  def test_bad_position_encoding_is_a_clear_error(self):
    with pytest.raises(ValueError, match="position must be one of"):
      dataclasses.replace(CFG, position="alibi")
    with pytest.raises(ValueError, match="even head size"):
      ModelConfig(vocab_size=61, d_model=12, num_heads=4)


class KVCacheTest(chex.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.params = _params()

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(("rope", 0), ("learned", 0), ("rope", 2))
  def test_kv_cache_matches_full_forward(self, position, local_heads):
    """Prefill + one token at a time, rows at different depths == one full forward (rotary
    keys are cached rotated; learned positions are what runs from before RoPE use; local heads
    mask the cache's slots before their window as the full forward masks those keys). Prefill
    and the cached step run as the variant says; the reference is always the jitted forward."""
    cfg = dataclasses.replace(CFG, position=position, local_heads=local_heads, local_window=4)
    params = self.params
    if position != CFG.position:
      params = jax.jit(init_params, static_argnums=0)(cfg, jax.random.PRNGKey(3))
    total = 12
    full = _random_tokens(6, (3, total))
    prompt = np.zeros_like(PROMPT)
    for b, n in enumerate(PROMPT_LENGTHS):
      prompt[b, :n] = full[b, :n]
    padded = np.zeros((3, cfg.max_len), np.int32)
    padded[:, :total] = full
    ref_logits, ref_values, _ = jax.jit(forward, static_argnums=1)(params, cfg, padded)

    pre = self.variant(lambda p, x, n: prefill(p, cfg, x, n))(params, prompt, PROMPT_LENGTHS)
    rows = np.arange(3)
    chex.assert_shape(pre.next_logits_BxV, (3, CFG.vocab_size))
    chex.assert_shape(pre.value_logits_B, (3,))
    np.testing.assert_allclose(pre.next_logits_BxV, ref_logits[rows, PROMPT_LENGTHS - 1], atol=1e-4)
    np.testing.assert_allclose(pre.value_logits_B, ref_values[rows, PROMPT_LENGTHS - 1], atol=1e-4)

    step = self.variant(lambda p, token, pos, cache: forward(p, cfg, token, pos, cache))
    cache = pre.cache
    for t in range(total - PROMPT_LENGTHS.max()):
      pos = PROMPT_LENGTHS + t
      token = full[rows, pos]
      logits, values, cache = step(params, jnp.asarray(token[:, None]), jnp.asarray(pos[:, None]),
                                   cache)
      np.testing.assert_allclose(logits[:, 0], ref_logits[rows, pos], atol=1e-4)
      np.testing.assert_allclose(values[:, 0], ref_values[rows, pos], atol=1e-4)
    assert len(cache) == CFG.num_layers
    for layer in cache:
      chex.assert_shape([layer.k_BxHxTxK, layer.v_BxHxTxK],
                        (3, CFG.num_heads, CFG.max_len, CFG.head_dim))
      # Each row wrote exactly its slots 0 .. (last position); the rest are untouched zeros.
      written = np.abs(np.asarray(layer.k_BxHxTxK)).sum((1, 3)) > 0
      last = PROMPT_LENGTHS + total - PROMPT_LENGTHS.max() - 1
      for b in range(3):
        assert written[b, :max(last[b], PROMPT.shape[1] - 1) + 1].all()
        assert not written[b, max(last[b], PROMPT.shape[1] - 1) + 1:].any()


N = 10  # new tokens; one shared value keeps the number of compiles down


def _sample(params, key, temperature=1.0, **kw):
  return sample(params, jax.random.PRNGKey(key), PROMPT, PROMPT_LENGTHS, config=CFG,
                sampling=SamplingConfig(N, temperature, **kw))


def _joined(prompt_lengths, prompt, tokens):
  """Each row's prompt followed by its generated tokens, right-padded."""
  n = tokens.shape[1]
  out = np.zeros((len(prompt), prompt.shape[1] + n), np.int32)
  mask = np.zeros_like(out, np.float32)
  for b, p in enumerate(prompt_lengths):
    out[b, :p] = prompt[b, :p]
    out[b, p:p + n] = tokens[b]
    mask[b, p:p + n] = 1.0
  return out, mask


def test_sample_values_match_full_forward(params):
  n = N
  out = _sample(params, 0, 1.0)
  chex.assert_shape([out.tokens_BxN, out.logprobs_BxN, out.values_BxN], (3, n))
  chex.assert_shape([out.lengths_B, out.stopped_B], (3,))
  joined, _ = _joined(PROMPT_LENGTHS, PROMPT, np.asarray(out.tokens_BxN))
  ref_logits, ref_values = _full_forward(params, joined)
  ref_logp = _log_softmax(ref_logits)
  for b, p in enumerate(PROMPT_LENGTHS):
    # The value after generated token t sits at position p + t.
    np.testing.assert_allclose(out.values_BxN[b], ref_values[b, p:p + n], atol=1e-4)
    # The token at p + t was predicted from position p + t - 1.
    expected = ref_logp[b, np.arange(p - 1, p + n - 1), joined[b, p:p + n]]
    np.testing.assert_allclose(out.logprobs_BxN[b], expected, atol=1e-4)
  np.testing.assert_array_equal(out.lengths_B, n)
  assert not np.asarray(out.stopped_B).any()


def test_sample_deterministic_per_key(params):
  a = _sample(params, 1)
  b = _sample(params, 1)
  c = _sample(params, 2)
  chex.assert_trees_all_equal(a, b)
  assert (np.asarray(a.tokens_BxN) != np.asarray(c.tokens_BxN)).any()
  assert np.asarray(a.tokens_BxN).min() >= 0
  assert np.asarray(a.tokens_BxN).max() < CFG.vocab_size


def test_greedy_is_stepwise_argmax_of_full_forward(params):
  out = _sample(params, 3, 0.0)
  seq = PROMPT.copy()
  seq = np.concatenate([seq, np.zeros((3, N), np.int32)], 1)
  rows = np.arange(3)
  for t in range(N):
    logits, _ = _full_forward(params, seq)
    seq[rows, PROMPT_LENGTHS + t] = np.argmax(logits[rows, PROMPT_LENGTHS + t - 1], -1)
  expected = np.stack([seq[b, p:p + N] for b, p in enumerate(PROMPT_LENGTHS)])
  np.testing.assert_array_equal(out.tokens_BxN, expected)
  # Greedy ignores the key.
  chex.assert_trees_all_equal(out, _sample(params, 4, 0.0))


def test_group_size_prefills_once_and_copies_rows(params):
  """Row b*G + g is sample g of prompt b: greedy copies agree with the plain sampler, and
  sampled copies differ from each other but keep their prompt's context (their values)."""
  greedy = _sample(params, 0, 0.0)
  grouped = sample(params, jax.random.PRNGKey(0), PROMPT, PROMPT_LENGTHS, config=CFG,
                   sampling=SamplingConfig(N, 0.0), group_size=3)
  chex.assert_shape(grouped.tokens_BxN, (9, N))
  chex.assert_trees_all_close(grouped, jax.tree.map(lambda x: np.repeat(x, 3, axis=0), greedy),
                              atol=1e-5)  # a larger batch: float noise in logprobs and values
  np.testing.assert_array_equal(grouped.tokens_BxN, np.repeat(greedy.tokens_BxN, 3, axis=0))
  hot = sample(params, jax.random.PRNGKey(1), PROMPT, PROMPT_LENGTHS, config=CFG,
               sampling=SamplingConfig(N, 2.0), group_size=4)
  tokens = np.asarray(hot.tokens_BxN).reshape(3, 4, N)
  assert all(len({tuple(t) for t in tokens[b]}) > 1 for b in range(3))
  joined, _ = _joined(np.repeat(PROMPT_LENGTHS, 4), np.repeat(PROMPT, 4, axis=0),
                      np.asarray(hot.tokens_BxN))
  _, ref_values = _full_forward(params, joined)
  for row, p in enumerate(np.repeat(PROMPT_LENGTHS, 4)):
    np.testing.assert_allclose(hot.values_BxN[row], ref_values[row, p:p + N], atol=1e-4)


def test_top_k_one_is_greedy(params):
  greedy = _sample(params, 0, 0.0)
  top1 = _sample(params, 5, 1.0, top_k=1)
  np.testing.assert_array_equal(top1.tokens_BxN, greedy.tokens_BxN)


def test_top_k_restricts_to_k_best(params):
  k = 3
  out = _sample(params, 6, 1.0, top_k=k)
  joined, _ = _joined(PROMPT_LENGTHS, PROMPT, np.asarray(out.tokens_BxN))
  ref_logits, _ = _full_forward(params, joined)
  for b, p in enumerate(PROMPT_LENGTHS):
    for t in range(N):
      best = np.argsort(-ref_logits[b, p + t - 1])[:k]
      assert out.tokens_BxN[b, t] in best


def test_stop_tokens_end_rows_independently(params):
  n = N
  free = _sample(params, 7, 1.0)
  tokens = np.asarray(free.tokens_BxN)
  stop_ids = (int(tokens[0, 2]), int(tokens[1, 6]))
  is_stop = np.isin(tokens, stop_ids)
  expected_len = np.where(is_stop.any(1), is_stop.argmax(1) + 1, n)
  expected_stopped = is_stop.any(1)
  # The case is informative: rows stop at different steps and one runs to the end.
  assert len(set(expected_len.tolist())) == 3
  assert expected_stopped.tolist().count(False) >= 1

  out = _sample(params, 7, 1.0, stop_ids=stop_ids)
  np.testing.assert_array_equal(out.lengths_B, expected_len)
  np.testing.assert_array_equal(out.stopped_B, expected_stopped)
  for b, length in enumerate(expected_len):
    np.testing.assert_array_equal(out.tokens_BxN[b, :length], tokens[b, :length])
    np.testing.assert_allclose(out.logprobs_BxN[b, :length], free.logprobs_BxN[b, :length],
                               atol=1e-5)
    np.testing.assert_array_equal(out.tokens_BxN[b, length:], 0)
    np.testing.assert_array_equal(out.logprobs_BxN[b, length:], 0.0)
    np.testing.assert_array_equal(out.values_BxN[b, length:], 0.0)
    if expected_stopped[b]:
      assert out.tokens_BxN[b, length - 1] in stop_ids


def test_all_rows_stopping_ends_early(params):
  free = _sample(params, 8, 1.0)
  stop_ids = tuple(int(t) for t in np.asarray(free.tokens_BxN)[:, 0])
  out = _sample(params, 8, 1.0, stop_ids=stop_ids)
  np.testing.assert_array_equal(out.lengths_B, 1)
  assert np.asarray(out.stopped_B).all()
  np.testing.assert_array_equal(out.tokens_BxN[:, 1:], 0)


def test_sequence_logprobs_by_hand(params):
  tokens = _random_tokens(9, (3, 10))
  mask = np.zeros((3, 10), np.float32)
  mask[0, 3:] = 1.0
  mask[1, 1:5] = 1.0
  mask[2, [2, 7, 9]] = 1.0
  got = sequence_logprobs(params, tokens, mask, config=CFG)
  chex.assert_shape(got, (3,))
  logp = _log_softmax(_full_forward(params, tokens)[0])
  expected = [sum(logp[b, t - 1, tokens[b, t]] for t in range(1, 10) if mask[b, t])
              for b in range(3)]
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


def test_sequence_logprobs_match_sampler(params):
  out = _sample(params, 10, 1.0)
  joined, mask = _joined(PROMPT_LENGTHS, PROMPT, np.asarray(out.tokens_BxN))
  got = sequence_logprobs(params, joined, mask, config=CFG)
  np.testing.assert_allclose(got, np.asarray(out.logprobs_BxN).sum(1), atol=1e-4)


def test_check_fits_and_sample_reject_overlong(params):
  width = PROMPT.shape[1]
  ok = SamplingConfig(max_new_tokens=CFG.max_len - width)
  check_fits(CFG, width, ok)
  too_long = SamplingConfig(max_new_tokens=CFG.max_len - width + 1)
  with pytest.raises(ValueError, match="exceeds the model's max_len 32"):
    check_fits(CFG, width, too_long)
  with pytest.raises(ValueError, match="max_len"):
    sample(params, jax.random.PRNGKey(0), PROMPT, PROMPT_LENGTHS, config=CFG,
           sampling=too_long)


def test_check_fits_rejects_a_top_k_past_the_vocabulary():
  check_fits(CFG, 4, SamplingConfig(8, top_k=CFG.vocab_size))
  with pytest.raises(ValueError, match="top_k 62 exceeds the model's vocabulary of 61"):
    check_fits(CFG, 4, SamplingConfig(8, top_k=62))


def test_rows_past_learned_positions_are_rejected_not_clamped():
  """Learned positions have one embedding per place: a longer row would reuse the last one.
  Rotary positions have no such limit (max_len sizes only the cache)."""
  learned = dataclasses.replace(CFG, position="learned")
  params = init_params(learned, jax.random.PRNGKey(0))
  forward(params, learned, jnp.ones((1, CFG.max_len), jnp.int32))
  with pytest.raises(ValueError, match="rows of 33 tokens do not fit a model with learned "
                     "positions for 32"):
    forward(params, learned, jnp.ones((1, CFG.max_len + 1), jnp.int32))
  rope = init_params(CFG, jax.random.PRNGKey(0))
  assert forward(rope, CFG, jnp.ones((1, CFG.max_len + 1), jnp.int32))[0].shape[1] == 33


def test_model_config_validation():
  with pytest.raises(ValueError, match="divisible"):
    ModelConfig(vocab_size=61, d_model=30, num_heads=4)
  with pytest.raises(ValueError, match="num_layers"):
    ModelConfig(vocab_size=61, d_model=32, num_layers=0, num_heads=4)
  assert ModelConfig(vocab_size=61, d_model=32, num_heads=4).head_dim == 8


def test_model_config_rejects_unknown_dtype():
  with pytest.raises(ValueError, match="dtype must be 'float32' or 'bfloat16', got 'float16'"):
    ModelConfig(vocab_size=61, d_model=32, num_heads=4, dtype="float16")


def test_bfloat16_compute_follows_float32_and_its_own_cache(params):
  """bfloat16 compute on the same float32 params: float32 logits near the float32 model's,
  and prefill + cached decoding equal to its own full forward."""
  cfg16 = dataclasses.replace(CFG, dtype="bfloat16")
  tokens = _random_tokens(7, (3, 12))
  logits32, values32, _ = forward(params, CFG, tokens)
  logits16, values16, _ = jax.jit(forward, static_argnums=1)(params, cfg16, tokens)
  chex.assert_type([logits16, values16], jnp.float32)
  scale = float(jnp.abs(logits32).max())
  assert 0 < float(jnp.abs(logits16 - logits32).max()) < 0.05 * scale  # computed in bfloat16
  assert float(jnp.abs(values16 - values32).max()) < 0.05 * max(1.0, float(jnp.abs(values32).max()))

  n = 4  # prefill the first n tokens, then decode the rest one at a time
  pre = jax.jit(prefill, static_argnums=1)(params, cfg16, tokens[:, :n],
                                           np.full(3, n, np.int32))
  assert pre.cache[0].k_BxHxTxK.dtype == jnp.bfloat16
  np.testing.assert_allclose(pre.next_logits_BxV, logits16[:, n - 1], atol=0.05 * scale)
  step = jax.jit(functools.partial(forward, config=cfg16))
  cache = pre.cache
  for t in range(n, tokens.shape[1]):
    logits, _, cache = step(params, tokens_BxL=jnp.asarray(tokens[:, t:t + 1]),
                            positions_BxL=jnp.full((3, 1), t, jnp.int32), cache=cache)
    np.testing.assert_allclose(logits[:, 0], logits16[:, t], atol=0.05 * scale)


def test_bfloat16_greedy_sampling_picks_near_argmax_tokens(params):
  """The sampler's while_loop in bfloat16: every greedy token is (up to bfloat16 rounding)
  the argmax of the bfloat16 full forward over the sequence so far."""
  cfg16 = dataclasses.replace(CFG, dtype="bfloat16")
  out = sample(params, jax.random.PRNGKey(0), PROMPT, PROMPT_LENGTHS, config=cfg16,
               sampling=SamplingConfig(N, 0.0))
  chex.assert_type([out.logprobs_BxN, out.values_BxN], jnp.float32)
  seq, _ = _joined(PROMPT_LENGTHS, PROMPT, np.asarray(out.tokens_BxN))
  logits, _, _ = jax.jit(forward, static_argnums=1)(params, cfg16, seq)
  scale = float(jnp.abs(logits).max())
  for b, p in enumerate(PROMPT_LENGTHS):
    step_logits = np.asarray(logits[b, p - 1:p - 1 + N])
    chosen = step_logits[np.arange(N), np.asarray(out.tokens_BxN[b])]
    assert (step_logits.max(-1) - chosen < 0.05 * scale).all()


def test_sampling_config_validation():
  with pytest.raises(ValueError, match="max_new_tokens"):
    SamplingConfig(max_new_tokens=0)
  with pytest.raises(ValueError, match="temperature"):
    SamplingConfig(max_new_tokens=4, temperature=-1.0)
  with pytest.raises(ValueError, match="top_k"):
    SamplingConfig(max_new_tokens=4, top_k=-1)
