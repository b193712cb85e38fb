"""PRM labels: exact random-policy values by hand, Monte Carlo estimates against them, LM Monte
Carlo values (the paper's eq. 11), random prefixes and calibration."""

from fractions import Fraction

import chex
import jax
import numpy as np
import pytest

from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.metacot import value_labels
from metacot_jax.models import ModelConfig, init_params, sampling
from metacot_jax.models.transformer import forward
from metacot_jax.tasks import Verdict, countdown, game24

TOK = Tokenizer()
TINY = ModelConfig(vocab_size=TOK.vocab_size, max_len=64, d_model=32, num_layers=1, num_heads=2,
                   d_ff=64)


def _state(*xs):
  return tuple(sorted(Fraction(x) for x in xs))


def test_random_policy_values_by_hand():
  # (4, 6): 6 + 4, 6 * 4, 6 - 4, 6 / 4, 4 / 6; one of the five makes 24
  assert value_labels.random_policy_value(_state(4, 6), 24) == pytest.approx(1 / 5)
  # (4, 4): 8, 16, 0, 1; none is 24
  assert value_labels.random_policy_value(_state(4, 4), 24) == 0.0
  assert value_labels.random_policy_value(_state(24), 24) == 1.0
  assert value_labels.random_policy_value(_state(23), 24) == 0.0
  # (1, 1, 24): nine steps. From the 1s: (2, 24) 0, (1, 24) 2/5 twice (1 * 1, 1 / 1), (0, 24)
  # 1/2. From 1 and 24: (1, 25) 1/5, (1, 24) 2/5 twice (24 * 1, 24 / 1), (1, 23) 1/5,
  # (1/24, 1) 1/5. Mean: (0 + 4 * 2/5 + 1/2 + 3 * 1/5) / 9 = 0.3.
  assert len(countdown.successors(_state(1, 1, 24))) == 9
  assert value_labels.random_policy_value(_state(1, 1, 24), 24) == pytest.approx(0.3)


@pytest.mark.parametrize("state", [_state(1, 1, 24), _state(2, 3, 4), _state(4, 5, 6, 10)])
def test_monte_carlo_labels_converge_to_the_exact_values(state):
  """Eq. 11 with a rollout policy whose values are known exactly: the estimate is unbiased."""
  exact = value_labels.random_policy_value(state, 24)
  m = 4000
  estimate = value_labels.random_rollout_mc(state, 24, m, np.random.default_rng(0))
  stderr = np.sqrt(max(exact * (1 - exact), 1e-4) / m)
  assert abs(estimate - exact) < 4 * stderr, (state, estimate, exact)


def test_lm_monte_carlo_values_are_the_success_share_of_each_prefix_s_samples(monkeypatch):
  """Row i*m + g is sample g of prefix i: prefix i's value is the share of its m samples the
  verifier accepts. A stand-in sampler answers rightly in the first k_i samples of prefix i."""
  problems = [game24.make("4 5 6 10"), game24.make("1 1 4 6"), game24.make("3 3 8 8")]
  prefixes = ["10 - 4 = 6 (left: 5 6 6)\n", "", "8 / 3 = 8/3 (left: 3 8 8/3)\n"]
  right = ["(5 * (10 - 4)) - 6", "6 * 4 * 1 * 1", "8 / (3 - 8 / 3)"]
  assert all(p.verify(a).ok for p, a in zip(problems, right))
  m, k = 4, [3, 4, 0]
  seen = {}

  def stand_in(params, config, prompts, cfg, rng, *, batch_size, group_size, mesh=None):
    seen.update(prompts=[TOK.decode(p) for p in prompts], group_size=group_size)
    rows = [TOK.encode(f"Answer: {right[i] if g < k[i] else '4 * 6'} = 24") + [TOK.eos_id]
            for i in range(len(prompts)) for g in range(group_size)]
    width = max(map(len, rows))
    tokens = np.array([r + [TOK.pad_id] * (width - len(r)) for r in rows], np.int32)
    zeros = np.zeros(tokens.shape, np.float32)
    return sampling.Samples(tokens, zeros, np.array([len(r) for r in rows], np.int32), zeros,
                            np.ones(len(rows), bool))

  monkeypatch.setattr(value_labels, "sample_prompts", stand_in)
  values = value_labels.lm_mc_values(None, TINY, TOK, problems, prefixes, m=m,
                                     max_new_tokens=20, rng=jax.random.PRNGKey(0))
  chex.assert_shape(values, (3,))
  np.testing.assert_allclose(values, [3 / 4, 1.0, 0.0])
  assert seen["group_size"] == m
  assert seen["prompts"] == [p.prompt() + x for p, x in zip(problems, prefixes)]


_tiny_logits = jax.jit(lambda params, row: forward(params, TINY, row)[0])


def _greedy_text(params, prompt, n):
  """Greedy completion by full forward passes (no KV cache), decoded like the sampler's rows.
  Rows are right-padded to one width (one compile); causal attention ignores the padding."""
  row, new = TOK.encode(prompt, bos=True), []
  for _ in range(n):
    ids = row + new
    logits = _tiny_logits(params, np.array([ids + [TOK.pad_id] * (TINY.max_len - len(ids))],
                                           np.int32))
    new.append(int(np.argmax(logits[0, len(ids) - 1])))
    if new[-1] == TOK.eos_id:
      break
  return TOK.decode(new)


def test_lm_monte_carlo_values_from_a_real_model_are_shares_of_m(monkeypatch):
  """A real model at temperature 0: all m samples of a prefix are its greedy completion. Both
  stand-in problems accept only prefix 0's greedy completion, so the values are exactly [1, 0];
  mixed-up rows or a wrong mean give a fraction, all-zero values give 0 for prefix 0."""
  params = init_params(TINY, jax.random.PRNGKey(0))
  real = [game24.make("4 5 6 10"), game24.make("1 1 4 6")]
  prefixes = ["10 - 4 = 6 (left: 5 6 6)\n", ""]
  greedy = [_greedy_text(params, p.prompt() + x, 8) for p, x in zip(real, prefixes)]
  assert greedy[0] != greedy[1]  # else prefix 1's samples would verify too

  class Accepts:  # verify(...) is ok only for prefix 0's greedy completion
    def __init__(self, problem):
      self.prompt = problem.prompt

    def verify(self, answer):
      return Verdict(answer == greedy[0], "stand-in")

  # the whole completion is the answer: the stand-in verifier sees the text as sampled
  monkeypatch.setattr(value_labels, "answer_line", lambda text: text)
  values = value_labels.lm_mc_values(params, TINY, TOK, [Accepts(p) for p in real], prefixes,
                                     m=3, max_new_tokens=8, rng=jax.random.PRNGKey(1),
                                     temperature=0.0)
  chex.assert_shape(values, (2,))
  np.testing.assert_array_equal(values, [1.0, 0.0])


def test_prefix_values_read_the_value_head_after_each_prefix():
  params = init_params(TINY, jax.random.PRNGKey(0))
  problems = [game24.make("4 5 6 10"), game24.make("1 1 4 6")]
  prefixes = ["10 - 4 = 6 (left: 5 6 6)\n", ""]
  values = value_labels.prefix_values(params, TINY, TOK, problems, prefixes)
  chex.assert_shape(values, (2,))
  for i, (p, x) in enumerate(zip(problems, prefixes)):
    row = np.array([TOK.encode(p.prompt() + x, bos=True)], np.int32)
    _, value_logits, _ = forward(params, TINY, row)
    np.testing.assert_allclose(values[i], jax.nn.sigmoid(value_logits[0, -1]), rtol=1e-5)


def test_random_prefixes_are_legal_and_labelled_by_their_state():
  problems = [game24.make("4 5 6 10"), game24.make("1 1 4 6"), game24.make("3 3 8 8")] * 4
  texts, outcome, value = value_labels.random_prefixes(problems, (1, 2), np.random.default_rng(0))
  assert len(texts) == len(outcome) == len(value) == len(problems)
  depths = set()
  for p, text, o, v in zip(problems, texts, outcome, value):
    state = tuple(sorted(p.initial_state()))
    lines = text.splitlines()
    depths.add(len(lines))
    for line in lines:
      check = countdown.check_step(state, line)
      assert check.ok, (text, check)
      state = check.state
    assert v == value_labels.random_policy_value(tuple(sorted(state)), p.target)
    assert o == float(v > 0)  # a reachable target has some random path to it
    if all(x.denominator == 1 for x in state):  # the solver, on the whole numbers left
      assert o == float(countdown.is_solvable([int(x) for x in state], p.target))
  assert depths == {1, 2}


@pytest.mark.parametrize("depth_range", [(4, 4), (2, 1), (-1, 1)])
def test_random_prefixes_reject_depths_the_problems_cannot_take(depth_range):
  with pytest.raises(ValueError, match=r"depth_range .* need 0 <= low <= high <= 3"):
    value_labels.random_prefixes([game24.make("4 5 6 10")], depth_range,
                                 np.random.default_rng(0))


def test_calibration_by_hand():
  # bins of width 0.2: [0.1, 0.1] observed [0, 1] (gap 0.4); [0.9, 0.9] observed [1, 1] (gap 0.1)
  out = value_labels.calibration([0.1, 0.1, 0.9, 0.9], [0, 1, 1, 1])
  assert [b["count"] for b in out["bins"]] == [2, 2]
  assert [b["bin"] for b in out["bins"]] == ["0.0-0.2", "0.8-1.0"]
  np.testing.assert_allclose([b["observed"] for b in out["bins"]], [0.5, 1.0])
  assert out["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
  assert value_labels.calibration([0.3, 0.7], [0.3, 0.7])["ece"] == pytest.approx(0.0)
