"""Tests of RL post-training: returns, advantages, the loss, rollouts, updates, resuming."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot.reward import TraceReward, split_trace
from metacot_jax.models import ModelConfig, init_params
from metacot_jax.models.transformer import forward
from metacot_jax.tasks import game24
from metacot_jax.train import Checkpoints, OptimizerConfig, create_train_state
from metacot_jax.train import rl, rl_loop
from metacot_jax.train.rl_loop import rollout, train_rl
from metacot_jax.models.sampling import SamplingConfig

TOY = ModelConfig(vocab_size=12, max_len=8, d_model=32, num_layers=1, num_heads=2, d_ff=64)
RIGHT = 7  # the toy task's one right answer token
_init = jax.jit(init_params, static_argnums=0)


class ObjectiveTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_discounted_returns_by_hand(self):
    fn = self.variant(lambda r, n: rl.discounted_returns(r, n, 0.5))
    out = fn(jnp.array([1.0, 0.0, 1.0, 1.0]), jnp.array([2, 5, 0, 3]))
    chex.assert_shape(out, (4,))
    np.testing.assert_allclose(out, [0.25, 0.0, 1.0, 0.125])

  @chex.variants(with_jit=True, without_jit=True)
  def test_gamma_one_returns_the_reward(self):
    out = self.variant(lambda r, n: rl.discounted_returns(r, n, 1.0))(
        jnp.array([1.0, 0.0]), jnp.array([300, 7]))
    np.testing.assert_allclose(out, [1.0, 0.0])

  @chex.variants(with_jit=True, without_jit=True)
  def test_leave_one_out_by_hand(self):
    returns = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]])
    adv = self.variant(lambda r: rl.group_advantages(r, "loo"))(returns)
    chex.assert_shape(adv, (2, 4))
    # R_0 - mean(R_1, R_2, R_3) = 1 - 1/3; a group of equal returns has no signal.
    np.testing.assert_allclose(adv, [[2 / 3, -2 / 3, -2 / 3, 2 / 3], [0, 0, 0, 0]], atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_grpo_by_hand(self):
    returns = jnp.array([[1.0, 0.0, 0.0, 1.0], [0.9, 0.0, 0.0, 0.0]])
    adv = self.variant(lambda r: rl.group_advantages(r, "grpo", eps=0.0))(returns)
    std = np.std([0.9, 0, 0, 0])
    np.testing.assert_allclose(adv, [[1, -1, -1, 1],
                                     [(0.9 - 0.225) / std] + [-0.225 / std] * 3], rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_equal_returns_have_no_signal(self):
    # 0.99^22 is not a float32 whose mean over 8 or 16 copies is exact: GRPO once turned
    # that rounding into advantages of about 0.1 in a group with nothing to prefer.
    for estimator in rl.ESTIMATORS:
      for g in (8, 16):
        returns = jnp.full((2, g), 0.99 ** 22, jnp.float32).at[1].set(0.04)
        adv = self.variant(lambda r: rl.group_advantages(r, estimator))(returns)
        chex.assert_shape(adv, (2, g))
        np.testing.assert_array_equal(adv, np.zeros((2, g)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_clipped_surrogate_by_hand(self):
    ratio = jnp.array([0.5, 1.0, 1.5])
    fn = self.variant(lambda r, a: rl.clipped_surrogate(r, a, 0.2))
    np.testing.assert_allclose(fn(ratio, jnp.ones(3)), [0.5, 1.0, 1.2])
    np.testing.assert_allclose(fn(ratio, -jnp.ones(3)), [-0.8, -1.0, -1.5])
    unclipped = self.variant(lambda r, a: rl.clipped_surrogate(r, a, 0.0))(ratio, jnp.ones(3))
    np.testing.assert_allclose(unclipped, ratio)

  @chex.variants(with_jit=True, without_jit=True)
  def test_token_kl_by_hand_and_of_itself(self):
    logits = jnp.log(jnp.array([[[0.25, 0.75]]]))
    ref = jnp.log(jnp.array([[[0.5, 0.5]]]))
    kl = self.variant(rl.token_kl)(logits, ref)
    chex.assert_shape(kl, (1, 1))
    np.testing.assert_allclose(kl, [[0.25 * np.log(0.5) + 0.75 * np.log(1.5)]], rtol=1e-5)
    np.testing.assert_allclose(self.variant(rl.token_kl)(logits, logits), [[0.0]], atol=1e-7)

  def test_config_rejects_bad_values(self):
    with pytest.raises(ValueError, match="gamma"):
      rl.RLConfig(gamma=1.5)
    with pytest.raises(ValueError, match="group_size"):
      rl.RLConfig(group_size=1)
    with pytest.raises(ValueError, match="estimator"):
      rl.RLConfig(estimator="ppo2")
    with pytest.raises(ValueError, match="length_unit"):
      rl.RLConfig(length_unit="chars")


def _toy_batch(params, rng, group=4):
  prompts = jnp.array([[1, 3, 0], [1, 4, 5]], jnp.int32)
  out = rollout(params, rng, prompts, jnp.array([2, 3], jnp.int32), config=TOY,
                sampling_config=SamplingConfig(3, 1.0, 0, (2,)), group_size=group)
  return prompts, out


def test_rollout_places_generations_after_each_prompt():
  params = _init(TOY, jax.random.PRNGKey(0))
  prompts, out = _toy_batch(params, jax.random.PRNGKey(1))
  chex.assert_shape([out.tokens_BxL, out.mask_BxL], (8, 6))
  tokens, mask = np.asarray(out.tokens_BxL), np.asarray(out.mask_BxL)
  gen, lengths = np.asarray(out.generated_BxN), np.asarray(out.lengths_B)
  for row in range(8):
    p = [2, 3][row // 4]  # rows 0-3 are samples of prompt 0
    np.testing.assert_array_equal(tokens[row, :p], np.asarray(prompts)[row // 4, :p])
    np.testing.assert_array_equal(tokens[row, p:p + lengths[row]], gen[row, :lengths[row]])
    np.testing.assert_array_equal(np.flatnonzero(mask[row]), np.arange(p, p + lengths[row]))


def test_kl_of_the_policy_to_itself_is_zero():
  params = _init(TOY, jax.random.PRNGKey(0))
  _, out = _toy_batch(params, jax.random.PRNGKey(1))
  old = rl.token_logprobs(params, out.tokens_BxL, config=TOY)
  batch = {"tokens": out.tokens_BxL, "mask": out.mask_BxL, "old_logprobs": old,
           "advantages": jnp.linspace(-1, 1, 8)}
  _, metrics = rl.rl_loss(params, params, batch, TOY, rl.LossConfig(beta=1.0, clip_eps=0.2))
  assert abs(float(metrics["kl"])) < 1e-6
  np.testing.assert_allclose(metrics["ratio"], 1.0, atol=1e-5)  # pi_old = pi
  assert float(metrics["entropy"]) > 0
  # against another reference: the masked mean of the exact per-token KL(pi || ref)
  ref = _init(TOY, jax.random.PRNGKey(9))
  _, metrics = rl.rl_loss(params, ref, batch, TOY, rl.LossConfig(beta=1.0, clip_eps=0.2))
  kl_BxL = rl.token_kl(forward(params, TOY, out.tokens_BxL)[0][:, :-1],
                       forward(ref, TOY, out.tokens_BxL)[0][:, :-1])
  mask = np.asarray(out.mask_BxL)[:, 1:]
  want = float(np.sum(kl_BxL * mask) / np.sum(mask))
  assert want > 1e-3
  np.testing.assert_allclose(metrics["kl"], want, rtol=1e-4)


def test_reinforce_gradient_is_advantage_times_score():
  """With pi_old = pi the surrogate's gradient is mean_t A * grad log pi (REINFORCE)."""
  params = _init(TOY, jax.random.PRNGKey(0))
  _, out = _toy_batch(params, jax.random.PRNGKey(2))
  old = rl.token_logprobs(params, out.tokens_BxL, config=TOY)
  adv = jnp.linspace(-1, 1, 8)
  batch = {"tokens": out.tokens_BxL, "mask": out.mask_BxL, "old_logprobs": old, "advantages": adv}
  grads = jax.grad(lambda p: rl.rl_loss(p, params, batch, TOY, rl.LossConfig(0.0, 0.0))[0])(params)

  def score(p):
    logp = rl.token_logprobs(p, out.tokens_BxL, config=TOY)
    return -jnp.sum(logp * out.mask_BxL * adv[:, None]) / jnp.sum(out.mask_BxL)
  expected = jax.grad(score)(params)
  chex.assert_trees_all_close(grads, expected, atol=1e-6)


def test_old_logprobs_off_the_generated_tokens_do_not_reach_the_loss():
  """Only generated tokens are scored: the prompt's and the padding's log-probs may have
  drifted any distance between epochs without a NaN in the loss or its gradient."""
  params = _init(TOY, jax.random.PRNGKey(0))
  _, out = _toy_batch(params, jax.random.PRNGKey(3))
  old = rl.token_logprobs(params, out.tokens_BxL, config=TOY)
  drifted = jnp.where(out.mask_BxL > 0, old, old - 100.0)  # exp(100) overflows float32
  cfg = rl.LossConfig(beta=0.1, clip_eps=0.2)
  grad = lambda o: jax.value_and_grad(rl.rl_loss, has_aux=True)(
      params, params, {"tokens": out.tokens_BxL, "mask": out.mask_BxL, "old_logprobs": o,
                       "advantages": jnp.linspace(-1, 1, 8)}, TOY, cfg)
  (loss, _), grads = grad(old)
  (loss2, _), grads2 = grad(drifted)
  assert np.isfinite(float(loss2)) and float(loss2) == pytest.approx(float(loss), abs=1e-6)
  chex.assert_trees_all_close(grads, grads2, atol=1e-6)


def test_on_policy_loss_without_old_logprobs_equals_the_explicit_one():
  """One epoch needs no old log-probs: stop_gradient(log pi) gives the same loss and grads."""
  params = _init(TOY, jax.random.PRNGKey(0))
  _, out = _toy_batch(params, jax.random.PRNGKey(3))
  batch = {"tokens": out.tokens_BxL, "mask": out.mask_BxL, "advantages": jnp.linspace(-1, 1, 8)}
  explicit = {**batch, "old_logprobs": rl.token_logprobs(params, out.tokens_BxL, config=TOY)}
  cfg = rl.LossConfig(beta=0.1, clip_eps=0.2)
  grad = lambda b: jax.value_and_grad(rl.rl_loss, has_aux=True)(params, params, b, TOY, cfg)
  (loss, metrics), grads = grad(batch)
  (loss2, metrics2), grads2 = grad(explicit)
  np.testing.assert_allclose(loss, loss2, atol=1e-6)  # near 0: the advantages sum to 0
  assert float(metrics["ratio"]) == 1.0 and float(metrics["clip_fraction"]) == 0.0
  chex.assert_trees_all_close(grads, grads2, atol=1e-5)


def test_token_logprobs_in_micro_batches_equal_the_whole_batch():
  params = _init(TOY, jax.random.PRNGKey(0))
  _, out = _toy_batch(params, jax.random.PRNGKey(5))
  whole = rl.token_logprobs(params, out.tokens_BxL, config=TOY)
  chex.assert_shape(whole, out.tokens_BxL.shape)
  for m in (2, 4):
    np.testing.assert_allclose(rl.token_logprobs(params, out.tokens_BxL, config=TOY,
                                                 micro_batches=m), whole, atol=1e-6)


def test_rl_step_in_micro_batches_equals_the_whole_batch():
  """Slices of unequal generated lengths: token means over the whole batch either way."""
  params = _init(TOY, jax.random.PRNGKey(0))
  _, out = _toy_batch(params, jax.random.PRNGKey(4))
  mask = np.asarray(out.mask_BxL).copy()
  mask[::3] = 0.0  # some rows score no token at all
  batch = {"tokens": out.tokens_BxL, "mask": mask, "advantages": jnp.linspace(-1, 1, 8)}
  cfg = rl.LossConfig(beta=0.1, clip_eps=0.2)
  opt = OptimizerConfig(learning_rate=1e-2, warmup_steps=0, total_steps=2)
  make = lambda: create_train_state(None, TOY, opt, params=jax.tree.map(jnp.copy, params))
  _, whole = rl.rl_step(make(), params, batch, config=TOY, loss=cfg)
  _, sliced = rl.rl_step(make(), params, batch, config=TOY, loss=cfg, micro_batches=4)
  chex.assert_trees_all_close(whole, sliced, rtol=1e-5, atol=1e-7)
  assert float(whole["grad_norm"]) > 0


def _toy_reward(ids, generated, lengths):
  return (generated[:, 0] == RIGHT).astype(np.float32), lengths


def _p_right(params):
  logits, _, _ = forward(params, TOY, jnp.array([[1, 3]]))
  return float(jax.nn.softmax(logits[0, -1])[RIGHT])


def _run(beta, updates, seed=0, checkpoints=None, state=None, params=None, epochs=1):
  cfg = rl.RLConfig(gamma=1.0, beta=beta, group_size=8, max_new_tokens=2, epochs=epochs,
                    clip_eps=0.2 if epochs > 1 else 0.0)
  opt = OptimizerConfig(learning_rate=3e-2, warmup_steps=0, total_steps=50, end_lr_fraction=1.0)
  if state is None:
    state = create_train_state(None, TOY, opt, params=jax.tree.map(jnp.copy, params))
  return train_rl(state, params, TOY, cfg, [[1, 3]] * 4, _toy_reward, num_updates=updates,
                  problems_per_update=2, seed=seed, checkpoints=checkpoints, checkpoint_every=2,
                  stop_ids=(2,))


def test_updates_raise_the_expected_reward_on_a_toy_task():
  params = _init(TOY, jax.random.PRNGKey(0))
  before = _p_right(params)
  state, metrics = _run(beta=0.0, updates=12, params=params)
  after = _p_right(state.params)
  assert before < 0.2  # about 1/12 at init
  assert after > before + 0.3, (before, after)
  assert metrics["accuracy"] > 0.5
  assert metrics["return"] == pytest.approx(metrics["accuracy"])  # gamma = 1: return = reward


def test_large_beta_keeps_the_policy_near_the_reference():
  params = _init(TOY, jax.random.PRNGKey(0))
  free, _ = _run(beta=0.0, updates=12, params=params)
  held, _ = _run(beta=30.0, updates=12, params=params)

  def kl_to_ref(p):
    logits, _, _ = forward(p, TOY, jnp.array([[1, 3]]))
    ref, _, _ = forward(params, TOY, jnp.array([[1, 3]]))
    return float(rl.token_kl(logits, ref)[0, -1])
  assert kl_to_ref(held.params) < 0.2 * kl_to_ref(free.params), (
      kl_to_ref(held.params), kl_to_ref(free.params))


def test_killed_run_resumes_to_the_same_params(tmp_path):
  params = _init(TOY, jax.random.PRNGKey(0))
  whole, _ = _run(beta=0.1, updates=4, params=params)
  ckpt = Checkpoints(tmp_path / "rl")
  _run(beta=0.1, updates=2, params=params, checkpoints=ckpt)  # "killed" after update 2
  resumed, _ = _run(beta=0.1, updates=4, params=params, checkpoints=ckpt)
  ckpt.close()
  assert int(resumed.step) == 4
  chex.assert_trees_all_close(resumed.params, whole.params, atol=1e-6)


def test_a_run_resumes_at_its_next_update_with_other_epochs(tmp_path):
  params = _init(TOY, jax.random.PRNGKey(0))
  ckpt = Checkpoints(tmp_path / "rl")
  _run(beta=0.1, updates=2, params=params, checkpoints=ckpt, epochs=3)  # 6 optimiser steps
  assert ckpt.latest_step() == 6 and rl_loop.updates_done(ckpt, epochs=1) == 2
  resumed, _ = _run(beta=0.1, updates=4, params=params, checkpoints=ckpt)  # updates 3 and 4
  assert int(resumed.step) == 8 and rl_loop.updates_done(ckpt, epochs=1) == 4
  assert rl_loop.updates_done(Checkpoints(tmp_path / "none"), epochs=1) == 0
  ckpt.close()


def test_trace_reward_scores_the_answer_and_counts_the_trace():
  tok = Tokenizer()
  problem = game24.make([4, 5, 6, 10])
  z = "10 - 4 = 6 (left: 5 6 6)\nback to 4 5 6 10\n10 - 4 = 6 (left: 5 6 6)\n"
  right, wrong = "Answer: (5 * (10 - 4)) - 6 = 24", "Answer: 4 + 5 + 6 + 10 = 24"
  assert split_trace(z + right + "\n") == (z, right)
  ids = lambda s: np.asarray(tok.encode(s, eos=True))
  texts = [ids(z + right + "\n"), ids(z + wrong + "\n"), ids(z)]
  width = max(len(t) for t in texts)
  gen = np.stack([np.pad(t, (0, width - len(t))) for t in texts])
  lengths = np.asarray([len(t) for t in texts])
  rewards, n_tokens = TraceReward(tok, [problem])(np.zeros(3, int), gen, lengths)
  np.testing.assert_array_equal(rewards, [1.0, 0.0, 0.0])
  np.testing.assert_array_equal(n_tokens[:2], [len(tok.encode(z))] * 2)
  _, n_steps = TraceReward(tok, [problem], "steps")(np.zeros(3, int), gen, lengths)
  np.testing.assert_array_equal(n_steps, [3, 3, 3])  # two steps and one backtrack
  # an answer that does not verify may earn a little, never one that is missing
  rewards, _ = TraceReward(tok, [problem], wrong_answer_reward=0.25)(np.zeros(3, int), gen,
                                                                      lengths)
  np.testing.assert_array_equal(rewards, [1.0, 0.25, 0.0])
  for bad in (-0.1, 1.0):
    with pytest.raises(ValueError, match="wrong_answer_reward must be in"):
      TraceReward(tok, [problem], wrong_answer_reward=bad)


def test_rollout_statistics_count_only_verified_answers_as_accurate():
  cfg = rl.RLConfig(gamma=0.5, group_size=2, estimator="grpo")
  out = rl_loop.Rollout(jnp.zeros((4, 3), jnp.int32), jnp.ones((4, 3)),
                        jnp.zeros((4, 2), jnp.int32), jnp.full((4,), 2))
  rewards, lengths = np.array([1.0, 0.1, 0.1, 0.0]), np.array([1, 1, 2, 3])
  batch, stats = rl_loop.rollout_batch(out, rewards, lengths, None, cfg)
  assert stats["accuracy"] == 0.25
  assert stats["return"] == pytest.approx((0.5 + 0.05 + 0.025 + 0.0) / 4)
  assert stats["trace_length"] == pytest.approx(1.75)
  # a wrong answer given soon beats no answer: a signal in the group with no right one
  assert stats["groups_with_signal"] == 1.0
  chex.assert_shape(batch["advantages"], (4,))
  assert batch["advantages"][2] > batch["advantages"][3]
