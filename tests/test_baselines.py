"""Tests of the search baselines: beam / BFS, best-first / DFS, sampling and greedy.

A tiny model memorizes a few solutions of four Game of 24 puzzles (several per
puzzle, so that sampled first steps differ); the searches then run on those.
"""

import functools

import chex
import jax
import numpy as np
import pytest

from metacot_jax.data.examples import cot_pairs, sft_arrays
from metacot_jax.data.tokenizer import Tokenizer, pad_batch
from metacot_jax.models import ModelConfig, forward, init_params, sampling
from metacot_jax.search import baselines, results, step_mdp
from metacot_jax.search.greedy import answer_line
from metacot_jax.search.step_mdp import SearchConfig
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks import countdown, game24
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step, train

TOK = Tokenizer()
FMT = StepFormat.from_tokenizer(TOK)
MODEL = ModelConfig(vocab_size=TOK.vocab_size, max_len=80, d_model=64, num_layers=2,
                    num_heads=4, d_ff=256)
PUZZLES = ["1 4 8 12", "1 2 4 12", "1 3 6 12", "4 5 6 10"]
SEARCH = SearchConfig(num_candidates=3, max_step_tokens=16, max_depth=3)
K, DEPTH, WIDTH = SEARCH.num_candidates, SEARCH.max_depth, 2
MAX_NEW = 64
TRAIN_STEPS = 200
ANSWER_ID = TOK.id_of("Answer: ")


@pytest.fixture(scope="module")
def trained():
  """(params, problems, roots): a model trained to memorize 3 solutions per puzzle."""
  problems = [game24.make(p) for p in PUZZLES]
  pairs = cot_pairs(problems, 3)
  data = sft_arrays(TOK, pairs, 80)
  opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=10, total_steps=TRAIN_STEPS)
  params = jax.jit(init_params, static_argnums=0)(MODEL, jax.random.PRNGKey(0))
  state = create_train_state(None, MODEL, opt, params=params)
  state, _ = train(state, data, functools.partial(sft_step, config=MODEL), num_steps=TRAIN_STEPS,
                   batch_size=len(pairs), seed=0)
  return state.params, problems, step_mdp.root_nodes(problems, TOK, MODEL, SEARCH)


def _search_kw(search=SEARCH):
  return dict(model=MODEL, fmt=FMT, newline_id=TOK.newline_id, search=search)


def _run_beam(params, roots, score, seed=1, search=SEARCH):
  return baselines._beam(params, jax.random.PRNGKey(seed), roots, beam_width=WIDTH, score=score,
                         **_search_kw(search))


def _run_best_first(params, roots, order, threshold=0.0, search=SEARCH, max_expansions=8):
  return baselines._best_first(params, jax.random.PRNGKey(1), roots,
                               max_expansions=max_expansions,
                               frontier_size=16, depth_weight=baselines._depth_weight(order),
                               value_threshold=threshold,
                               **_search_kw(search))


def _assert_output_shapes(out, bsz, weights_width=K):
  chex.assert_shape(out.answer_tokens, (bsz, MODEL.max_len))
  chex.assert_shape([out.answer_length, out.answered, out.score, out.nodes, out.tokens_generated,
                     out.tokens_processed, out.lm_calls, out.root_value], (bsz,))
  chex.assert_shape(out.root_weights, (bsz, weights_width))


def _summary_matches_scores(out, problems, roots):
  """With the verifier, the outside check agrees with the in-jit one: correct <=> score 1."""
  summary = results.summarize(out, problems, roots.length, TOK)
  solved = np.asarray(out.answered) & (np.asarray(out.score) == 1.0)
  np.testing.assert_array_equal(summary["correct"], solved)
  assert summary["accuracy"] == pytest.approx(solved.mean())
  return summary


def _assert_legal_chain(problem, text, depth):
  """Every line of a kept node is a legal step from the state the earlier ones left."""
  lines = text.splitlines()
  assert len(lines) == depth, text
  state = problem.initial_state()
  for line in lines:
    check = countdown.check_step(state, line)
    assert check.ok, (text, check)
    state = check.state


# ---------------------------------------------------------------------------------------------
# pass@k and the sample curves, by hand.


def test_pass_at_k_by_hand():
  assert results.pass_at_k(4, 1, 2) == pytest.approx(0.5)
  assert results.pass_at_k(4, 0, 2) == 0.0
  assert results.pass_at_k(4, 4, 2) == 1.0
  assert results.pass_at_k(4, 2, 2) == pytest.approx(1 - 1 / 6)  # 1 - C(2,2)/C(4,2)
  assert results.pass_at_k(5, 2, 3) == pytest.approx(0.9)  # 1 - C(3,3)/C(5,3)
  for n, c, k in [(4, 0, 5), (4, 5, 2), (4, -1, 2), (4, 1, 0)]:  # k past n, c outside 0..n
    with pytest.raises(ValueError, match=f"n={n}, c={c}, k={k}"):
      results.pass_at_k(n, c, k)
  assert baselines.default_ks(8) == [1, 2, 4, 8]
  assert baselines.default_ks(6) == [1, 2, 4, 6]


def test_majority_vote_normalises_and_breaks_ties_by_first_seen():
  a, a_spaced, b = "Answer: (6 * 5) - 6 = 24", "Answer:  (6*5) - 6 = 24", "Answer: 4 * 6 = 24"
  assert baselines.majority_vote([b, a, a_spaced, ""]) == a
  assert baselines.majority_vote([b, a]) == b
  assert baselines.majority_vote(["", ""]) == ""


def test_sample_curves_by_hand():
  problems = [game24.make("4 5 6 10"), game24.make("1 1 4 6")]
  right, right_spaced = "Answer: ((6 * 5) - 10) + 4 = 24", "Answer: ((6*5)-10) + 4 = 24"
  wrong = "Answer: ((4 + 5) + 6) + 10 = 24"
  answers = [[wrong, right, right_spaced, ""], ["", "", "", ""]]
  correct = np.array([[p.verify(a).ok for a in row] for p, row in zip(problems, answers)])
  np.testing.assert_array_equal(correct, [[False, True, True, False], [False] * 4])
  values = np.array([[0.3, 0.2, 0.8, 0.99], [0.5, 0.5, 0.5, 0.5]])
  compute = {f: np.array([[10, 20, 30, 40], [1, 1, 1, 1]]) for f in results.COMPUTE_FIELDS}
  samples = baselines.SampleSet([[""] * 4] * 2, answers, correct, values, compute, None)
  curves = baselines.sample_curves(samples, problems)
  assert curves["pass@k"]["k"] == [1, 2, 4]
  # problem 0: c=2 of n=4 -> pass@1 1/2, pass@2 5/6, pass@4 1; problem 1: c=0
  np.testing.assert_allclose(curves["pass@k"]["accuracy"], [0.25, 5 / 12, 0.5])
  # maj@2 is a 1-1 tie won by the first seen (wrong); maj@4 is 2 right (normalised) to 1 wrong
  np.testing.assert_allclose(curves["maj@k"]["accuracy"], [0.0, 0.0, 0.5])
  # best-of-4 skips the unanswered sample with value 0.99 and picks 0.8 (right)
  np.testing.assert_allclose(curves["best_of_k"]["accuracy"], [0.0, 0.0, 0.5])
  for curve in curves.values():
    # compute at k is k/n of the mean total (100 and 4 -> 52)
    np.testing.assert_allclose(curve["tokens_generated"], [13.0, 26.0, 52.0])
  with pytest.raises(ValueError, match="every k"):
    baselines.sample_curves(samples, problems, ks=[8])


# ---------------------------------------------------------------------------------------------
# Greedy and sampled whole solutions.


def test_greedy_and_best_of_n_accounting(trained):
  params, problems, roots = trained
  bsz = len(problems)
  baselines.check_greedy_fits(roots, MODEL, MAX_NEW)
  greedy = baselines.greedy(params, roots, model=MODEL, newline_id=TOK.newline_id,
                            eos_id=TOK.eos_id, answer_id=ANSWER_ID, max_new_tokens=MAX_NEW)
  _assert_output_shapes(greedy, bsz, 1)
  greedy = jax.device_get(greedy)
  np.testing.assert_array_equal(greedy.tokens_processed, roots.length + greedy.tokens_generated)
  np.testing.assert_array_equal(greedy.lm_calls, 1 + greedy.tokens_generated)
  np.testing.assert_array_equal(greedy.nodes, DEPTH)  # three step lines, then the answer
  summary = results.summarize(greedy, problems, roots.length, TOK)
  assert summary["accuracy"] == 1.0
  # A separate value network costs one more prefill of each solution, and scores it: with the
  # same weights the scores are the policy's own, with other weights that network's.
  split = baselines.greedy(step_mdp.PolicyValue(params, params), roots, model=MODEL,
                           newline_id=TOK.newline_id, eos_id=TOK.eos_id, answer_id=ANSWER_ID,
                           max_new_tokens=MAX_NEW)
  np.testing.assert_allclose(split.score, greedy.score, rtol=1e-5)
  value_params = init_params(MODEL, jax.random.PRNGKey(1))
  other = jax.device_get(baselines.greedy(
      step_mdp.PolicyValue(params, value_params), roots, model=MODEL, newline_id=TOK.newline_id,
      eos_id=TOK.eos_id, answer_id=ANSWER_ID, max_new_tokens=MAX_NEW))
  np.testing.assert_array_equal(other.answer_tokens, greedy.answer_tokens)  # the same policy
  by_value = sampling.prefill(value_params, MODEL, other.answer_tokens, other.answer_length)
  np.testing.assert_allclose(other.score, jax.nn.sigmoid(by_value.value_logits_B), rtol=1e-4)
  assert not np.allclose(other.score, greedy.score, rtol=1e-3)
  np.testing.assert_array_equal(split.tokens_processed, 2 * greedy.tokens_processed)
  np.testing.assert_array_equal(split.lm_calls, greedy.lm_calls + 1)

  n = 4
  samples = baselines.sample_n(params, jax.random.PRNGKey(3), problems, TOK, MODEL, n, MAX_NEW,
                               temperature=0.0)
  chex.assert_shape([samples.correct, samples.values], (bsz, n))
  assert len(samples.texts) == bsz and all(len(row) == n for row in samples.texts)
  # Greedy sampling: every sample is the greedy solution, with the greedy work.
  for f in results.COMPUTE_FIELDS:
    np.testing.assert_array_equal(samples.compute[f], np.repeat(getattr(greedy, f)[:, None], n, 1))
    np.testing.assert_array_equal(getattr(samples.best_of_n, f), n * getattr(greedy, f))
  np.testing.assert_array_equal(greedy.answered, True)
  np.testing.assert_allclose(samples.values, np.repeat(greedy.score[:, None], n, 1), rtol=1e-5)
  # The final `Answer:` verdicts agree with the outside check of the steps.
  np.testing.assert_array_equal(samples.correct, np.repeat(np.array(summary["correct"])[:, None],
                                                           n, 1))
  assert [row[0] for row in samples.answers] == summary["answers"]
  best = results.summarize(samples.best_of_n, problems, roots.length, TOK)
  assert best["correct"] == summary["correct"]
  curves = baselines.sample_curves(samples, problems)
  assert curves["pass@k"]["accuracy"] == curves["maj@k"]["accuracy"] == [1.0, 1.0, 1.0]
  np.testing.assert_allclose(curves["best_of_k"]["tokens_generated"],
                             np.array([1, 2, 4]) * greedy.tokens_generated.mean())


class SolutionRowsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_answer_first_is_valued_at_the_prompt(self):
    """A generation whose first line is `Answer:` has no step line: its PRM value is read at the
    prompt's end (not after `Answer: `), where a separate value network reads it too."""
    params = init_params(MODEL, jax.random.PRNGKey(0))
    prompt = TOK.encode(game24.make("4 5 6 10").prompt(), bos=True)
    answer = "Answer: ((6 * 5) - 10) + 4 = 24"
    gens = [TOK.encode(answer) + [TOK.eos_id],
            TOK.encode("6 * 5 = 30 (left: 4 10 30)\n" + answer) + [TOK.eos_id]]
    p, n = len(prompt), max(len(g) for g in gens)
    _, values_BxT, _ = forward(params, MODEL, pad_batch([prompt + g for g in gens], MODEL.max_len))
    out = sampling.Samples(pad_batch(gens, n), np.zeros((2, n), np.float32),
                           np.array([len(g) for g in gens], np.int32), values_BxT[:, p:p + n],
                           np.ones(2, bool))
    prompts, lengths = pad_batch([prompt] * 2, MODEL.max_len), np.full(2, p, np.int32)
    rows = self.variant(functools.partial(baselines._solution_rows, model=MODEL,
                                          newline_id=TOK.newline_id, answer_id=ANSWER_ID))
    own, value = rows(params, prompts, lengths, values_BxT[:, p - 1], out)
    value_params = init_params(MODEL, jax.random.PRNGKey(1))  # a value network of its own
    split, split_value = rows(step_mdp.PolicyValue(params, value_params), prompts, lengths,
                              values_BxT[:, p - 1], out)
    np.testing.assert_array_equal(own.answered, True)
    np.testing.assert_array_equal(own.nodes, [0, 1])
    step_end = p + gens[1].index(ANSWER_ID) - 1  # the step line's newline
    want = jax.nn.sigmoid(values_BxT[np.arange(2), np.array([p - 1, step_end])])
    np.testing.assert_allclose(value, want, rtol=1e-5)
    np.testing.assert_allclose(own.score, want, rtol=1e-5)
    # the value network reads the same places: the prompt's end, the step line's newline
    _, split_values_BxT, _ = forward(value_params, MODEL,
                                     pad_batch([prompt + g for g in gens], MODEL.max_len))
    want_split = jax.nn.sigmoid(split_values_BxT[np.arange(2), np.array([p - 1, step_end])])
    assert not np.allclose(want_split, want, rtol=1e-3)  # the two networks tell apart
    np.testing.assert_allclose(split_value, want_split, rtol=1e-4)
    np.testing.assert_allclose(split.score, want_split, rtol=1e-4)


def test_sample_n_without_problems_fails_clearly():
  with pytest.raises(ValueError, match="no problems to sample solutions for: give at least one"):
    baselines.sample_n(None, jax.random.PRNGKey(0), [], TOK, MODEL, 2, MAX_NEW)


def test_sample_n_sums_work_over_samples(trained):
  params, problems, roots = trained
  samples = baselines.sample_n(params, jax.random.PRNGKey(4), problems, TOK, MODEL, 4, MAX_NEW)
  for f in results.COMPUTE_FIELDS:
    np.testing.assert_array_equal(getattr(samples.best_of_n, f), samples.compute[f].sum(1))
  prompt = np.asarray(roots.length)[:, None]
  np.testing.assert_array_equal(samples.compute["tokens_processed"],
                                prompt + samples.compute["tokens_generated"])
  for i, problem in enumerate(problems):
    for text, answer, ok in zip(samples.texts[i], samples.answers[i], samples.correct[i]):
      assert answer in ("", answer_line(text))
      assert ok == problem.verify(answer).ok
  assert samples.correct.mean() >= 0.5  # the memorized solutions come back often


# ---------------------------------------------------------------------------------------------
# Beam search and BFS.


@pytest.mark.parametrize("score", ["logprob", "value"])
def test_beam_accounting_and_kept_nodes(trained, score):
  params, problems, roots = trained
  out, trace = _run_beam(params, roots, score)
  bsz = len(problems)
  _assert_output_shapes(out, bsz)
  chex.assert_shape(trace["live"], (DEPTH, bsz, WIDTH))
  out, trace = jax.device_get((out, trace))
  live = trace["live"]
  per_level = live.sum(-1)  # [D, B] nodes expanded per level
  np.testing.assert_array_equal(per_level[0], 1)  # the root alone
  assert np.all(per_level <= WIDTH)
  np.testing.assert_array_equal(out.nodes, K * per_level.sum(0))
  # Where the beam stayed full, exactly K at the root then b*K per level.
  full = np.all(per_level[1:] == WIDTH, axis=0)
  assert full.any()
  np.testing.assert_array_equal(out.nodes[full], K * (1 + (DEPTH - 1) * WIDTH))
  # tokens_processed: each expansion's prefix and generated tokens, plus value prefills.
  prefix = np.where(live, (trace["tokens"] != 0).sum(-1), 0).sum((0, 2))
  np.testing.assert_array_equal(out.tokens_processed,
                                prefix + out.tokens_generated + trace["valued_tokens"].sum(0))
  decode_calls = out.lm_calls - live.sum((0, 2)) - trace["valued"].sum(0)
  assert np.all(decode_calls >= live.sum((0, 2))) and np.all(decode_calls <= out.tokens_generated)
  if score == "value":
    assert np.all(trace["valued"].sum(0) >= per_level[1:].sum(0))  # every kept child was valued
  else:
    np.testing.assert_array_equal(trace["valued"], 0)  # the verifier scores answers
  # Invalid candidates are never kept: every kept node is a legal chain of its depth.
  for d in range(DEPTH):
    for i, problem in enumerate(problems):
      for j in range(WIDTH):
        if live[d, i, j]:
          text = step_mdp.node_text(TOK, trace["tokens"][d, i, j],
                                    (trace["tokens"][d, i, j] != 0).sum(), int(roots.length[i]))
          _assert_legal_chain(problem, text, d)
  np.testing.assert_allclose(out.root_weights.sum(1), 1.0, rtol=1e-6)
  summary = _summary_matches_scores(out, problems, roots)
  assert summary["accuracy"] >= 0.75


def test_beam_without_verifier_is_deterministic_and_values_answers(trained):
  params, problems, roots = trained
  search = SearchConfig(num_candidates=K, max_step_tokens=16, max_depth=DEPTH, use_verifier=False)
  first, trace = _run_beam(params, roots, "logprob", seed=5, search=search)
  again, _ = _run_beam(params, roots, "logprob", seed=5, search=search)
  chex.assert_trees_all_equal(first, again)
  out, trace = jax.device_get((first, trace))
  _assert_output_shapes(out, len(problems))
  assert np.all(out.answered)
  assert np.all((out.score > 0.0) & (out.score < 1.0))  # learned scores, not verdicts
  # Only answered children are valued (a prefill each): here, at the last level.
  assert np.all(trace["valued"][-1] > 0)
  live = trace["live"]
  prefix = np.where(live, (trace["tokens"] != 0).sum(-1), 0).sum((0, 2))
  np.testing.assert_array_equal(out.tokens_processed,
                                prefix + out.tokens_generated + trace["valued_tokens"].sum(0))
  np.testing.assert_array_equal(out.nodes, K * live.sum((0, 2)))


def test_bad_arguments_fail_before_compiling(trained):
  params, _, roots = trained
  with pytest.raises(ValueError, match="score"):
    baselines.beam(params, jax.random.PRNGKey(0), roots, beam_width=2, score="prm",
                   **_search_kw())
  with pytest.raises(ValueError, match="order"):
    baselines.best_first(params, jax.random.PRNGKey(0), roots, max_expansions=4, order="bfs",
                         **_search_kw())


# ---------------------------------------------------------------------------------------------
# Best-first search and DFS.


@pytest.mark.parametrize("order", ["value", "dfs"])
def test_best_first_finds_memorized_solutions(trained, order):
  params, problems, roots = trained
  out, trace = _run_best_first(params, roots, order)
  bsz = len(problems)
  _assert_output_shapes(out, bsz)
  chex.assert_shape(trace["live"], (8, bsz))
  out, trace = jax.device_get((out, trace))
  summary = _summary_matches_scores(out, problems, roots)
  assert summary["accuracy"] == 1.0
  live = trace["live"]
  expanded = live.sum(0)
  np.testing.assert_array_equal(out.nodes, K * expanded)
  np.testing.assert_array_equal(
      out.tokens_processed,
      trace["length"].sum(0) + out.tokens_generated + trace["valued_tokens"].sum(0))
  decode_calls = out.lm_calls - expanded - trace["valued"].sum(0)
  assert np.all(decode_calls >= expanded) and np.all(decode_calls <= out.tokens_generated)
  # Solved problems stop: their expansions are a prefix of the iterations, ending early.
  for i in range(bsz):
    assert not np.any(live[expanded[i]:, i]) and expanded[i] < 8
  assert np.all(trace["depth"][0] == 0) and np.all(trace["depth"] < DEPTH)
  if order == "dfs":
    # Deepest first: the memorized chain is followed straight down, root to answer.
    np.testing.assert_array_equal(trace["depth"][:DEPTH].T, np.tile(np.arange(DEPTH), (bsz, 1)))


def test_best_first_threshold_prunes_every_child(trained):
  params, problems, roots = trained
  out, trace = _run_best_first(params, roots, "value", threshold=1.01)  # values are < 1
  np.testing.assert_array_equal(trace["live"].sum(0), 1)
  np.testing.assert_array_equal(out.nodes, K)
  assert not np.any(out.answered)
  np.testing.assert_array_equal(out.root_weights, 0.0)


def test_best_first_without_verifier_commits_to_first_answer(trained):
  """Without the verifier a problem stops at the first expansion with an answered child and
  keeps that child, scored by its own PRM value: one expansion less finds no answer, a larger
  budget changes nothing."""
  params, problems, roots = trained
  search = SearchConfig(num_candidates=K, max_step_tokens=16, max_depth=DEPTH, use_verifier=False)
  out, trace = _run_best_first(params, roots, "dfs", search=search)
  out, trace = jax.device_get((out, trace))
  assert np.all(out.answered)
  live = trace["live"]
  expanded = live.sum(0)
  assert np.all((expanded >= DEPTH) & (expanded < 8))  # an answer takes DEPTH steps
  for i in range(len(problems)):
    assert not np.any(live[expanded[i]:, i])
    # The answer is a child of the last node expanded: one step past it.
    last = expanded[i] - 1
    text = step_mdp.node_text(TOK, out.answer_tokens[i], out.answer_length[i],
                              int(roots.length[i]))
    assert len(text.splitlines()) == trace["depth"][last, i] + 1, text
    assert out.answer_length[i] > trace["length"][last, i]
  # Committed to unchecked: the score is the answer's PRM value (a prefill of its prefix).
  pre = sampling.prefill(params, MODEL, out.answer_tokens, out.answer_length)
  np.testing.assert_allclose(out.score, jax.nn.sigmoid(pre.value_logits_B), rtol=1e-4)
  # The answer came at the last expansion: one fewer and there is none yet.
  cut = int(expanded.max()) - 1
  shorter, _ = _run_best_first(params, roots, "dfs", search=search, max_expansions=cut)
  np.testing.assert_array_equal(shorter.answered, expanded <= cut)
  # Twice the budget: the same answers and work, as nothing is searched after the first answer.
  longer, _ = _run_best_first(params, roots, "dfs", search=search, max_expansions=16)
  chex.assert_trees_all_close(jax.device_get(longer), out)
