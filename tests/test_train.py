"""Tests of the losses, the SFT step, the resumable loop and checkpoints."""

import dataclasses
import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metacot_jax.data import examples
from metacot_jax.data.examples import cot_pairs, sft_arrays
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig, init_params
from metacot_jax.search.greedy import greedy_accuracy
from metacot_jax.tasks import game24
from metacot_jax.metacot import round0
from metacot_jax.train import (Checkpoints, OptimizerConfig, batch_indices, create_train_state,
                               make_optimizer, masked_token_loss, sft_step, train, value_loss)
from metacot_jax.train.losses import unlikelihood_loss
from metacot_jax.train.steps import micro_batch_grads, sft_loss_fn, sft_totals, value_loss_fn


_init_params = jax.jit(init_params, static_argnums=0)


def _state(model, opt, seed):
  """A fresh train state; params initialized under jit (eager init compiles op by op)."""
  return create_train_state(None, model, opt, params=_init_params(model, jax.random.PRNGKey(seed)))


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


class LossTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.logits = rng.normal(size=(2, 6, 9)).astype(np.float32)
    self.tokens = rng.integers(0, 9, size=(2, 6)).astype(np.int32)
    self.mask = np.array([[1, 0, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1]], np.float32)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_token_loss_by_hand(self):
    loss, count = self.variant(masked_token_loss)(self.logits, self.tokens, self.mask)
    chex.assert_shape([loss, count], ())
    logp = _log_softmax(self.logits)
    terms = [-logp[b, t - 1, self.tokens[b, t]]
             for b in range(2) for t in range(1, 6) if self.mask[b, t]]
    # mask[:, 0] is ignored: nothing predicts the first token.
    assert count == len(terms) == 5
    np.testing.assert_allclose(loss, np.mean(terms), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_token_loss_ignores_masked_positions(self):
    fn = self.variant(masked_token_loss)
    loss, _ = fn(self.logits, self.tokens, self.mask)
    # Logits at t predict token t + 1: perturb every logit whose target is masked out,
    # plus the last position (which predicts nothing), and every masked-out target token.
    predicts_masked = np.concatenate([self.mask[:, 1:] == 0, np.ones((2, 1), bool)], 1)
    noisy = self.logits + 50.0 * predicts_masked[..., None] * np.random.default_rng(1).normal(
        size=self.logits.shape).astype(np.float32)
    other_tokens = np.where(self.mask > 0, self.tokens, (self.tokens + 3) % 9)
    loss2, _ = fn(noisy, other_tokens.astype(np.int32), self.mask)
    np.testing.assert_allclose(loss2, loss, rtol=1e-6)
    # ... while an unmasked target does move it.
    moved = self.logits.copy()
    moved[1, 3, self.tokens[1, 4]] += 5.0
    loss3, _ = fn(moved, self.tokens, self.mask)
    assert loss3 < loss - 1e-3

  @chex.variants(with_jit=True, without_jit=True)
  def test_masked_token_loss_empty_mask_is_zero(self):
    loss, count = self.variant(masked_token_loss)(self.logits, self.tokens,
                                                  np.zeros_like(self.mask))
    assert count == 0
    assert loss == 0.0

  @chex.variants(with_jit=True, without_jit=True)
  def test_value_loss_by_hand(self):
    value_logits = np.array([[0.5, -1.0, 2.0, 0.0], [-3.0, 1.5, 0.25, -0.5]], np.float32)
    positions = np.array([[2, 1, 0], [3, 0, 1]], np.int32)
    labels = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], np.float32)
    weights = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], np.float32)
    loss, acc = self.variant(value_loss)(value_logits, positions, labels, weights)
    chex.assert_shape([loss, acc], ())
    # Used slots: logit 2.0 -> 1, -1.0 -> 1, -0.5 -> 0, -3.0 -> 1, 1.5 -> 1.
    x = np.array([2.0, -1.0, -0.5, -3.0, 1.5])
    y = np.array([1.0, 1.0, 0.0, 1.0, 1.0])
    bce = -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))
    np.testing.assert_allclose(loss, bce.mean(), rtol=1e-5)
    np.testing.assert_allclose(acc, 3 / 5, rtol=1e-6)  # right: 2.0, -0.5, 1.5


  @chex.variants(with_jit=True, without_jit=True)
  def test_unlikelihood_loss_by_hand(self):
    positions = np.array([[2, 5, 0], [1, 4, 4]], np.int32)
    ids = np.array([[3, 0, 7], [8, 2, 5]], np.int32)
    weights = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    used = [(b, k) for b in range(2) for k in range(3) if weights[b, k]]
    # token ids[k] at positions[k] is predicted by the logits one position before
    logp = _log_softmax(self.logits)
    p = np.array([np.exp(logp[b, positions[b, k] - 1, ids[b, k]]) for b, k in used])
    z = lambda b, k, token: self.logits[b, positions[b, k] - 1, token]
    margins = np.array([z(b, k, self.tokens[b, positions[b, k]]) - z(b, k, ids[b, k])
                        for b, k in used])
    want = {"token": -np.log1p(-p), "pairwise": np.log1p(np.exp(-margins))}
    for form in ("token", "pairwise"):
      fn = self.variant(functools.partial(unlikelihood_loss, form=form))
      loss, prob = fn(self.logits, self.tokens, positions, ids, weights)
      chex.assert_shape([loss, prob], ())
      np.testing.assert_allclose(loss, np.mean(want[form]), rtol=1e-5)
      np.testing.assert_allclose(prob, np.mean(p), rtol=1e-5)
      # its gradient lowers the avoided tokens' logits and touches no other position
      grads = jax.grad(lambda x: fn(x, self.tokens, positions, ids, weights)[0])(self.logits)
      assert grads[0, 1, 3] > 0 and grads[1, 3, 5] > 0
      assert not np.any(grads[:, [2, 5]]) and not np.any(grads[1, 1:3])
      # 'pairwise' moves only the written and the avoided logits
      moved = np.count_nonzero(grads[0, 1])
      assert moved == (2 if form == "pairwise" else 9), (form, moved)
      # an empty set of targets costs nothing
      assert fn(self.logits, self.tokens, positions, ids, np.zeros_like(weights))[0] == 0.0
    with pytest.raises(ValueError, match="unknown unlikelihood form 'sequence'"):
      unlikelihood_loss(self.logits, self.tokens, positions, ids, weights, form="sequence")

  @chex.variants(with_jit=True, without_jit=True)
  def test_unlikelihood_pushes_hardest_on_a_certain_avoided_token(self):
    # The case the loss is for: a model sure of a step it already tried. A clamp on log p
    # once made both the loss and its gradient flat beyond p = 1 - 1e-6.
    tokens, positions = np.zeros((1, 2), np.int32), np.ones((1, 1), np.int32)
    ids, weights = np.full((1, 1), 3, np.int32), np.ones((1, 1), np.float32)
    fn = self.variant(lambda x: unlikelihood_loss(x, tokens, positions, ids, weights)[0])
    for margin in (16.0, 20.0, 40.0):
      logits = np.zeros((1, 2, 8), np.float32)
      logits[0, 0, 3] = margin
      loss, grads = fn(logits), jax.grad(fn)(logits)
      # -log(1 - p) with p = e^m / (e^m + 7): log(e^m + 7) - log 7
      np.testing.assert_allclose(loss, np.logaddexp(margin, np.log(7)) - np.log(7), rtol=1e-5)
      np.testing.assert_allclose(grads[0, 0, 3], 1.0, rtol=1e-5)  # d/dz = p / (1 - p) * (1 - p)


# ---------------------------------------------------------------------------------------------
# SFT: a tiny model memorizes a handful of Game of 24 solutions.

TOK = Tokenizer()
PUZZLES = ["4 5 6 10", "1 1 4 6", "3 3 8 8", "2 3 5 12", "1 2 4 7"]
SFT_MODEL = ModelConfig(vocab_size=TOK.vocab_size, max_len=128, d_model=64, num_layers=2,
                        num_heads=4, d_ff=256)
SFT_STEPS = 150
LOSS_BOUND = 0.05


@pytest.fixture(scope="module")
def sft_run():
  problems = [game24.make(p) for p in PUZZLES]
  pairs = cot_pairs(problems, 1)
  data = sft_arrays(TOK, pairs, 96)
  opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=10, total_steps=SFT_STEPS)
  state = _state(SFT_MODEL, opt, 0)
  loss_fn = jax.jit(functools.partial(sft_loss_fn, config=SFT_MODEL, value_weight=0.0))
  batch = {k: data[k] for k in ("tokens", "loss_mask")}
  initial_loss = float(loss_fn(state.params, batch)[1]["token_loss"])
  state, metrics = train(state, data, functools.partial(sft_step, config=SFT_MODEL),
                         num_steps=SFT_STEPS, batch_size=len(pairs), seed=0)
  final_loss = float(loss_fn(state.params, batch)[1]["token_loss"])
  return problems, pairs, state, metrics, initial_loss, final_loss


def test_sft_memorizes_solutions(sft_run):
  problems, pairs, state, metrics, initial_loss, final_loss = sft_run
  assert int(state.step) == SFT_STEPS
  assert initial_loss > 5.0  # near log(vocab) at init
  assert final_loss < LOSS_BOUND
  assert np.isfinite(metrics["grad_norm"])
  assert metrics["tokens"] == sum(len(TOK.encode(c, eos=True)) for _, c in pairs)


def test_sft_greedy_reproduces_solutions(sft_run):
  problems, pairs, state, *_ = sft_run
  longest = max(len(TOK.encode(c, eos=True)) for _, c in pairs)
  assert longest <= 64  # the decode budget below covers whole solutions
  acc, texts = greedy_accuracy(state.params, SFT_MODEL, TOK, problems, max_new_tokens=64,
                               batch_size=8)
  assert texts == [c for _, c in pairs]
  assert acc == 1.0


# ---------------------------------------------------------------------------------------------
# The resumable loop and checkpoints.

SMALL = ModelConfig(vocab_size=40, max_len=32, d_model=32, num_layers=1, num_heads=2, d_ff=64)
SMALL_OPT = OptimizerConfig(learning_rate=1e-2, warmup_steps=3, total_steps=20)
SMALL_STEP = functools.partial(sft_step, config=SMALL)


def _small_data():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, SMALL.vocab_size, size=(8, 16)).astype(np.int32)
  mask = (rng.random((8, 16)) < 0.7).astype(np.float32)
  return {"tokens": tokens, "loss_mask": mask}


def test_bfloat16_training_keeps_float32_params_and_learns():
  model = dataclasses.replace(SMALL, dtype="bfloat16")
  state = _state(model, SMALL_OPT, 0)
  data = {k: jnp.asarray(v) for k, v in _small_data().items()}
  step = jax.jit(functools.partial(sft_step, config=model))
  losses = []
  for _ in range(20):
    state, metrics = step(state, data)
    losses.append(float(metrics["loss"]))
  chex.assert_trees_all_equal_dtypes(state.params, jax.tree.map(jnp.float32, state.params))
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], losses


def _counting(step_fn, calls):
  def fn(state, batch):
    calls.append(int(state.step))
    return step_fn(state, batch)
  return fn


def test_resume_after_kill_matches_uninterrupted_run(tmp_path):
  data = _small_data()
  kw = dict(batch_size=4, seed=3)
  run_a, _ = train(_state(SMALL, SMALL_OPT, 0), data, SMALL_STEP,
                   num_steps=20, **kw)
  params_a = jax.device_get(run_a.params)

  config = {"model": {"d_model": SMALL.d_model}, "note": "resume test"}
  ckpt = Checkpoints(tmp_path)
  run_b, _ = train(_state(SMALL, SMALL_OPT, 0), data, SMALL_STEP,
                   num_steps=10, checkpoints=ckpt, checkpoint_every=5, config_to_save=config, **kw)
  assert int(run_b.step) == 10
  assert ckpt.latest_step() == 10
  ckpt.close()
  del run_b  # the "killed" process: only the checkpoint directory survives

  # A state already past the checkpoint is kept, not rolled back to step 10.
  calls = []
  ahead, _ = train(run_a, data, _counting(SMALL_STEP, calls), num_steps=20,
                   checkpoints=Checkpoints(tmp_path), **kw)
  assert calls == [] and int(ahead.step) == 20
  chex.assert_trees_all_equal(jax.device_get(ahead.params), params_a)

  fresh = _state(SMALL, SMALL_OPT, 42)
  assert not np.allclose(fresh.params["lm_head"]["kernel"], params_a["lm_head"]["kernel"])
  ckpt2 = Checkpoints(tmp_path)
  resumed, metrics = train(fresh, data, _counting(SMALL_STEP, calls), num_steps=20,
                           checkpoints=ckpt2, checkpoint_every=5, config_to_save=config, **kw)
  assert calls == list(range(10, 20))  # resumed at step 10, not 0
  assert int(resumed.step) == 20
  assert np.isfinite(metrics["loss"])
  chex.assert_trees_all_close(jax.device_get(resumed.params), params_a, atol=1e-6, rtol=1e-6)
  assert ckpt2.latest_step() == 20
  assert ckpt2.restore_config() == config
  assert ckpt2.restore_config(step=15) == config

  # Restoring the final checkpoint into any template gives the final state.
  step, restored = ckpt2.restore(_state(SMALL, SMALL_OPT, 7))
  assert step == 20 and int(restored.step) == 20
  chex.assert_trees_all_close(jax.device_get(restored.params), params_a, atol=1e-6, rtol=1e-6)

  # A finished run given the same directory does nothing more.
  calls.clear()
  again, _ = train(_state(SMALL, SMALL_OPT, 1), data,
                   _counting(SMALL_STEP, calls), num_steps=20, checkpoints=ckpt2, **kw)
  assert calls == [] and int(again.step) == 20
  ckpt2.close()


def test_empty_checkpoints_restore_none(tmp_path):
  ckpt = Checkpoints(tmp_path / "empty")
  template = _state(SMALL, SMALL_OPT, 0)
  assert ckpt.latest_step() is None
  assert ckpt.restore(template) is None
  assert ckpt.restore_config() is None
  ckpt.save(3, template)  # a state saved with no config
  assert ckpt.restore_config() is None and ckpt.restore(template)[0] == 3
  ckpt.close()


def test_restoring_into_another_model_is_a_clear_error(tmp_path):
  ckpt = Checkpoints(tmp_path / "learned")
  ckpt.save(3, _state(dataclasses.replace(SMALL, position="learned"), SMALL_OPT, 0))
  with pytest.raises(ValueError, match=r"step 3\) does not fit this model.*model.position"):
    ckpt.restore(_state(SMALL, SMALL_OPT, 0))  # RoPE: no position embeddings to restore
  assert ckpt.restore(_state(dataclasses.replace(SMALL, position="learned"), SMALL_OPT, 1))[0] == 3
  ckpt.close()


def test_batch_indices_deterministic_in_seed_and_step():
  a = [batch_indices(12, 4, seed=5, step=s) for s in range(9)]
  b = [batch_indices(12, 4, seed=5, step=s) for s in range(9)]
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
    chex.assert_shape(x, (4,))
  other_seed = [batch_indices(12, 4, seed=6, step=s) for s in range(3)]
  assert any((x != y).any() for x, y in zip(a[:3], other_seed))
  # Order of calls does not matter: step 7 alone equals step 7 in a sequence.
  np.testing.assert_array_equal(batch_indices(12, 4, seed=5, step=7), a[7])


def test_batch_indices_cover_each_example_once_per_epoch():
  epochs = []
  for epoch in range(3):
    idx = np.concatenate([batch_indices(12, 4, seed=0, step=epoch * 3 + k) for k in range(3)])
    assert sorted(idx.tolist()) == list(range(12))
    epochs.append(idx)
  assert any((epochs[0] != e).any() for e in epochs[1:])  # reshuffled each epoch
  # With a remainder, an epoch never repeats an example.
  idx = np.concatenate([batch_indices(10, 4, seed=0, step=k) for k in range(2)])
  assert len(set(idx.tolist())) == 8 and idx.min() >= 0 and idx.max() < 10


def test_batch_indices_too_few_examples():
  with pytest.raises(ValueError, match="3 examples cannot fill a batch of 4"):
    batch_indices(3, 4, seed=0, step=0)


def test_optimizer_config_validation():
  with pytest.raises(ValueError, match="total_steps > 0"):
    OptimizerConfig(total_steps=0)
  with pytest.raises(ValueError, match="warmup_steps >= 0"):
    OptimizerConfig(warmup_steps=-1)


@pytest.mark.parametrize("warmup,total", [(0, 10), (4, 10), (10, 10), (100, 50)])
def test_optimizer_schedule_builds_and_updates(warmup, total):
  """Any valid config builds an optimizer whose first real update is finite and nonzero."""
  tx = make_optimizer(OptimizerConfig(learning_rate=1e-2, warmup_steps=warmup, total_steps=total))
  params = {"w": jnp.ones((3,))}
  state = tx.init(params)
  grads = {"w": jnp.array([1.0, -2.0, 3.0])}
  moved = False
  for _ in range(2):  # with warmup, the very first learning rate is 0
    updates, state = tx.update(grads, state, params)
    chex.assert_tree_all_finite(updates)
    moved |= bool(jnp.abs(updates["w"]).sum() > 0)
  assert moved


# ---------------------------------------------------------------------------------------------
# Micro-batches: the gradient of a batch taken in slices, one at a time.

class MicroBatchTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    self.model = ModelConfig(vocab_size=31, max_len=16, d_model=32, num_layers=1, num_heads=2,
                             d_ff=64)
    rng = np.random.default_rng(0)
    mask = (np.arange(16)[None] < rng.integers(3, 17, size=(8, 1))).astype(np.float32)
    self.batch = {"tokens": rng.integers(0, 31, size=(8, 16)).astype(np.int32),
                  "loss_mask": mask,  # rows of different lengths: slices weigh differently
                  "value_positions": rng.integers(0, 16, size=(8, 3)).astype(np.int32),
                  "value_labels": rng.integers(0, 2, size=(8, 3)).astype(np.float32),
                  "value_weights": (rng.random((8, 3)) < 0.6).astype(np.float32)}

  @chex.variants(with_jit=True, without_jit=True)
  def test_micro_batch_grads_equal_the_whole_batch(self):
    params = _init_params(self.model, jax.random.PRNGKey(0))
    batch, totals = self.batch, sft_totals(self.batch)
    whole_fn = functools.partial(sft_loss_fn, config=self.model, value_weight=0.5)
    (whole, whole_metrics), grads = self.variant(
        functools.partial(micro_batch_grads, whole_fn))(params, batch)
    for m in (2, 4):
      sliced_fn = functools.partial(sft_loss_fn, config=self.model, value_weight=0.5,
                                    totals=totals)
      (loss, metrics), sliced = self.variant(
          functools.partial(micro_batch_grads, sliced_fn, micro_batches=m))(params, batch)
      chex.assert_shape(loss, ())
      np.testing.assert_allclose(loss, whole, rtol=1e-5)
      chex.assert_trees_all_close(metrics, whole_metrics, rtol=1e-5)  # token count included
      chex.assert_trees_all_close(sliced, grads, atol=1e-6)
    with pytest.raises(ValueError, match="micro_batches=3"):
      micro_batch_grads(whole_fn, params, batch, 3)

  def test_sft_step_in_micro_batches_takes_the_same_step(self):
    opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=4)
    one, four = _state(self.model, opt, 0), _state(self.model, opt, 0)
    loss_fn = jax.jit(functools.partial(sft_loss_fn, batch=self.batch, config=self.model,
                                        value_weight=1.0))
    for _ in range(2):
      one, m1 = sft_step(one, self.batch, config=self.model)
      four, m4 = sft_step(four, self.batch, config=self.model, micro_batches=4)
      chex.assert_trees_all_close(m1, m4, rtol=1e-5)
    # Adam turns float noise in zero gradients (the key bias) into lr-sized steps: compare
    # where the steps led, not every parameter
    after = float(loss_fn(one.params)[0])
    assert after < float(m1["loss"]) - 1e-3
    np.testing.assert_allclose(float(loss_fn(four.params)[0]), after, rtol=1e-4)


def _traces_with_backtracks(n: int = 10):
  """Symbolic traces whose steps after a backtrack carry unlikelihood targets."""
  traces = round0.symbolic_traces([game24.make(p) for p in PUZZLES], 8, seed=7,
                                  noise_scales=(1.0, 2.0))
  data = [round0.trace_segments(p, lines, "all", avoid=True) for p, lines in traces]
  return [d for d in data if any(s.avoid for s in d)][:n]


class PackedRowsTest(chex.TestCase):
  """Packed rows (`data.examples.pack`) give the loss and gradients of the same examples
  one to a row: packing changes the cost of a step, not what it learns."""

  def setUp(self):
    super().setUp()
    problems = [game24.make(p) for p in PUZZLES]
    data = examples.cot_examples(problems, 2) + examples.walk_examples(problems, 2, seed=1)
    self.rows, _ = examples.encode(TOK, data, 96)
    self.packed = examples.pack(self.rows)
    assert len(self.packed["tokens"]) < len(self.rows["tokens"])

  @chex.variants(with_jit=True, without_jit=True)
  def test_packed_loss_and_grads_equal_one_example_a_row(self):
    params = _init_params(SFT_MODEL, jax.random.PRNGKey(1))
    fn = self.variant(jax.value_and_grad(
        functools.partial(sft_loss_fn, config=SFT_MODEL, value_weight=0.5), has_aux=True))
    (loss, metrics), grads = fn(params, self.rows)
    (packed_loss, packed_metrics), packed_grads = fn(params, self.packed)
    chex.assert_shape(packed_loss, ())
    assert metrics["tokens"] == packed_metrics["tokens"] > 0
    np.testing.assert_allclose(packed_loss, loss, rtol=1e-5)
    chex.assert_trees_all_close(packed_metrics, metrics, rtol=1e-5)
    chex.assert_trees_all_close(packed_grads, grads, atol=2e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_packed_value_loss_equals_one_example_a_row(self):
    params = _init_params(SFT_MODEL, jax.random.PRNGKey(2))
    fn = self.variant(functools.partial(value_loss_fn, config=SFT_MODEL))
    (loss, metrics), (packed_loss, packed_metrics) = fn(params, self.rows), fn(params, self.packed)
    chex.assert_shape(packed_loss, ())
    np.testing.assert_allclose(packed_loss, loss, rtol=1e-5)
    chex.assert_trees_all_close(packed_metrics, metrics, rtol=1e-5)

  def test_packed_sft_step_in_micro_batches_takes_the_same_step(self):
    rows = len(self.packed["tokens"]) // 2 * 2  # an even number of packed rows
    batch = {k: v[:rows] for k, v in self.packed.items()}
    opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=2)
    one, two = _state(SFT_MODEL, opt, 3), _state(SFT_MODEL, opt, 3)
    one, m1 = sft_step(one, batch, config=SFT_MODEL)
    two, m2 = sft_step(two, batch, config=SFT_MODEL, micro_batches=2)
    chex.assert_trees_all_close(m1, m2, rtol=1e-5)
    loss_fn = jax.jit(functools.partial(sft_loss_fn, batch=batch, config=SFT_MODEL,
                                        value_weight=1.0))
    after = float(loss_fn(one.params)[0])
    assert after < float(m1["loss"]) - 1e-3
    np.testing.assert_allclose(float(loss_fn(two.params)[0]), after, rtol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_packed_unlikelihood_loss_equals_one_example_a_row(self):
    data = _traces_with_backtracks()
    rows, _ = examples.encode(TOK, data, 128, max_avoids=8)
    packed = examples.pack(rows)
    params = _init_params(SFT_MODEL, jax.random.PRNGKey(4))
    fn = self.variant(jax.value_and_grad(functools.partial(
        sft_loss_fn, config=SFT_MODEL, value_weight=0.5, unlikelihood_weight=2.0,
        unlikelihood_form="pairwise"), has_aux=True))
    (loss, metrics), grads = fn(params, rows)
    (packed_loss, packed_metrics), packed_grads = fn(params, packed)
    assert metrics["unlikelihood_loss"] > 0 and 0 < metrics["avoided_probability"] < 1
    np.testing.assert_allclose(packed_loss, loss, rtol=1e-5)
    chex.assert_trees_all_close(packed_metrics, metrics, rtol=1e-5)
    chex.assert_trees_all_close(packed_grads, grads, atol=2e-6)

  def test_unlikelihood_lowers_the_tried_steps_after_backtracks(self):
    data = _traces_with_backtracks()
    batch, _ = examples.encode(TOK, data, 128, max_avoids=8)
    opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=0, total_steps=40)
    probe = jax.jit(functools.partial(sft_loss_fn, batch=batch, config=SFT_MODEL,
                                      value_weight=0.0, unlikelihood_weight=1.0))
    avoided = {}
    for weight, form in ((0.0, "token"), (1.0, "token"), (1.0, "pairwise")):
      state = _state(SFT_MODEL, opt, 5)
      for _ in range(40):
        state, metrics = sft_step(state, batch, config=SFT_MODEL, unlikelihood_weight=weight,
                                  unlikelihood_form=form)
      assert ("avoided_probability" in metrics) == bool(weight)
      avoided[weight, form] = float(probe(state.params)[1]["avoided_probability"])
    # the same steps, data and start: only the loss on the tried steps differs
    assert avoided[1.0, "token"] < 0.5 * avoided[0.0, "token"], avoided
    assert avoided[1.0, "pairwise"] < 0.5 * avoided[0.0, "token"], avoided

  def test_packed_rows_without_segments_learn_something_else(self):
    params = _init_params(SFT_MODEL, jax.random.PRNGKey(1))
    fn = jax.jit(functools.partial(sft_loss_fn, config=SFT_MODEL, value_weight=0.5))
    leaky = {k: v for k, v in self.packed.items() if k != "segments"}
    assert abs(float(fn(params, leaky)[0]) - float(fn(params, self.packed)[0])) > 1e-4
