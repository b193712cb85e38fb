"""Tests of Meta-CoT: traces (linearize / parse / loss masks), symbolic round-0 searches,
PRM walk labels, AlphaZero targets from mctx trees, traces from the model's own trees,
and the in-context evaluation's rank correlation."""

import dataclasses
import functools
import types
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metacot_jax.data import examples
from metacot_jax.data.examples import Segment, cot_pairs, sft_arrays
from metacot_jax.data.tokenizer import Tokenizer, pad_batch
from metacot_jax.metacot import (evaluate, from_generations, from_search, repair, round0,
                                 symbolic, trace)
from metacot_jax.metacot.reward import split_trace
from metacot_jax.metacot.trace import Expansion
from metacot_jax.models import ModelConfig, init_params
from metacot_jax.models import sampling
from metacot_jax.models.transformer import forward
from metacot_jax.search import greedy, mcts, step_mdp, step_parser
from metacot_jax.search.mcts import MCTSConfig
from metacot_jax.search.step_mdp import SearchConfig
from metacot_jax.tasks import countdown, game24
from metacot_jax.tasks.countdown import Countdown
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step, train
from metacot_jax.train.alphazero import (alphazero_loss, alphazero_step, candidate_logprobs,
                                         search_targets)

TOK = Tokenizer()


def _f(*xs) -> tuple[Fraction, ...]:
  return tuple(sorted(Fraction(x) for x in xs))


# ---------------------------------------------------------------------------------------------
# 1. Linearize -> text -> parse gives back the facts of the search.

ROUND_TRIP_PROBLEMS = [game24.make(p) for p in ("4 5 6 10", "1 1 4 6", "3 3 8 8", "2 3 5 12",
                                                "1 2 4 7")] + [
    Countdown.make("1 3 7 25 50", 100), Countdown.make("2 3 9", 15)]


def _check_round_trip(problem, expansions, path, value_digits):
  lines = trace.linearize(problem, expansions, path, value_digits=value_digits)
  text = trace.trace_text(lines)
  facts = trace.parse(problem, text)
  assert facts.errors == (), (text, facts.errors)
  assert facts.states == (_f(*problem.numbers),) + tuple(tuple(sorted(e.child))
                                                          for e in expansions)
  assert facts.steps == len(expansions)
  n_back = sum(l.startswith(trace.BACK) for l in text.splitlines())
  assert facts.backtracks == n_back == sum(l.tag == trace.BACK_TAG for l in lines)
  assert facts.reached_goal
  assert facts.answer == lines[-1].text and problem.verify(facts.answer).ok
  # every line but the answer is either a backtrack or one expansion, in order
  steps = [l for l in lines if l.tag in (trace.ON_PATH, trace.OFF_PATH)]
  assert len(steps) == len(expansions)
  on_path = {i for i, l in enumerate(steps) if l.tag == trace.ON_PATH}
  assert on_path == set(path)
  if value_digits:
    for l, e in zip(steps, expansions):
      assert l.text == f"{e.step} v{min(9, int(e.value * 10))}"
  else:
    assert [l.text for l in steps] == [e.step for e in expansions]
  return facts


@pytest.mark.parametrize("value_digits", [False, True])
def test_symbolic_traces_round_trip_through_parse(value_digits):
  found = backtracked = 0
  for p_index, problem in enumerate(ROUND_TRIP_PROBLEMS):
    for seed in range(3):
      rng = np.random.default_rng(100 * p_index + seed)
      runs = [symbolic.dfs(problem, rng, heuristic=h, max_children=3)
              for h in symbolic.HEURISTICS]
      runs += [symbolic.dfs(problem, rng), symbolic.bfs(problem, rng),
               symbolic.bfs(problem, rng, beam=3, branch=2, heuristic="closest"),
               symbolic.astar(problem, rng), symbolic.astar(problem, rng, heuristic="random")]
      for run in runs:
        if run is None:
          continue
        expansions, path = run
        assert all(e.value is None for e in expansions)  # symbolic searches carry no value
        if value_digits:
          vals = rng.random(len(expansions))
          vals[0] = 1.0  # the top digit is 9, never 10
          expansions = [dataclasses.replace(e, value=float(v)) for e, v in zip(expansions, vals)]
        facts = _check_round_trip(problem, expansions, path, value_digits)
        found += 1
        backtracked += facts.backtracks > 0
  assert found >= 30 and backtracked >= 10, (found, backtracked)  # the check has teeth


@pytest.mark.parametrize("search", [symbolic.dfs, symbolic.bfs, symbolic.astar])
def test_symbolic_searches_reject_an_unknown_heuristic(search):
  with pytest.raises(ValueError, match=r"heuristic must be one of \('random', 'closest', "
                     r"'value'\), got 'nearest'"):
    search(game24.make("4 5 6 10"), np.random.default_rng(0), heuristic="nearest")


def test_bfs_levels_hold_at_most_beam_states_of_at_most_branch_children_each():
  problem = game24.make("1 1 1 1")  # unsolvable: every level is searched to the end
  assert symbolic.bfs(problem, np.random.default_rng(0), beam=2, branch=3) is None
  expansions, _ = symbolic.bfs(game24.make("4 5 6 10"), np.random.default_rng(0), beam=2,
                               branch=3)
  parents = [e.parent for e in expansions]
  by_depth = {}
  for parent in dict.fromkeys(parents):
    by_depth.setdefault(len(parent), []).append(parent)
  assert len(by_depth[4]) == 1 and all(len(v) <= 2 for v in by_depth.values())
  assert all(parents.count(p) <= 3 for p in set(parents))


def test_astar_opens_the_least_cost_frontier_state_across_the_tree():
  """f = g + h ranks states by the heuristic's cost alone (every solution takes the same
  steps): with a noiseless value, every state A* opens is solvable until the goal, and with
  noise it jumps between branches, opening a state other than the last one written."""
  problems = [game24.make(p) for p in ("4 5 6 10", "1 1 4 6", "2 3 5 12", "1 2 4 7")]
  for problem in problems:
    expansions, path = symbolic.astar(problem, np.random.default_rng(0), noise_scale=0.0)
    assert path == list(range(len(expansions))) == list(range(3))  # straight down
    assert all(countdown.is_solvable(e.child, problem.target) for e in expansions)
  jumps = 0
  for seed in range(10):
    found = symbolic.astar(game24.make("4 5 6 10"), np.random.default_rng(seed), noise_scale=1.0)
    if found is not None:
      expansions, _ = found
      # a jump: a state is opened that is not the child of the line just written
      jumps += sum(b.parent != a.child and b.parent not in [e.parent for e in expansions[:i]]
                   for i, (a, b) in enumerate(zip(expansions, expansions[1:]), 1))
  assert jumps > 0
  assert symbolic.astar(game24.make("1 1 1 1"), np.random.default_rng(0)) is None  # unsolvable
  # two numbers: the finishing step at once, whatever the heuristic; at most max_expansions
  for seed in range(20):
    assert symbolic.astar(Countdown.make("2 3", 6), np.random.default_rng(seed),
                          heuristic="random")[0][0].step == "3 * 2 = 6 (left: 6)"
  for seed in range(20):
    found = symbolic.astar(game24.make("4 5 6 10"), np.random.default_rng(seed),
                           heuristic="random", max_expansions=3)
    assert found is None or len(found[0]) <= 3


def test_round0_symbolic_traces_parse_to_the_goal():
  problems = ROUND_TRIP_PROBLEMS[:4]
  for mix in ({"bfs_fraction": 0.5}, {"astar_fraction": 0.5},
              {"bfs_fraction": 0.3, "astar_fraction": 0.7}):
    out = round0.symbolic_traces(problems, 3, seed=1, **mix)
    assert len(out) >= 6
    for problem, lines in out:
      facts = trace.parse(problem, trace.trace_text(lines))
      assert facts.errors == () and facts.reached_goal and problem.verify(facts.answer).ok
  # with no BFS or A* share, the traces are DFS's, drawn from the stream as before the mix
  rng, by_hand = np.random.default_rng(1), []
  for problem in problems:
    for _ in range(3):
      noise = float(rng.choice((0.3, 0.6, 1.0)))
      rng.random()  # the draw that picks the search
      found = symbolic.dfs(problem, rng, max_children=3, noise_scale=noise)
      if found is not None:
        by_hand.append((problem, trace.linearize(problem, *found)))
  assert round0.symbolic_traces(problems, 3, seed=1) == by_hand
  for bad in ((0.7, 0.5), (-0.1, 0.0), (0.0, 1.5), (True, 0.0)):
    with pytest.raises(ValueError, match="shares of BFS and A. traces"):
      round0.symbolic_traces(problems, 1, bfs_fraction=bad[0], astar_fraction=bad[1])


def test_dfs_noise_sets_how_often_symbolic_traces_backtrack():
  problems = ROUND_TRIP_PROBLEMS
  def backtracks(scales):
    out = round0.symbolic_traces(problems, 4, seed=2, noise_scales=scales)
    return [trace.parse(p, trace.trace_text(lines)).backtracks for p, lines in out], len(out)
  clean, found = backtracks((0.0,))
  assert found == 4 * len(problems) and not any(clean)  # the solver's value: straight there
  noisy, _ = backtracks((1.0, 2.0))
  assert np.mean(noisy) > 0.5, noisy
  for bad in ((), (0.3, -0.1), (float("nan"),), ("a",), (True,)):
    with pytest.raises(ValueError, match="DFS noise scales"):
      round0.symbolic_traces(problems, 1, noise_scales=bad)


def test_linearize_rejects_a_path_that_is_not_a_solution():
  problem = game24.make("4 5 6 10")
  e = Expansion(_f(4, 5, 6, 10), "5 + 4 = 9 (left: 6 9 10)", _f(6, 9, 10))
  with pytest.raises(ValueError, match="not a legal solution"):
    trace.linearize(problem, [e], [0])


def test_parse_reports_illegal_steps_and_unknown_backtracks():
  problem = game24.make("4 5 6 10")
  text = ("5 + 4 = 10 (left: 6 10 10)\n"  # wrong arithmetic
          "5 + 4 = 9 (left: 6 9 10)\n"
          "back to 1 2 3\n"  # never visited
          "back to 4 5 6 10\n"  # fine: the initial state
          "back to 4 x\n"  # not a state at all
          "7 + 4 = 11 (left: 5 6 11)\n"  # 7 is not available
          "hello\n"
          "Answer: (6 * 5) - (10 - 4) = 24\n"
          "5 + 4 = 10 (left: 6 10 10)\n")  # after the answer: ignored
  facts = trace.parse(problem, text)
  assert facts.steps == 4
  assert facts.backtracks == 2
  assert facts.states == (_f(4, 5, 6, 10), _f(6, 9, 10))
  assert len(facts.errors) == 5, facts.errors
  assert "not 10" in facts.errors[0]
  assert "unvisited" in facts.errors[1] and "1 2 3" in facts.errors[1]
  assert "bad backtrack" in facts.errors[2]
  assert "not available" in facts.errors[3]
  assert "not a step" in facts.errors[4]
  assert facts.first_error_kind == countdown.WRONG_RESULT
  assert facts.answer == "Answer: (6 * 5) - (10 - 4) = 24"
  assert not facts.reached_goal
  # value digits are stripped before checking; a wrong final number is no goal
  facts = trace.parse(problem, "10 - 4 = 6 (left: 5 6 6) v3\n6 * 5 = 30 (left: 6 30) v9\n"
                      "30 - 6 = 24 (left: 24) v9\n")
  assert facts.errors == () and facts.reached_goal and facts.steps == 3 and facts.answer == ""
  assert facts.first_error_kind == ""
  facts = trace.parse(problem, "10 - 4 = 6 (left: 5 6 6)\n6 * 5 = 30 (left: 6 30)\n"
                      "30 + 6 = 36 (left: 36)\n")
  assert facts.errors == () and not facts.reached_goal


def test_parse_tells_whether_the_first_error_is_at_a_backtrack():
  problem = game24.make("4 5 6 10")
  dead_end = "5 + 4 = 9 (left: 6 9 10)\n10 - 9 = 1 (left: 1 6)\n"
  cases = {
      "": False,  # no error
      "5 + 4 = 10 (left: 6 10 10)\n": False,  # wrong before any backtrack
      dead_end + "back to 6 9 10\n10 - 6 = 3 (left: 3 9)\n": True,  # the step after one
      dead_end + "back to 6 9 10\n10 - 6 = 4 (left: 6 9)\n": True,  # left wrong after one
      dead_end + "back to 1 2 3\n": True,  # to a state never visited
      dead_end + "back to 6 9 10\n10 - 6 = 4 (left: 4 9)\n9 * 4 = 35 (left: 35)\n": False,
      "5 + 4 = 10 (left: 6 10 10)\nback to 4 5 6 10\n6 - 5 = 2 (left: 2 4 10)\n": False,
  }
  for text, expected in cases.items():
    facts = trace.parse(problem, text)
    assert facts.first_error_at_backtrack is expected, text
    assert not expected or facts.errors


def test_parse_names_the_kind_of_the_first_error():
  problem = game24.make("4 5 6 10")
  dead_end = "5 + 4 = 9 (left: 6 9 10)\n10 - 9 = 1 (left: 1 6)\n"
  cases = {
      dead_end: "",
      dead_end + "back to 6 9 10\n10 - 6 = 4 (left: 6 9)\n": countdown.WRONG_LEFT,
      dead_end + "back to 6 9 10\n10 - 5 = 5 (left: 5 9)\n": countdown.UNAVAILABLE,
      dead_end + "back to 6 9 11\n10 - 6 = 4 (left: 4 9)\n": trace.UNVISITED_BACKTRACK,
      dead_end + "back to 6 x\n": countdown.MALFORMED,
      "6 * 4 = 25 (left: 5 10 25)\nback to 1 2\n": countdown.WRONG_RESULT,  # the first only
      "hello\n": countdown.MALFORMED,
      dead_end + "6 - 1 = 5 (left: 5)\n": "",  # a legal dead end
      dead_end + "6 - 1 = 5 (left: 5)\n\n24\n": trace.PAST_LAST_NUMBER,  # a dead end, no back
      dead_end + "6 - 1 = 5 (left: 5)\n5 + 5 = 10 (left: 10)\n": trace.PAST_LAST_NUMBER,
      dead_end + "6 - 1 = 5 (left: 5)\nback to 1 6\n6 - 1 = 5 (left: 5)\n": "",
  }
  for text, kind in cases.items():
    facts = trace.parse(problem, text)
    assert facts.first_error_kind == kind, (text, facts.errors)
    assert bool(facts.errors) == bool(kind)
  assert set(trace.ERROR_KINDS) == set(countdown.STEP_ERROR_KINDS) | {
      trace.UNVISITED_BACKTRACK, trace.PAST_LAST_NUMBER}


def test_parse_leaves_the_line_a_length_limit_cut_unjudged():
  problem = game24.make("4 5 6 10")
  text = "5 + 4 = 9 (left: 6 9 10)\n10 - 9 = "
  assert trace.parse(problem, text).first_error_kind == countdown.MALFORMED
  facts = trace.parse(problem, text, cut_off=True)
  assert (facts.errors, facts.steps) == ((), 1)
  # a finished last line is judged, and an answer line is read, cut off or not
  facts = trace.parse(problem, "5 + 4 = 10 (left: 6 10 10)\n", cut_off=True)
  assert facts.first_error_kind == countdown.WRONG_RESULT
  facts = trace.parse(problem, "10 - 4 = 6 (left: 5 6 6)\nAnswer: (6 * 5) - (10 - 4) = 24",
                      cut_off=True)
  assert facts.answer == "Answer: (6 * 5) - (10 - 4) = 24" and facts.steps == 1


_FRAGMENTS = ["back to ", "4", "5", "6", "10", "1/0", "-3", " + ", " - ", " * ", " / ", " = ",
              " (left: ", ")", "\n", " ", "Answer: ", " v7", "8/3", "x", "\r", "\u2028"]


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(), st.lists(st.sampled_from(_FRAGMENTS), max_size=40).map("".join)))
def test_parse_never_raises(text):
  problem = game24.make("4 5 6 10")
  facts = trace.parse(problem, text)
  assert facts.states[0] == _f(4, 5, 6, 10)
  assert len(facts.states) <= facts.steps + 1
  assert facts.steps + facts.backtracks <= len(text.splitlines())
  assert all(isinstance(e, str) for e in facts.errors)
  assert facts.first_error_kind in (trace.ERROR_KINDS if facts.errors else ("",))


# ---------------------------------------------------------------------------------------------
# 2. Loss masks of the three variants, by hand, down to tokens.

HAND_PROBLEM = game24.make("4 5 6 10")
HAND_EXPANSIONS = [
    Expansion(_f(4, 5, 6, 10), "5 + 4 = 9 (left: 6 9 10)", _f(6, 9, 10)),
    Expansion(_f(6, 9, 10), "10 - 9 = 1 (left: 1 6)", _f(1, 6)),
    Expansion(_f(1, 6), "6 - 1 = 5 (left: 5)", _f(5)),  # a leaf that misses: dead end
    Expansion(_f(4, 5, 6, 10), "10 - 4 = 6 (left: 5 6 6)", _f(5, 6, 6)),
    Expansion(_f(5, 6, 6), "6 * 5 = 30 (left: 6 30)", _f(6, 30)),
    Expansion(_f(6, 30), "30 - 6 = 24 (left: 24)", _f(24)),
]
HAND_PATH = [3, 4, 5]
HAND_LINES = [
    ("5 + 4 = 9 (left: 6 9 10)", trace.OFF_PATH),
    ("10 - 9 = 1 (left: 1 6)", trace.OFF_PATH),
    ("6 - 1 = 5 (left: 5)", trace.OFF_PATH),
    ("back to 4 5 6 10", trace.BACK_TAG),
    ("10 - 4 = 6 (left: 5 6 6)", trace.ON_PATH),
    ("6 * 5 = 30 (left: 6 30)", trace.ON_PATH),
    ("30 - 6 = 24 (left: 24)", trace.ON_PATH),
    ("Answer: (6 * 5) - (10 - 4) = 24", trace.ANSWER),
]
HAND_WEIGHTS = {
    "all": [1, 1, 1, 1, 1, 1, 1, 1],
    "z_only": [1, 1, 1, 1, 1, 1, 1, 0],
    "mask_off_path": [0, 0, 0, 1, 1, 1, 1, 1],
}


def test_hand_trace_lines_and_facts():
  lines = trace.linearize(HAND_PROBLEM, HAND_EXPANSIONS, HAND_PATH)
  assert [(l.text, l.tag) for l in lines] == HAND_LINES
  facts = trace.parse(HAND_PROBLEM, trace.trace_text(lines))
  assert (facts.steps, facts.backtracks, facts.errors, facts.reached_goal) == (6, 1, (), True)


@pytest.mark.parametrize("variant", trace.LOSS_VARIANTS)
def test_loss_masks_by_hand(variant):
  lines = trace.linearize(HAND_PROBLEM, HAND_EXPANSIONS, HAND_PATH)
  assert trace.loss_weights(lines, variant) == HAND_WEIGHTS[variant]

  segments = round0.trace_segments(HAND_PROBLEM, lines, variant)
  assert segments[0] == Segment(HAND_PROBLEM.prompt(), 0.0)
  assert [s.text for s in segments[1:]] == [t + "\n" for t, _ in HAND_LINES]
  assert all(s.value is None for s in segments)
  arrays, dropped = examples.encode(TOK, [segments], 128)
  assert dropped == 0
  tokens, mask = arrays["tokens"][0], arrays["loss_mask"][0]

  # Expected mask: 0 on <bos> and the prompt, each line's weight on each of its tokens,
  # <eos> with the last line's weight, 0 on padding.
  prompt_len = 1 + len(TOK.encode(HAND_PROBLEM.prompt()))
  want = [0.0] * prompt_len
  for (text, _), w in zip(HAND_LINES, HAND_WEIGHTS[variant]):
    want += [float(w)] * len(TOK.encode(text + "\n"))
  want.append(float(HAND_WEIGHTS[variant][-1]))
  n = len(want)
  np.testing.assert_array_equal(mask[:n], want)
  np.testing.assert_array_equal(mask[n:], 0.0)
  # the tokens are those of the whole text: segment boundaries do not change tokenization
  full = TOK.encode(HAND_PROBLEM.prompt() + trace.trace_text(lines), bos=True, eos=True)
  assert len(full) == n
  np.testing.assert_array_equal(tokens[:n], full)
  np.testing.assert_array_equal(tokens[n:], TOK.pad_id)
  # masked tokens are exactly those of the masked lines (and eos when the last is masked)
  masked_text = "".join(t + "\n" for (t, _), w in zip(HAND_LINES, HAND_WEIGHTS[variant])
                        if w == 0)
  n_masked = int(np.sum(mask[prompt_len:n] == 0))
  assert n_masked == len(TOK.encode(masked_text)) + (HAND_WEIGHTS[variant][-1] == 0)
  assert mask[n - 1] == HAND_WEIGHTS[variant][-1]
  assert not arrays["value_weights"].any()


def test_unknown_loss_variant_raises():
  lines = trace.linearize(HAND_PROBLEM, HAND_EXPANSIONS, HAND_PATH)
  with pytest.raises(ValueError, match="unknown loss variant"):
    trace.loss_weights(lines, "answer_only")
  with pytest.raises(ValueError, match="unknown loss variant"):
    round0.trace_segments(HAND_PROBLEM, lines, "")


# ---------------------------------------------------------------------------------------------
# 3. PRM walks: labels are exact solvability; value positions sit on newlines.

WALK_PROBLEMS = [game24.make(p) for p in ("4 5 6 10", "1 1 4 6", "3 3 8 8", "1 1 1 1")] + [
    Countdown.make("2 3 9", 15)]


def test_walk_labels_are_solvability_after_each_step():
  walks = examples.walk_examples(WALK_PROBLEMS, 4, seed=3)
  assert len(walks) == 4 * len(WALK_PROBLEMS)
  labels = []
  for i, segments in enumerate(walks):
    problem = WALK_PROBLEMS[i // 4]
    assert segments[0] == Segment(problem.prompt(), 0.0)
    state = problem.initial_state()
    assert len(segments) == len(problem.numbers)  # prompt + (n - 1) steps, down to one number
    for seg in segments[1:]:
      assert seg.loss == 0.0 and seg.text.endswith("\n")
      check = countdown.check_step(state, seg.text.rstrip("\n"))
      assert check.ok, (seg.text, check.reason)
      state = check.state
      assert seg.value == float(countdown.is_solvable(state, problem.target))
      labels.append(seg.value)
    assert len(state) == 1
  assert 0 < np.mean(labels) < 1  # both labels occur
  assert examples.walk_examples(WALK_PROBLEMS, 4, seed=3) == walks  # seeded


def test_arithmetic_walks_put_loss_on_results_only():
  plain = examples.walk_examples(WALK_PROBLEMS, 2, seed=5)
  split = examples.walk_examples(WALK_PROBLEMS, 2, seed=5, arithmetic_loss=0.5)
  for a, b in zip(plain, split):
    assert "".join(s.text for s in a) == "".join(s.text for s in b)  # the same walk
    assert b[-1] == Segment("", 0.0)  # no loss on <eos>: walks never choose to stop
    for step, (lhs, rhs) in zip(a[1:], zip(b[1:-1:2], b[2:-1:2])):
      assert lhs.text.endswith(" = ") and lhs.loss == 0.0 and lhs.value is None
      assert rhs.text == step.text[len(lhs.text):] and rhs.loss == 0.5
      assert rhs.value == step.value  # the PRM label stays at the end of the line
  arrays, _ = examples.encode(TOK, split, 96)
  row, mask = arrays["tokens"][0], arrays["loss_mask"][0]
  scored = TOK.decode(row[mask > 0], stop_at_eos=False)
  assert "=" not in scored and "(left:" in scored  # results and states, never the choice
  unlabelled = examples.walk_examples(WALK_PROBLEMS, 1, seed=5, arithmetic_loss=1.0,
                                      value_labels=False)
  assert all(s.value is None for walk in unlabelled for s in walk)


def test_unsolvable_puzzles_complete_the_multisets():
  unsolvable = game24.unsolvable_puzzles()
  assert len(unsolvable) == 1820 - 1362
  # fixed facts, not the solver that builds the list: four 1s make at most 4, (1, 1, 1, 2) at
  # most 6; (10 - 4) * 5 - 6 = 24, and (3, 3, 8, 8) and (1, 5, 5, 5) reach 24 only through
  # fractions: 8 / (3 - 8 / 3), 5 * (5 - 1 / 5)
  assert (1, 1, 1, 1) in unsolvable and (1, 1, 1, 2) in unsolvable
  for p in [(4, 5, 6, 10), (3, 3, 8, 8), (1, 5, 5, 5)]:
    assert p not in unsolvable, p


def test_encode_value_positions_point_at_newlines():
  walks = examples.walk_examples(WALK_PROBLEMS, 2, seed=0)
  cots = examples.cot_examples(WALK_PROBLEMS[:3], 1)
  data = walks + cots
  arrays, dropped = examples.encode(TOK, data, 96)
  assert dropped == 0
  chex.assert_shape(arrays["tokens"], (len(data), 96))
  chex.assert_shape([arrays["value_positions"], arrays["value_labels"],
                     arrays["value_weights"]], (len(data), 8))
  for i, segments in enumerate(data):
    labelled = [(k, s) for k, s in enumerate(segments) if s.value is not None]
    m = len(labelled)
    assert m == (len(segments) - 1 if i < len(walks) else len(segments) - 2)  # cot: not the answer
    pos = arrays["value_positions"][i, :m]
    tokens = arrays["tokens"][i]
    np.testing.assert_array_equal(tokens[pos], TOK.newline_id)
    np.testing.assert_array_equal(arrays["value_labels"][i, :m], [s.value for _, s in labelled])
    np.testing.assert_array_equal(arrays["value_weights"][i], [1.0] * m + [0.0] * (8 - m))
    # the position is the last token of its own line: the prefix up to it is that line's text
    for (k, _), p in zip(labelled, pos):
      want = "".join(s.text for s in segments[:k + 1])
      assert TOK.decode(tokens[:p + 1]) == want


def test_encode_drops_and_counts_too_long_examples():
  data = examples.walk_examples(WALK_PROBLEMS, 3, seed=1)
  lengths = np.array([1 + sum(len(TOK.encode(s.text)) for s in ex) + 1 for ex in data])
  limit = int(np.median(lengths))
  arrays, dropped = examples.encode(TOK, data, limit)
  assert dropped == int(np.sum(lengths > limit)) > 0
  assert len(arrays["tokens"]) == int(np.sum(lengths <= limit))
  kept = [ex for ex, n in zip(data, lengths) if n <= limit]
  for row, ex in zip(arrays["tokens"], kept):
    text = "".join(s.text for s in ex)
    np.testing.assert_array_equal(row[:len(TOK.encode(text)) + 2],
                                  TOK.encode(text, bos=True, eos=True))
  # too many labels counts as too long; three numbers give two labels
  arrays, dropped = examples.encode(TOK, data, 96, max_values=2)
  assert dropped == 12 and len(arrays["tokens"]) == 3
  with pytest.raises(ValueError, match="longer than"):
    examples.encode(TOK, data, 10)


def _unpacked(packed, r, seg):
  """(tokens, loss mask, value positions, labels) of example `seg` of packed row `r`."""
  where = np.flatnonzero(packed["segments"][r] == seg)
  start, end = where[0], where[-1] + 1
  np.testing.assert_array_equal(where, np.arange(start, end))  # one contiguous run
  np.testing.assert_array_equal(packed["positions"][r, start:end], np.arange(end - start))
  used = packed["value_weights"][r] > 0
  mine = used & (packed["value_positions"][r] >= start) & (packed["value_positions"][r] < end)
  return (packed["tokens"][r, start:end], packed["loss_mask"][r, start:end],
          packed["value_positions"][r, mine] - start, packed["value_labels"][r, mine])


def test_pack_keeps_every_example_whole_and_fills_rows():
  data = examples.walk_examples(WALK_PROBLEMS, 3, seed=2, arithmetic_loss=1.0)
  data += examples.cot_examples(WALK_PROBLEMS[:3], 2)
  arrays, _ = examples.encode(TOK, data, 96)
  packed = examples.pack(arrays)
  n_rows = len(packed["tokens"])
  assert n_rows < len(arrays["tokens"]) and examples.fill(packed) > examples.fill(arrays)
  chex.assert_shape([packed["tokens"], packed["loss_mask"], packed["positions"],
                     packed["segments"]], (n_rows, 96))
  lengths = np.sum(arrays["tokens"] != TOK.pad_id, 1)
  # every example is in exactly one row, as itself: tokens, loss mask and PRM labels
  unused = {tuple(arrays["tokens"][i, :lengths[i]]): i for i in range(len(lengths))}
  assert len(unused) == len(lengths)  # distinct examples, so each is found once
  for r in range(n_rows):
    for seg in range(1, packed["segments"][r].max() + 1):
      tokens, mask, value_pos, value_lab = _unpacked(packed, r, seg)
      i = unused.pop(tuple(tokens))
      np.testing.assert_array_equal(mask, arrays["loss_mask"][i, :lengths[i]])
      m = int(arrays["value_weights"][i].sum())
      np.testing.assert_array_equal(value_pos, arrays["value_positions"][i, :m])
      np.testing.assert_array_equal(value_lab, arrays["value_labels"][i, :m])
    pad = packed["segments"][r] == 0
    assert not packed["tokens"][r, pad].any() and not packed["loss_mask"][r, pad].any()
  assert not unused
  assert packed["value_weights"].sum() == arrays["value_weights"].sum()


def test_pack_best_fit_decreasing_by_hand():
  # lengths 5, 3, 2, 6 in rows of 8: 6 opens row 0, 5 row 1, 3 fills row 1, 2 fills row 0
  tokens = np.zeros((4, 8), np.int32)
  for i, n in enumerate((5, 3, 2, 6)):
    tokens[i, :n] = 10 + i
  zeros = np.zeros((4, 2))
  arrays = {"tokens": tokens, "loss_mask": (tokens > 0).astype(np.float32),
            "value_positions": zeros.astype(np.int32), "value_labels": zeros,
            "value_weights": zeros}
  packed = examples.pack(arrays)
  np.testing.assert_array_equal(packed["tokens"], [[13] * 6 + [12] * 2, [10] * 5 + [11] * 3])
  np.testing.assert_array_equal(packed["segments"], [[1] * 6 + [2] * 2, [1] * 5 + [2] * 3])
  np.testing.assert_array_equal(packed["positions"], [[0, 1, 2, 3, 4, 5, 0, 1],
                                                      [0, 1, 2, 3, 4, 0, 1, 2]])
  assert examples.fill(packed) == 1.0 and examples.fill(arrays) == 0.5
  # best fit, not first fit: in rows of 7, lengths 5, 3, 3, 1 give [5] and [3, 3, 1] (the 1
  # goes to the fullest row it fits), where first fit would give [5, 1] and [3, 3]
  tokens = np.zeros((4, 7), np.int32)
  for i, n in enumerate((5, 3, 3, 1)):
    tokens[i, :n] = 10 + i
  packed = examples.pack({**arrays, "tokens": tokens, "loss_mask": (tokens > 0) * 1.0})
  np.testing.assert_array_equal(packed["tokens"], [[10] * 5 + [0] * 2, [11] * 3 + [12] * 3 + [13]])
  with pytest.raises(ValueError, match="pack takes encode's arrays"):
    examples.pack({**arrays, "prefix": tokens})


# ---------------------------------------------------------------------------------------------
# 4. AlphaZero targets. A tiny model memorizes Game of 24 solutions; mctx searches with it
# (the fixture is shared with the traces-from-search test below).

PUZZLES = ("4 5 6 10", "1 1 4 6", "3 3 8 8", "2 3 5 12")
MODEL = ModelConfig(vocab_size=TOK.vocab_size, max_len=80, d_model=64, num_layers=1,
                    num_heads=4, d_ff=256)
SEARCH = SearchConfig(num_candidates=3, max_step_tokens=20)
MCTS = MCTSConfig(num_simulations=8, max_num_considered_actions=3)
FMT = step_parser.StepFormat.from_tokenizer(TOK, SEARCH.max_numbers)
TRAIN_STEPS = 120
SEARCH_SEED = 0


@functools.cache
def _searched():
  """(problems, params, expanded roots, mctx output, AlphaZero batch), all on the host."""
  problems = [game24.make(p) for p in PUZZLES]
  pairs = cot_pairs(problems, 2)
  longest = max(len(TOK.encode(p, bos=True) + TOK.encode(c, eos=True)) for p, c in pairs)
  data = sft_arrays(TOK, pairs, -(-longest // 8) * 8)
  opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=10, total_steps=TRAIN_STEPS)
  params = jax.jit(init_params, static_argnums=0)(MODEL, jax.random.PRNGKey(0))
  state = create_train_state(None, MODEL, opt, params=params)
  state, _ = train(state, data, functools.partial(sft_step, config=MODEL),
                   num_steps=TRAIN_STEPS, batch_size=len(pairs), seed=0)
  params = state.params
  roots = step_mdp.root_nodes(problems, TOK, MODEL, SEARCH)
  # the key search_traces uses for its first batch, so that its search is this one
  key = jax.random.fold_in(jax.random.PRNGKey(SEARCH_SEED), 0)
  roots, out = jax.device_get(mcts.tree_search(params, key, roots, model=MODEL, fmt=FMT,
                                               newline_id=TOK.newline_id, search=SEARCH,
                                               cfg=MCTS))
  # the value target: the search's own estimate at the root, in [0, 1]
  outcome = np.clip(np.asarray(out.search_tree.node_values[:, 0], np.float32), 0.0, 1.0)
  batch = {"prefix": roots.tokens, "prefix_len": roots.length, "candidates": roots.cand_tokens,
           "cand_len": roots.cand_lengths, "cand_valid": roots.cand_valid,
           "weights": np.asarray(out.action_weights, np.float32),
           "outcome": outcome}
  return problems, params, roots, out, batch


@pytest.fixture(scope="module")
def searched():
  return _searched()


def test_search_targets_are_the_search_weights_and_values(searched):
  _, _, roots, out, batch = searched
  solved = np.array([True, False, True, False])
  by_outcome = search_targets(roots, out, solved, "outcome")
  by_q = search_targets(roots, out, solved, "q")
  for key in ("prefix_len", "candidates", "cand_len", "cand_valid", "weights"):
    np.testing.assert_array_equal(by_outcome[key], batch[key])
  # prefixes are cut to the longest root: what is cut off is padding
  width = by_outcome["prefix"].shape[1]
  assert width == batch["prefix_len"].max() < MODEL.max_len
  np.testing.assert_array_equal(by_outcome["prefix"], batch["prefix"][:, :width])
  assert not batch["prefix"][:, width:].any()
  np.testing.assert_array_equal(by_outcome["outcome"], [1.0, 0.0, 1.0, 0.0])
  np.testing.assert_allclose(by_q["outcome"], batch["outcome"])  # the root's Q-value
  with pytest.raises(ValueError, match="value_target"):
    search_targets(roots, out, solved, "reward")


def test_search_q_targets_are_clipped_to_0_1():
  """mctx's root values can leave [0, 1] (the fixture's never do): the 'q' target clips them,
  as the value loss wants a probability."""
  b, k, s = 3, 2, 4
  roots = types.SimpleNamespace(tokens=np.ones((b, 8), np.int32), length=np.array([5, 6, 4]),
                                cand_tokens=np.ones((b, k, s), np.int32),
                                cand_lengths=np.full((b, k), s), cand_valid=np.ones((b, k), bool))
  node_values = np.array([[-0.2, 0.7], [0.5, 0.1], [1.3, 0.4]], np.float32)  # root is node 0
  out = types.SimpleNamespace(search_tree=types.SimpleNamespace(node_values=node_values),
                              action_weights=np.full((b, k), 0.5, np.float32))
  targets = search_targets(roots, out, np.zeros(b, bool), "q")
  np.testing.assert_array_equal(targets["outcome"], [0.0, 0.5, 1.0])


def test_search_batch_is_usable(searched):
  _, _, roots, out, batch = searched
  b, k, s = len(PUZZLES), SEARCH.num_candidates, SEARCH.max_step_tokens
  chex.assert_shape(batch["prefix"], (b, MODEL.max_len))
  chex.assert_shape(batch["candidates"], (b, k, s))
  chex.assert_shape([batch["cand_len"], batch["cand_valid"], batch["weights"]], (b, k))
  np.testing.assert_allclose(batch["weights"].sum(1), 1.0, rtol=1e-5)
  some_valid = batch["cand_valid"].any(1)[:, None]
  assert np.all(batch["weights"][some_valid & ~batch["cand_valid"]] == 0.0)
  assert np.all(batch["prefix_len"][:, None] + batch["cand_len"] <= MODEL.max_len)
  # at least one root has two distinct valid candidates: the policy targets have a choice
  assert (batch["cand_valid"].sum(1) >= 2).any(), batch["cand_valid"]
  assert np.all((batch["outcome"] >= 0) & (batch["outcome"] <= 1))
  assert (out.search_tree.embeddings.score == 1.0).any(1).sum() >= 2  # solved in the tree


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def _hand_candidate_logprobs(params, batch, pairs):
  """Sum of candidate log-probs for (b, k) pairs, by hand: each row is prefix + candidate
  alone, padded to a common width other than the model's max_len; a float64 log-softmax."""
  seqs = [np.concatenate([batch["prefix"][b, :batch["prefix_len"][b]],
                          batch["candidates"][b, k, :batch["cand_len"][b, k]]]) for b, k in pairs]
  width = max(len(x) for x in seqs) + 3
  tokens = np.zeros((len(seqs), width), np.int32)
  for i, x in enumerate(seqs):
    tokens[i, :len(x)] = x
  logits, _, _ = jax.jit(forward, static_argnums=1)(params, MODEL, tokens)
  out = []
  for i, (b, k) in enumerate(pairs):
    logp = _log_softmax(logits[i])
    plen, clen = int(batch["prefix_len"][b]), int(batch["cand_len"][b, k])
    out.append(sum(logp[t - 1, tokens[i, t]] for t in range(plen, plen + clen)))
  return np.array(out)


def _both_logprobs(params, prefix, prefix_len, candidates, cand_len):
  """(sum, per-token mean) candidate log-probs; one function so that one compile serves all."""
  return (candidate_logprobs(params, MODEL, prefix, prefix_len, candidates, cand_len, mean=False),
          candidate_logprobs(params, MODEL, prefix, prefix_len, candidates, cand_len))


def _model_logprobs(params, batch):
  args = (batch["prefix"], batch["prefix_len"], batch["candidates"], batch["cand_len"])
  return np.asarray(jax.jit(_both_logprobs)(params, *args)[1])


def _masked(logp_BxK, valid_BxK):
  return np.where(valid_BxK, logp_BxK, np.finfo(np.float32).min)


def _kl(w_BxK, log_q_BxK):
  """KL(w || q) per row; 0 log 0 = 0."""
  w = np.asarray(w_BxK, np.float64)
  log_w = np.log(np.where(w > 0, w, 1.0))
  return np.sum(np.where(w > 0, w * (log_w - log_q_BxK), 0.0), -1)


def _loss(params, batch):
  return alphazero_loss(params, batch, MODEL, 0.5)


def _weight_grad(weights, params, batch):
  """Gradient of alphazero_loss w.r.t. the policy target."""
  return jax.grad(lambda w: _loss(params, {**batch, "weights": w})[0])(weights)


class AlphaZeroTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_candidate_logprobs_by_hand(self):
    _, params, _, out, batch = _searched()
    args = (batch["prefix"], batch["prefix_len"], batch["candidates"], batch["cand_len"])
    logp_sum, logp_mean = self.variant(_both_logprobs)(params, *args)
    chex.assert_shape([logp_sum, logp_mean], batch["cand_len"].shape)
    chex.assert_tree_all_finite([logp_sum, logp_mean])
    clen = np.maximum(batch["cand_len"], 1)
    np.testing.assert_allclose(logp_mean, logp_sum / clen, rtol=1e-5)
    valid = batch["cand_valid"]
    pairs = [tuple(x) for x in np.argwhere(valid)[:2]] + [(2, 0), (3, 2)]
    hand = _hand_candidate_logprobs(params, batch, pairs)
    b, k = np.array(pairs).T
    np.testing.assert_allclose(logp_sum[b, k], hand, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(logp_mean[b, k], hand / clen[b, k], rtol=1e-4, atol=1e-4)
    # ... and equal the prior the search used at the root (mctx stores it minus its max)
    prior = out.search_tree.children_prior_logits[:, 0]
    for b in np.nonzero(valid.any(1))[0]:
      v = valid[b]
      np.testing.assert_allclose(prior[b, v], logp_mean[b, v] - logp_mean[b, v].max(),
                                 atol=2e-4)
    assert np.all(np.asarray(logp_sum)[valid] < 0)

  @chex.variants(with_jit=True, without_jit=True)
  def test_choice_only_logprobs_score_the_step_up_to_its_equals_sign(self):
    _, params, _, _, batch = _searched()
    eq = TOK.id_of(" = ")
    fn = self.variant(lambda *a: candidate_logprobs(params, MODEL, *a, mean=False, choice_id=eq))
    choice = fn(batch["prefix"], batch["prefix_len"], batch["candidates"], batch["cand_len"])
    chex.assert_shape(choice, batch["cand_len"].shape)
    # by hand: the same candidates cut after their first ' = ' (all of it if there is none)
    cut = batch["cand_len"].copy()
    for b, k in np.ndindex(cut.shape):
      hits = np.flatnonzero(batch["candidates"][b, k, :cut[b, k]] == eq)
      cut[b, k] = hits[0] + 1 if len(hits) else cut[b, k]
    pairs = [tuple(x) for x in np.argwhere(batch["cand_valid"])[:3]]
    assert all(cut[p] < batch["cand_len"][p] for p in pairs)  # valid steps have an ' = '
    hand = _hand_candidate_logprobs(params, {**batch, "cand_len": cut}, pairs)
    b, k = np.array(pairs).T
    np.testing.assert_allclose(np.asarray(choice)[b, k], hand, rtol=1e-4, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_trimmed_prefixes_score_like_full_width_ones(self):
    _, params, roots, out, batch = _searched()
    trimmed = search_targets(roots, out, np.zeros(len(PUZZLES), bool))
    trimmed["outcome"] = batch["outcome"]
    assert trimmed["prefix"].shape[1] < batch["prefix"].shape[1]
    np.testing.assert_allclose(self.variant(_both_logprobs)(params, *(trimmed[k] for k in (
        "prefix", "prefix_len", "candidates", "cand_len")))[0], self.variant(_both_logprobs)(
            params, *(batch[k] for k in ("prefix", "prefix_len", "candidates", "cand_len")))[0],
        rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(self.variant(_loss)(params, trimmed)[0],
                               self.variant(_loss)(params, batch)[0], rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_alphazero_policy_scores_candidates_as_the_search_s_prior(self):
    """mean=False: the softmax of summed log-probs, as a search with prior='sum' takes them."""
    _, params, _, _, batch = _searched()
    loss_fn = self.variant(lambda p, b: alphazero_loss(p, b, MODEL, 0.5, mean=False))
    _, metrics = loss_fn(params, batch)
    args = (batch["prefix"], batch["prefix_len"], batch["candidates"], batch["cand_len"])
    logp_sum = np.asarray(jax.jit(_both_logprobs)(params, *args)[0])
    log_p = _log_softmax(_masked(logp_sum, batch["cand_valid"]))
    w = batch["weights"].astype(np.float64)
    ce = -np.sum(np.where(w > 0, w * log_p, 0.0), 1)
    np.testing.assert_allclose(metrics["policy_loss"], ce.mean(), rtol=1e-4)
    _, mean_metrics = self.variant(_loss)(params, batch)
    assert abs(float(metrics["policy_loss"]) - float(mean_metrics["policy_loss"])) > 1e-3

  @chex.variants(with_jit=True, without_jit=True)
  def test_alphazero_loss_by_hand(self):
    _, params, roots, _, batch = _searched()
    loss, metrics = self.variant(_loss)(params, batch)
    chex.assert_shape([loss, metrics["policy_loss"], metrics["value_loss"]], ())
    np.testing.assert_allclose(loss, metrics["policy_loss"] + 0.5 * metrics["value_loss"],
                               rtol=1e-6)
    # policy loss: cross-entropy from the weights to softmax over the valid candidates
    log_p = _log_softmax(_masked(_model_logprobs(params, batch), batch["cand_valid"]))
    w = batch["weights"].astype(np.float64)
    ce = -np.sum(np.where(w > 0, w * log_p, 0.0), 1)
    np.testing.assert_allclose(metrics["policy_loss"], ce.mean(), rtol=1e-4)
    # cross-entropy = H(w) + KL(w || p): at least the target's entropy ...
    entropy = -_kl(w, np.zeros_like(w))
    np.testing.assert_allclose(ce, entropy + _kl(w, log_p), rtol=1e-5, atol=1e-6)
    assert np.all(_kl(w, log_p) >= -1e-6)
    # ... which it reaches when the model's distribution is the target
    p = np.exp(log_p)
    _, at_target = self.variant(_loss)(params, {**batch, "weights": p.astype(np.float32)})
    np.testing.assert_allclose(at_target["policy_loss"], np.mean(-_kl(p, np.zeros_like(p))),
                               rtol=1e-4)
    assert float(at_target["policy_loss"]) < float(metrics["policy_loss"])
    # the value term reads the PRM at the end of the prefix: the value the search used
    v = np.asarray(roots.value, np.float64)
    o = batch["outcome"]
    bce = -(o * np.log(v) + (1 - o) * np.log(1 - v))
    np.testing.assert_allclose(metrics["value_loss"], bce.mean(), rtol=1e-4)


def test_policy_target_is_a_stop_gradient(searched):
  """Nothing flows into the search's weights."""
  _, params, _, _, batch = searched
  weights = jnp.asarray(batch["weights"])
  grad_w = jax.jit(_weight_grad)(weights, params, batch)
  chex.assert_shape(grad_w, batch["weights"].shape)
  np.testing.assert_array_equal(grad_w, 0.0)


def test_alphazero_policy_loss_is_minimized_at_the_target(searched):
  """Through alphazero_loss: with the model's own candidate distribution p as the target the
  policy loss is stationary in the params, and any other target w pays KL(w || p) above its
  entropy H(w): cross-entropy is minimized where the model matches the target."""
  _, params, _, _, batch = searched
  valid = batch["cand_valid"]
  log_p = _log_softmax(_masked(_model_logprobs(params, batch), valid))
  p = np.exp(log_p)
  policy = jax.jit(lambda prm, w: _loss(prm, {**batch, "weights": w})[1]["policy_loss"])
  grad_norm = jax.jit(lambda prm, w: optax.global_norm(jax.grad(policy)(prm, w)))
  at_target, at_search = (float(grad_norm(params, w)) for w in (p.astype(np.float32),
                                                                  batch["weights"]))
  assert at_target < 1e-3 * at_search, (at_target, at_search)
  # targets moved off p (on p's support: rows with no valid candidate keep all K)
  support = valid | ~valid.any(1, keepdims=True)
  rng = np.random.default_rng(0)
  for _ in range(3):
    w = np.where(support, p * np.exp(rng.normal(size=p.shape)), 0.0)
    w /= w.sum(1, keepdims=True)
    gap = float(policy(params, w.astype(np.float32))) - np.mean(-_kl(w, np.zeros_like(w)))
    np.testing.assert_allclose(gap, np.mean(_kl(w, log_p)), rtol=1e-3, atol=1e-6)
    assert gap > 1e-3


def test_alphazero_steps_move_the_policy_toward_the_weights(searched):
  _, params, _, _, batch = searched
  rows = batch["cand_valid"].sum(1) >= 2

  def kl_to_weights(p):
    log_q = _log_softmax(_masked(_model_logprobs(p, batch), batch["cand_valid"]))
    return float(_kl(batch["weights"][rows], log_q[rows]).sum())

  opt = OptimizerConfig(learning_rate=1e-3, warmup_steps=0, total_steps=10)
  state = create_train_state(None, MODEL, opt, params=jax.tree.map(jnp.copy, params))
  kl_before = kl_to_weights(state.params)
  assert kl_before > 1e-3  # the search's targets differ from the prior
  history = []
  for _ in range(7):  # metrics are those of the params before each update
    state, metrics = alphazero_step(state, batch, config=MODEL)
    history.append({k: float(v) for k, v in metrics.items()})
  first, last = history[0], history[-1]
  assert last["policy_loss"] < first["policy_loss"] - 1e-3, history
  assert last["value_loss"] < first["value_loss"], history
  assert kl_to_weights(state.params) < kl_before - 1e-3


# ---------------------------------------------------------------------------------------------
# 5. Traces from mctx trees.

N_STATE = 6


def _node_arrays(problem, spec, width=96):
  """A fake one-problem tree: spec rows (parent, step or None, terminal, answered, value)."""
  root_tokens = TOK.encode(problem.prompt(), bos=True)
  toks, states = [root_tokens], [_f(*problem.numbers)]
  parents = [-1]
  terminal, answered, values = [False], [False], [0.5]
  for parent, step, term, ans, value in spec:
    parents.append(parent)
    if parent < 0:  # a slot mctx never filled
      toks.append([]), states.append(()), terminal.append(False), answered.append(False)
      values.append(0.0)
      continue
    if step is None:  # a dead candidate: nothing appended
      toks.append(toks[parent]), states.append(states[parent])
    else:
      check = countdown.check_step(states[parent], step)
      toks.append(toks[parent] + TOK.encode(step + "\n"))
      states.append(tuple(check.state) if check.ok else states[parent])
    terminal.append(term), answered.append(ans), values.append(value)
  n = len(toks)
  state = np.zeros((n, N_STATE, 2), np.int32)
  state[..., 1] = 1
  for i, s in enumerate(states):
    for j, x in enumerate(s):
      state[i, j] = (x.numerator, x.denominator)
  tokens = np.zeros((n, width), np.int32)
  for i, t in enumerate(toks):
    tokens[i, :len(t)] = t
  zeros, k = np.zeros(n, np.int32), 2
  nodes = step_mdp.Node(
      tokens=tokens, length=np.array([len(t) for t in toks], np.int32), state=state,
      count=np.array([len(s) for s in states], np.int32),
      target=np.full(n, problem.target, np.int32), depth=zeros, terminal=np.array(terminal),
      answered=np.array(answered), score=np.zeros(n, np.float32),
      value=np.array(values, np.float32), cand_tokens=np.zeros((n, k, 4), np.int32),
      cand_lengths=np.zeros((n, k), np.int32), cand_valid=np.zeros((n, k), bool),
      cand_state=np.zeros((n, k, N_STATE, 2), np.int32), cand_count=np.zeros((n, k), np.int32),
      nodes=zeros, tokens_generated=zeros, tokens_processed=zeros, lm_calls=zeros)
  return nodes, np.array(parents, np.int32)


FAKE_TREE = [  # node i (1..) made by simulation i
    (0, "5 + 4 = 9 (left: 6 9 10)", False, False, 0.4),  # 1
    (1, None, True, False, 0.0),  # 2: dead candidate
    (0, "10 - 4 = 6 (left: 5 6 6)", False, False, 0.8),  # 3: a backtrack to the root
    (1, "10 - 9 = 1 (left: 1 6)", False, False, 0.1),  # 4: a backtrack to 6 9 10
    (4, "6 - 1 = 5 (left: 5)", True, True, 0.0),  # 5: answered, not the target
    (5, "5 + 5 = 10 (left: 10)", False, False, 0.3),  # 6: below a terminal (mctx goes on)
    (3, "6 * 5 = 30 (left: 6 30)", False, False, 0.9),  # 7: a backtrack to 5 6 6
    (7, "30 - 6 = 24 (left: 24)", True, True, 1.0),  # 8: the goal
    (8, "24 + 1 = 25 (left: 25)", False, False, 0.2),  # 9: below the goal
    (0, "6 + 4 = 10 (left: 5 10 10)", False, False, 0.5),  # 10: after the goal: not in Z
    (-1, None, False, False, 0.0),  # 11: unfilled
]


def test_tree_expansions_replay_the_simulations():
  problem = game24.make("4 5 6 10")
  nodes, parents = _node_arrays(problem, FAKE_TREE)
  expansions, path = from_search.tree_expansions(problem, TOK, nodes, parents)
  kept = [1, 3, 4, 5, 7, 8]
  assert [e.step for e in expansions] == [FAKE_TREE[i - 1][1] for i in kept]
  assert [e.value for e in expansions] == pytest.approx([FAKE_TREE[i - 1][4] for i in kept])
  assert [e.parent for e in expansions] == [_f(4, 5, 6, 10), _f(4, 5, 6, 10), _f(6, 9, 10),
                                            _f(1, 6), _f(5, 6, 6), _f(6, 30)]
  assert [e.child for e in expansions] == [_f(6, 9, 10), _f(5, 6, 6), _f(1, 6), _f(5),
                                           _f(6, 30), _f(24)]
  assert path == [1, 4, 5]
  lines = trace.linearize(problem, expansions, path)
  assert [l.text for l in lines] == [
      "5 + 4 = 9 (left: 6 9 10)", "back to 4 5 6 10", "10 - 4 = 6 (left: 5 6 6)",
      "back to 6 9 10", "10 - 9 = 1 (left: 1 6)", "6 - 1 = 5 (left: 5)", "back to 5 6 6",
      "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)", "Answer: (6 * 5) - (10 - 4) = 24"]
  facts = trace.parse(problem, trace.trace_text(lines))
  assert (facts.steps, facts.backtracks, facts.errors, facts.reached_goal) == (6, 3, (), True)


def test_tree_expansions_in_depth_first_order():
  """The same tree written as a depth-first search: each abandoned branch whole, then the
  path to the goal, with one backtrack where the simulations made three."""
  problem = game24.make("4 5 6 10")
  nodes, parents = _node_arrays(problem, FAKE_TREE)
  expansions, path = from_search.tree_expansions(problem, TOK, nodes, parents, "depth_first")
  assert [e.step for e in expansions] == [FAKE_TREE[i - 1][1] for i in [1, 4, 5, 3, 7, 8]]
  assert sorted(expansions, key=str) == sorted(
      from_search.tree_expansions(problem, TOK, nodes, parents)[0], key=str)
  assert path == [3, 4, 5]
  lines = trace.linearize(problem, expansions, path)
  assert [l.text for l in lines] == [
      "5 + 4 = 9 (left: 6 9 10)", "10 - 9 = 1 (left: 1 6)", "6 - 1 = 5 (left: 5)",
      "back to 4 5 6 10", "10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)",
      "30 - 6 = 24 (left: 24)", "Answer: (6 * 5) - (10 - 4) = 24"]
  assert [l.tag for l in lines[:3]] == [trace.OFF_PATH] * 3
  facts = trace.parse(problem, trace.trace_text(lines))
  assert (facts.steps, facts.backtracks, facts.errors, facts.reached_goal) == (6, 1, (), True)
  with pytest.raises(ValueError, match="unknown trace order 'bfs'"):
    from_search.tree_expansions(problem, TOK, nodes, parents, "bfs")


def test_depth_first_order_by_hand():
  # 0 and 2 start from the initial state; 1 and 4 from 0's child, 3 from 1's, 5 and 6 from 2's
  assert trace.depth_first([-1, 0, -1, 1, 0, 2, 2], solution_path=[2, 6]) == [0, 1, 3, 4, 2,
                                                                                 5, 6]
  # the path's child goes last among its siblings, whatever its place among them
  assert trace.depth_first([-1, -1, 0, 0], solution_path=[0, 2]) == [1, 0, 3, 2]
  assert trace.depth_first([], solution_path=[]) == []


def test_tree_expansions_skip_what_lies_below_a_skipped_node():
  """A step from a state the trace never reached would name it in a `back to` line."""
  problem = game24.make("4 5 6 10")
  tree = [(0, "5 + 4 = 9 (left: 6 9 10)", True, False, 0.4),  # 1: terminal
          (1, "10 - 9 = 1 (left: 1 6)", False, False, 0.1),  # 2: below a terminal: skipped
          (2, "6 - 1 = 5 (left: 5)", True, True, 0.0),  # 3: below 2: skipped as well
          (0, "10 - 4 = 6 (left: 5 6 6)", False, False, 0.8),
          (4, "6 * 5 = 30 (left: 6 30)", False, False, 0.9),
          (5, "30 - 6 = 24 (left: 24)", True, True, 1.0)]
  nodes, parents = _node_arrays(problem, tree)
  for order in from_search.TRACE_ORDERS:
    expansions, path = from_search.tree_expansions(problem, TOK, nodes, parents, order)
    assert [e.step for e in expansions] == [tree[i - 1][1] for i in [1, 4, 5, 6]], order
    assert path == [1, 2, 3]
    facts = trace.parse(problem, trace.trace_text(trace.linearize(problem, expansions, path)))
    assert facts.errors == () and facts.reached_goal, order


def test_tree_expansions_none_without_the_target():
  problem = game24.make("4 5 6 10")
  unsolved = FAKE_TREE[:7] + [(-1, None, False, False, 0.0)] * 4  # the goal node never made
  nodes, parents = _node_arrays(problem, unsolved)
  assert from_search.tree_expansions(problem, TOK, nodes, parents) is None
  # reaching one number that is not the target is no solution either
  wrong = FAKE_TREE[:7] + [(7, "30 + 6 = 36 (left: 36)", True, True, 0.0)]
  nodes, parents = _node_arrays(problem, wrong)
  assert from_search.tree_expansions(problem, TOK, nodes, parents) is None
  # the goal under a terminal (dead) parent does not count
  below = FAKE_TREE[:7] + [(7, "30 - 6 = 24 (left: 24)", True, True, 1.0)]
  below[6] = (3, "6 * 5 = 30 (left: 6 30)", True, False, 0.9)  # node 7 made terminal
  nodes, parents = _node_arrays(problem, below)
  assert from_search.tree_expansions(problem, TOK, nodes, parents) is None


def test_search_traces_from_the_memorizing_model(searched):
  problems, params, roots, out, _ = searched
  traces, targets = from_search.search_traces(params, MODEL, TOK, problems, SEARCH, MCTS,
                                              batch_size=len(problems), seed=SEARCH_SEED)
  tree = out.search_tree
  solved = [b for b in range(len(problems)) if (tree.embeddings.score[b] == 1.0).any()]
  assert [i for i, _ in traces] == solved and len(solved) >= 2
  # the AlphaZero targets are the same search's: its weights over the roots' candidates, and
  # its outcome (a verified answer in the tree)
  np.testing.assert_array_equal(targets["weights"], out.action_weights)
  np.testing.assert_array_equal(targets["candidates"], roots.cand_tokens)
  np.testing.assert_array_equal(targets["outcome"], [float(b in solved) for b in range(4)])
  backtracks = 0
  for i, lines in traces:
    facts = trace.parse(problems[i], trace.trace_text(lines))
    assert facts.errors == () and facts.reached_goal, trace.trace_text(lines)
    assert problems[i].verify(facts.answer).ok
    assert lines[-1].tag == trace.ANSWER
    # the same search as the fixture's (same key): the trace is that tree's, linearized
    nodes = jax.tree.map(lambda x, i=i: x[i], tree.embeddings)
    found = from_search.tree_expansions(problems[i], TOK, nodes, tree.parents[i])
    assert lines == trace.linearize(problems[i], *found)
    assert facts.steps == len(found[0]) <= MCTS.num_simulations
    backtracks += facts.backtracks
  assert backtracks > 0  # the search explored beside its solutions, and the trace shows it


def test_a_solved_search_left_out_for_a_repeated_step_still_counts_as_solved(searched,
                                                                           monkeypatch):
  """With tried-lists a tree that takes a step twice gives no trace, but it did reach a
  verified answer: the AlphaZero value target says so."""
  problems, params, _, out, _ = searched
  def repeated(problem, *args, **kwargs):
    raise trace.RepeatedStep(f"{problem.prompt()}: a step taken again")
  monkeypatch.setattr(from_search.trace, "linearize", repeated)
  traces, targets = from_search.search_traces(params, MODEL, TOK, problems, SEARCH, MCTS,
                                              batch_size=len(problems), seed=SEARCH_SEED,
                                              list_tried=True)
  solved = (out.search_tree.embeddings.score == 1.0).any(axis=1)
  assert traces == [] and solved.sum() >= 2
  np.testing.assert_array_equal(targets["outcome"], solved.astype(float))


def test_search_traces_reject_play_mode_and_no_problems(searched):
  problems, params, _, _, _ = searched
  play = dataclasses.replace(MCTS, mode="play")
  with pytest.raises(ValueError, match="MCTSConfig.mode must be 'tree', got 'play'"):
    from_search.search_traces(params, MODEL, TOK, problems, SEARCH, play, batch_size=4, seed=0)
  with pytest.raises(ValueError, match="no problems"):
    from_search.search_traces(params, MODEL, TOK, [], SEARCH, MCTS, batch_size=4, seed=0)


# ---------------------------------------------------------------------------------------------
# 6. Spearman's rank correlation.

def _pearson(a, b):
  a, b = np.asarray(a, float) - np.mean(a), np.asarray(b, float) - np.mean(b)
  return float(np.sum(a * b) / np.sqrt(np.sum(a * a) * np.sum(b * b)))


def test_rank_correlation_by_hand():
  assert evaluate.rank_correlation([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
  assert evaluate.rank_correlation([1, 2, 3, 4], [0.4, 0.3, 0.2, 0.1]) == pytest.approx(-1.0)
  # monotone but not linear: ranks only
  assert evaluate.rank_correlation([1, 2, 3, 4, 5], [1, 8, 27, 64, 1000]) == pytest.approx(1.0)
  # ties take their average rank (1-based: [1, 2.5, 2.5, 4] and [1, 3, 2, 4])
  got = evaluate.rank_correlation([1, 2, 2, 3], [1, 3, 2, 4])
  assert got == pytest.approx(_pearson([1, 2.5, 2.5, 4], [1, 3, 2, 4]))
  assert got == pytest.approx(0.9486832980505138)
  got = evaluate.rank_correlation([5, 1, 5, 5, 0], [0.1, 0.2, 0.3, 0.3, 0.0])
  assert got == pytest.approx(_pearson([4, 2, 4, 4, 1], [2, 3, 4.5, 4.5, 1]))
  assert np.isnan(evaluate.rank_correlation([1, 1, 1], [1, 2, 3]))


def test_accuracy_interval_is_wilsons_by_hand():
  # Wilson: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), z = 1.959964
  z, n, p = 1.959963984540054, 100, 0.24
  centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
  low, high = evaluate.accuracy_interval([True] * 24 + [False] * 76)
  assert (low, high) == pytest.approx(((centre - half) / (1 + z * z / n),
                                       (centre + half) / (1 + z * z / n)))
  assert (low, high) == pytest.approx((0.1669, 0.3323), abs=1e-4)
  low, high = evaluate.accuracy_interval([False] * 10)  # none right: the interval starts at 0
  assert low == 0 and 0.2 < high < 0.3
  assert evaluate.accuracy_interval([True] * 240 + [False] * 760)[1] < 0.27  # narrows with n


def test_paired_difference_by_hand():
  # differences 1, 0, 0, 0: mean 0.25, sd 0.5, se 0.25; t(3, 0.975) = 3.182446
  diff, low, high = evaluate.paired_difference([1, 1, 0, 0], [0, 1, 0, 0])
  assert (diff, low, high) == pytest.approx((0.25, 0.25 - 3.182446 * 0.25,
                                             0.25 + 3.182446 * 0.25))
  # every problem alike (the same model; or one right everywhere, the other nowhere): no interval
  for a, b, gap in (([1, 0, 1], [1, 0, 1], 0.0), ([1, 1, 1], [0, 0, 0], 1.0)):
    diff, low, high = evaluate.paired_difference(a, b)
    assert diff == gap and np.isnan(low) and np.isnan(high)
  # successes that overlap give a narrower interval than ones that do not, at the same gap
  a = [1] * 30 + [0] * 70
  overlap = evaluate.paired_difference(a, [1] * 20 + [0] * 80)
  apart = evaluate.paired_difference(a, [0] * 80 + [1] * 20)
  assert overlap[0] == apart[0] == pytest.approx(0.1)
  assert overlap[2] - overlap[1] < apart[2] - apart[1]
  with pytest.raises(ValueError, match=r"same >= 2 problems \(or seeds\), got 3 and 2"):
    evaluate.paired_difference([1, 0, 1], [1, 0])


# ---------------------------------------------------------------------------------------------
# 7. Given steps: computing apart from choosing.

def _scripted_sampler(tokenizer, mistakes):
  """Stands in for the model: completes each given step right, except that at walk step
  d it makes mistakes[d] ('state': right result, wrong numbers left; 'result': wrong
  result; None: no mistake). Returns what `sample_prompts` returns."""
  def sample(params, config, prompts, cfg, rng, *, batch_size, mesh=None):
    rows = []
    for ids in prompts:
      first, *steps, head = tokenizer.decode(ids).split("\n")
      numbers, target = first[len("Input: "):].split(" -> ")
      state = trace.parse(Countdown.make(numbers, int(target)), "\n".join(steps)).states[-1]
      line = next(s for s, _ in countdown.successors(state) if s.startswith(head))
      rest = {"state": line[len(head):].split(" (left:")[0] + " (left: 0)",
              "result": "999 (left: 999)"}.get(mistakes[len(steps)], line[len(head):])
      rows.append(tokenizer.encode(rest + "\n"))
    return types.SimpleNamespace(tokens_BxN=pad_batch(rows, max(map(len, rows))))
  return sample


def test_arithmetic_scores_each_given_step(monkeypatch):
  tokenizer = Tokenizer()
  problems = [game24.make(p) for p in ("4 5 6 10", "1 2 3 4", "3 3 8 8")]
  monkeypatch.setattr(evaluate, "sample_prompts",
                      _scripted_sampler(tokenizer, [None, "state", "result"]))
  got = evaluate.arithmetic(None, None, tokenizer, problems, np.random.default_rng(0))
  assert got["steps"] == 9  # three steps a walk
  assert got["result_accuracy"] == pytest.approx(2 / 3)
  assert got["step_accuracy"] == pytest.approx(1 / 3)
  assert got["result_accuracy_by_depth"] == [1.0, 1.0, 0.0]

  monkeypatch.setattr(evaluate, "sample_prompts", _scripted_sampler(tokenizer, [None] * 3))
  got = evaluate.arithmetic(None, None, tokenizer, problems, np.random.default_rng(1))
  assert (got["result_accuracy"], got["step_accuracy"]) == (1.0, 1.0)


def _sampled(tokenizer, texts, limit=10_000):
  """What the sampler returns for these texts with `max_new_tokens=limit`: each written token
  by token, then the end token, or cut to `limit` tokens with no end."""
  ids = [tokenizer.encode(t) for t in texts]
  return greedy.Generations([tokenizer.decode(i[:limit]) for i in ids],
                            np.array([min(len(i) + 1, limit) for i in ids]),
                            np.array([len(i) < limit for i in ids]))


def test_in_context_counts_searches_that_solve_after_a_backtrack(monkeypatch):
  tokenizer = Tokenizer()
  problems = [game24.make("4 5 6 10")] * 3
  straight = ("10 - 4 = 6 (left: 5 6 6)\n6 * 5 = 30 (left: 6 30)\n30 - 6 = 24 (left: 24)\n"
              "Answer: (6 * 5) - (10 - 4) = 24\n")
  searched = "5 + 4 = 9 (left: 6 9 10)\nback to 4 5 6 10\n" + straight
  wrong = "5 + 4 = 9 (left: 6 9 10)\n9 + 6 = 15 (left: 10 15)\nAnswer: (5 + 4) + 6 = 15\n"
  texts = [straight, searched, wrong]
  sampler = lambda texts, limit=10_000: lambda *a, **k: _sampled(tokenizer, texts, limit)
  monkeypatch.setattr(evaluate, "generations", sampler(texts))
  got = evaluate.in_context(None, types.SimpleNamespace(max_len=192), tokenizer, problems)
  tokens = [len(tokenizer.encode(t)) + 1 for t in texts]
  assert got["correct"] == [True, True, False] and got["backtracks"] == [0, 1, 0]
  assert got["tokens"] == tokens
  assert got["solved_after_backtrack_rate"] == pytest.approx(1 / 3)
  assert got["mean_tokens_right"] == pytest.approx((tokens[0] + tokens[1]) / 2)
  assert got["mean_tokens_wrong"] == tokens[2]
  assert got["cut_off_rate"] == 0.0  # each ended well inside 192 - 12 prompt tokens
  assert got["repeated_step_rate"] == 0.0
  monkeypatch.setattr(evaluate, "generations", sampler([wrong] * 3))
  got = evaluate.in_context(None, types.SimpleNamespace(max_len=192), tokenizer, problems)
  assert got["solved_after_backtrack_rate"] == 0.0 and got["mean_tokens_right"] is None
  # a search still going when the tokens ran out: every one written, none of them the end
  limit = len(tokenizer.encode(searched))
  long_search = searched.replace(straight, "") * 4 + straight
  assert len(tokenizer.encode(straight)) < limit and len(tokenizer.encode(wrong)) < limit
  monkeypatch.setattr(evaluate, "generations", sampler([straight, long_search, wrong], limit))
  got = evaluate.in_context(None, None, tokenizer, problems, max_new_tokens=limit)
  assert got["cut_off_rate"] == pytest.approx(1 / 3) and got["correct"] == [True, False, False]
  assert got["tokens"][1] == limit
  assert got["cut_off_legal_rate"] == pytest.approx(1 / 3)  # it searched legally all the way
  assert got["repeated_step_rate"] == pytest.approx(1 / 3)  # in a loop: 5 + 4 four times
  # the sampler, not the decoded text, says how long a generation was and how it ended: here
  # the model spelled 12 as the digits 1, 2 (re-encoded, one token) and a pad, which decodes
  # to nothing, and was cut off
  spelled = tokenizer.encode("5 + 4 = 9 (left: 6 9 10)\n") + [
      tokenizer.encode("1")[0], tokenizer.encode("2")[0], tokenizer.pad_id]
  assert len(tokenizer.encode(tokenizer.decode(spelled))) == len(spelled) - 2
  written = greedy.Generations([straight, tokenizer.decode(spelled), wrong],
                               np.array([tokens[0], len(spelled), tokens[2]]),
                               np.array([True, False, True]))
  monkeypatch.setattr(evaluate, "generations", lambda *a, **k: written)
  got = evaluate.in_context(None, None, tokenizer, problems, max_new_tokens=len(spelled))
  assert got["tokens"][1] == len(spelled) and got["cut_off_rate"] == pytest.approx(1 / 3)
  # its unfinished last line `12` is not judged: a legal search cut off
  assert got["illegal_step_rate"] == 0.0
  assert got["cut_off_legal_rate"] == pytest.approx(1 / 3)
  # one unfinished line and no step is no search, legal or not
  monkeypatch.setattr(evaluate, "generations", sampler([straight, "1 " * limit, wrong], limit))
  got = evaluate.in_context(None, None, tokenizer, problems, max_new_tokens=limit)
  assert got["cut_off_rate"] == pytest.approx(1 / 3) and got["cut_off_legal_rate"] == 0.0
  assert set(got["first_error_kinds"].values()) == {0.0}
  # first errors by kind; a generation cut off after an illegal step is not a legal search
  lost = searched.replace("back to 4 5 6 10", "back to 4 5 6")
  bad_sum = straight.replace("6 * 5 = 30", "6 * 5 = 31")
  monkeypatch.setattr(evaluate, "generations", sampler([bad_sum, lost * 4, straight], limit))
  got = evaluate.in_context(None, None, tokenizer, problems, max_new_tokens=limit)
  assert got["cut_off_rate"] == pytest.approx(1 / 3) and got["cut_off_legal_rate"] == 0.0
  assert got["first_error_kinds"] == {
      kind: pytest.approx(1 / 3) if kind in (countdown.WRONG_RESULT, trace.UNVISITED_BACKTRACK)
      else 0.0 for kind in trace.ERROR_KINDS}
  assert sum(got["first_error_kinds"].values()) == pytest.approx(got["illegal_step_rate"])


def test_arithmetic_needs_a_step_to_give():
  with pytest.raises(ValueError, match="two or more numbers"):
    evaluate.arithmetic(None, None, Tokenizer(), [Countdown.make([7], 7)],
                        np.random.default_rng(0))


SEARCHED_TRACE = [  # the trace of `metacot.trace`'s docstring
    trace.Line("5 + 4 = 9 (left: 6 9 10)", trace.OFF_PATH),
    trace.Line("10 - 9 = 1 (left: 1 6)", trace.OFF_PATH),
    trace.Line("6 - 1 = 5 (left: 5)", trace.OFF_PATH),
    trace.Line("back to 4 5 6 10", trace.BACK_TAG),
    trace.Line("10 - 4 = 6 (left: 5 6 6)", trace.ON_PATH),
    trace.Line("6 * 5 = 30 (left: 6 30)", trace.ON_PATH),
    trace.Line("30 - 6 = 24 (left: 24)", trace.ON_PATH),
    trace.Line("Answer: (6 * 5) - (10 - 4) = 24", trace.ANSWER),
]


TRACED_MODEL = dataclasses.replace(MODEL, max_len=128)  # room for SEARCHED_TRACE (109 tokens)


@pytest.mark.parametrize("missed, after_backtrack, elsewhere", [
    ("30", 1.0, 0.8),  # only in the rest of `6 * 5 = 30 (left: 6 30)`
    ("5", 0.0, 0.8),  # in `6 - 1 = 5 (left: 5)` and, after the backtrack, `... (left: 5 6 6)`
    ("9", 1.0, 0.8),  # in the rest of step 1, and in step 2's `10 - 9 = `, which is given
    (" = ", 1.0, 1.0),  # only in the given heads: never scored
    ("\n", 0.0, 0.0),  # ends the rest of every step (and the prompt, which is given)
])
def test_traced_steps_scores_the_rest_of_each_step_after_a_backtrack_apart(
    monkeypatch, missed, after_backtrack, elsewhere):
  """A stand-in model writes every token right except one number: the steps whose rest (after
  `= `) holds it are wrong, and they count after a backtrack or elsewhere by their place."""
  tokenizer = Tokenizer()
  monkeypatch.setattr(evaluate, "_greedy_hits",
                      lambda params, tokens, config: tokens != tokenizer.id_of(missed))
  problem = game24.make("4 5 6 10")
  got = evaluate.traced_steps(None, TRACED_MODEL, tokenizer, [(problem, SEARCHED_TRACE)] * 3,
                              batch_size=2)
  assert got == {"traces": 3, "left_out": 0, "steps": 18, "steps_after_backtrack": 3,
                 "after_backtrack": after_backtrack, "elsewhere": pytest.approx(elsewhere),
                 # the same step with only the prompt above it (its state is the root)
                 "after_backtrack_from_path": after_backtrack}


def test_traced_steps_score_steps_after_a_backtrack_again_below_only_the_path_to_their_state(
    monkeypatch):
  """A stand-in model that misses every token of a row holding a `back to` line: every step
  after a backtrack is wrong in its trace and right below the path to its state alone."""
  tokenizer = Tokenizer()
  rows_seen = []

  def hits(params, tokens, config):
    rows_seen.extend(tokenizer.decode(t) for t in np.asarray(tokens) if t.any())
    with_back = (tokens == tokenizer.id_of("b")).any(1, keepdims=True)  # only `back` has a b
    return np.broadcast_to(~with_back, tokens.shape)
  monkeypatch.setattr(evaluate, "_greedy_hits", hits)
  problem = game24.make("4 5 6 10")
  deeper = [  # the second child of 9 6 10 after a dead end: its path is the first step
      trace.Line("5 + 4 = 9 (left: 6 9 10)", trace.OFF_PATH),
      trace.Line("10 - 9 = 1 (left: 1 6)", trace.OFF_PATH),
      trace.Line("back to 6 9 10", trace.BACK_TAG),
      trace.Line("10 - 6 = 4 (left: 4 9)", trace.OFF_PATH)]
  got = evaluate.traced_steps(None, TRACED_MODEL, tokenizer, [(problem, SEARCHED_TRACE),
                                                              (problem, deeper)])
  assert (got["steps_after_backtrack"], got["after_backtrack"]) == (2, 0.0)
  assert got["after_backtrack_from_path"] == 1.0
  assert ("Input: 4 5 6 10 -> 24\n10 - 4 = 6 (left: 5 6 6)\n" in rows_seen
          and "Input: 4 5 6 10 -> 24\n5 + 4 = 9 (left: 6 9 10)\n10 - 6 = 4 (left: 4 9)\n"
          in rows_seen)


def test_traced_steps_with_a_model_leaves_out_traces_too_long_for_it():
  params = init_params(TRACED_MODEL, jax.random.PRNGKey(0))
  problem = game24.make("4 5 6 10")
  long_trace = SEARCHED_TRACE[:3] + SEARCHED_TRACE[3:7] * 4 + SEARCHED_TRACE[7:]
  got = evaluate.traced_steps(params, TRACED_MODEL, Tokenizer(),
                              [(problem, SEARCHED_TRACE), (problem, long_trace)])
  assert (got["traces"], got["left_out"], got["steps"], got["steps_after_backtrack"]) == (1, 1, 6, 1)
  assert 0.0 <= got["after_backtrack"] <= 1.0 and 0.0 <= got["elsewhere"] <= 1.0
  with pytest.raises(ValueError, match="at most 128 tokens"):
    evaluate.traced_steps(params, TRACED_MODEL, Tokenizer(), [(problem, long_trace)])


class GreedyHitsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_greedy_hits_are_the_argmax_matching_the_next_token(self):
    params = init_params(MODEL, jax.random.PRNGKey(1))
    tokens = np.array(jax.random.randint(jax.random.PRNGKey(2), (2, MODEL.max_len), 3,
                                         MODEL.vocab_size), np.int32)
    logits, _, _ = forward(params, MODEL, tokens)
    tokens[:, 5] = np.asarray(logits[:, 4].argmax(-1))  # the model's own pick: a hit
    logits, _, _ = forward(params, MODEL, tokens)  # causal: the pick at 5 stays the argmax
    hits = self.variant(functools.partial(evaluate._greedy_hits.__wrapped__, config=MODEL))(
        params, tokens)
    chex.assert_shape(hits, (2, MODEL.max_len))
    want = np.asarray(logits[:, :-1].argmax(-1)) == tokens[:, 1:]
    np.testing.assert_array_equal(np.asarray(hits), np.pad(want, ((0, 0), (1, 0))))
    assert np.asarray(hits)[:, 5].all() and not np.asarray(hits)[:, 0].any()


# ---- Meta-STaR on the policy's own generations -------------------------------------------

HAND_TRACE = """5 + 4 = 9 (left: 6 9 10)
10 - 9 = 1 (left: 1 6)
6 - 1 = 5 (left: 5)
back to 4 5 6 10
10 - 4 = 6 (left: 5 6 6)
6 * 5 = 30 (left: 6 30)
30 - 6 = 24 (left: 24)
"""


def test_a_kept_generation_is_written_as_the_solver_writes_its_steps():
  """Legal but odd spellings (numbers left out of order, a leading zero, an unreduced
  fraction, spaces around a step) train as the symbolic traces are written."""
  problem = game24.make("4 5 6 10")
  answer = "Answer: (5 * (10 - 4)) - 6 = 24\n"
  odd = HAND_TRACE.replace("(left: 6 9 10)", "(left: 10 9 6)").replace(
      "10 - 9 = 1 (left: 1 6)", " 10 - 9 = 01 (left: 6 1) ").replace(
      "6 - 1 = 5 (left: 5)", "6 - 1 = 10/2 (left: 5)")
  assert odd != HAND_TRACE
  assert (from_generations.generation_lines(problem, odd + answer)
          == from_generations.generation_lines(problem, HAND_TRACE + answer))


def test_generation_lines_of_a_hand_worked_trace():
  problem = game24.make("4 5 6 10")
  lines = from_generations.generation_lines(
      problem, HAND_TRACE + "Answer: (5 * (10 - 4)) - 6 = 24\n<eos>")
  assert [l.tag for l in lines] == ([trace.OFF_PATH] * 3 + [trace.BACK_TAG]
                                    + [trace.ON_PATH] * 3 + [trace.ANSWER])
  assert trace.trace_text(lines[:-1]) == HAND_TRACE
  assert problem.verify(lines[-1].text).ok  # the answer the on-path steps spell out
  # steps after the goal (and backtracks to reach them) are dropped with the same result
  extra = HAND_TRACE + "back to 5 6 6\n6 + 6 = 12 (left: 5 12)\nAnswer: (5 * (10 - 4)) - 6 = 24\n"
  assert from_generations.generation_lines(problem, extra) == lines


@pytest.mark.parametrize("text, why", [
    (HAND_TRACE + "Answer: (5 * (10 - 4)) + 6 = 24\n", "an answer that does not verify"),
    (HAND_TRACE, "no answer"),
    (HAND_TRACE.replace("6 * 5 = 30 (left: 6 30)", "6 * 5 = 30 (left: 30)") +
     "Answer: (5 * (10 - 4)) - 6 = 24\n", "wrong numbers left"),
    (HAND_TRACE.replace("back to 4 5 6 10", "back to 4 5 6 11") +
     "Answer: (5 * (10 - 4)) - 6 = 24\n", "a backtrack to a state never reached"),
    ("5 + 4 = 9 (left: 6 9 10)\nAnswer: (5 * (10 - 4)) - 6 = 24\n",
     "a right answer that no step reached"),
])
def test_generation_lines_keep_only_verified_legal_traces(text, why):
  assert from_generations.generation_lines(game24.make("4 5 6 10"), text) is None, why


def test_solution_path_goes_through_the_latest_expansion_that_made_each_state():
  problem = game24.make("1 1 4 6")
  f = lambda *xs: tuple(sorted(Fraction(x) for x in xs))
  expansions = [Expansion(f(1, 1, 4, 6), "6 * 1 = 6 (left: 1 4 6)", f(1, 4, 6)),
                Expansion(f(1, 1, 4, 6), "4 * 1 = 4 (left: 1 4 6)", f(1, 4, 6)),  # the same state
                Expansion(f(1, 4, 6), "4 + 1 = 5 (left: 5 6)", f(5, 6)),
                Expansion(f(1, 4, 6), "6 * 1 = 6 (left: 4 6)", f(4, 6)),
                Expansion(f(4, 6), "4 * 6 = 24 (left: 24)", f(24))]
  assert from_generations.solution_path(problem, expansions) == [1, 3, 4]
  assert from_generations.solution_path(problem, expansions[:4]) is None  # no goal reached
  # the goal's parent made by no step (after a backtrack to a state never reached): no path
  assert from_generations.solution_path(problem, expansions[:2] + expansions[4:]) is None


def test_symbolic_traces_read_back_as_generations():
  """A symbolic trace, taken as a generation, gives the same training lines; where BFS or A*
  reached a state twice the path may run through the other copy, with the same step lines.
  DFS may reach a state twice too (by steps in another order), and its path runs through the
  latest copy, as the generation's does."""
  equal = 0
  for mix in ({}, {"bfs_fraction": 0.5}, {"astar_fraction": 0.5}):
    for problem, lines in round0.symbolic_traces(ROUND_TRIP_PROBLEMS, 4, seed=3, **mix):
      got = from_generations.generation_lines(problem, trace.trace_text(lines))
      assert [l.text for l in got[:-1]] == [l.text for l in lines[:-1]]
      assert problem.verify(got[-1].text).ok
      equal += got == lines
      if not mix:
        assert got == lines
  assert equal >= 60, equal


def test_a_dfs_trace_that_reaches_a_state_twice_reads_back_as_written():
  """1 1 3 6 with seed 0: one DFS trace reaches a state twice; its path runs through the
  latest copy, and so must the generation's, or off-path masks fall on the wrong lines."""
  problem = game24.make("1 1 3 6")
  traces = [lines for _, lines in round0.symbolic_traces([problem], 4, seed=0)]
  states = lambda lines: [e.child for e in trace.parse(problem, trace.trace_text(lines)).expansions]
  assert any(len(set(states(lines))) < len(states(lines)) for lines in traces)
  for lines in traces:
    assert from_generations.generation_lines(problem, trace.trace_text(lines)) == lines


def test_verified_generations_keep_each_distinct_legal_verified_trace(monkeypatch):
  problems = [game24.make("4 5 6 10"), game24.make("1 2 4 7")]
  answer = "Answer: (5 * (10 - 4)) - 6 = 24\n"
  straight = "10 - 4 = 6 (left: 5 6 6)\n6 * 5 = 30 (left: 6 30)\n30 - 6 = 24 (left: 24)\n"
  texts = [HAND_TRACE + answer, straight + answer, HAND_TRACE + answer,  # the third: a repeat
           "10 - 4 = 6 (left: 5 6)\n" + answer,  # verified, but an illegal step: not kept
           "7 + 1 = 8 (left: 2 4 8)\nAnswer: (7 + 1) * 2 = 24\n",  # wrong
           "7 * 4 = 28 (left: 1 2 28)\n", "",
           "7 + 1 = 8 (left: 2 4 8)\n8 + 4 = 12 (left: 2 12)\n12 * 2 = 24 (left: 24)\n"
           "Answer: ((7 + 1) + 4) * 2 = 24\n"]
  calls = []

  def scripted(params, config, prompts, cfg, rng, *, batch_size, group_size, mesh):
    calls.append((len(prompts), cfg.max_new_tokens, cfg.temperature, group_size))
    rows = [TOK.encode(t, eos=True) for t in texts]
    return sampling.Samples(pad_batch(rows, 128), None, np.asarray([len(r) for r in rows]), None,
                            None)
  monkeypatch.setattr(from_generations, "sample_prompts", scripted)
  config = ModelConfig(vocab_size=TOK.vocab_size, max_len=100, d_model=8, num_layers=1,
                       num_heads=1, d_ff=8)
  generations = from_generations.sampled_generations(
      None, config, TOK, problems, samples=4, rng=jax.random.PRNGKey(0))
  width = len(TOK.encode(problems[0].prompt(), bos=True))
  assert calls == [(2, 100 - width, 1.0, 4)]
  assert generations == [(i // 4, t) for i, t in enumerate(texts)]  # the end token dropped
  kept, stats = from_generations.verified_generations(problems, generations)
  assert [(i, trace.trace_text(lines)) for i, lines in kept] == [
      (0, HAND_TRACE + "Answer: (6 * 5) - (10 - 4) = 24\n"),
      (0, straight + "Answer: (6 * 5) - (10 - 4) = 24\n"), (1, texts[-1])]
  assert stats == {"generations": 8, "verified": 5, "kept": 3, "puzzles_solved": 2,
                   "kept_with_backtracks": 1}
  # for a CoT model's STaR: clean solutions only, the one that backtracks dropped
  kept, stats = from_generations.verified_solutions(problems, generations)
  assert kept == [(0, tuple(straight.splitlines()), "Answer: (6 * 5) - (10 - 4) = 24"),
                  (1, tuple(texts[-1].splitlines()[:-1]), texts[-1].splitlines()[-1])]
  assert stats == {"generations": 8, "verified": 5, "kept": 2, "puzzles_solved": 2,
                   "dropped_with_backtracks": 1}
  kept, stats = from_generations.verified_solutions(problems, generations[:1])
  assert kept == [] and stats["puzzles_solved"] == 0 and stats["dropped_with_backtracks"] == 1
  # a kept solution trains as the solver's own: the same segments, PRM labels included
  solution = problems[1].solve()[0]
  text = "".join(l + "\n" for l in solution.steps) + solution.answer + "\n"
  [(i, steps, answer)], _ = from_generations.verified_solutions(problems, [(1, text)])
  cot = examples.cot_examples(problems[1:], max_solutions=len(problems[1].solve()))
  assert examples.solution_example(problems[i], steps, answer) == cot[0]
  assert [seg.value for seg in cot[0]] == [None] * 1 + [1.0] * len(solution.steps) + [None]
  with pytest.raises(ValueError, match="samples must be >= 1"):
    from_generations.sampled_generations(None, config, TOK, problems, samples=0,
                                         rng=jax.random.PRNGKey(0))


# Repairs: a failed generation cut before its first mistake and finished by the solver.
S = lambda *xs: tuple(sorted(Fraction(x) for x in xs))
FIRST_TWO = "5 + 4 = 9 (left: 6 9 10)\n10 - 9 = 1 (left: 1 6)\n"
LOOP = FIRST_TWO + "back to 6 9 10\n10 - 9 = 1 (left: 1 6)\nback to 6 9 10\n10 - 9 = 1 (le"


@pytest.mark.parametrize("text, steps, state, why", [
    (LOOP, 2, S(6, 9, 10), "a step taken again: the loop starts in the state it left"),
    ("5 + 4 = 9 (left: 6 9 10)\n10 - 9 = 2 (left: 2 6)\n6 * 4 = 24 (left: 24)\n", 1,
     S(6, 9, 10), "a wrong result"),
    ("5 + 4 = 9 (left: 6 9 10)\nback to 4 5 7\n7 * 4 = 28 (left: 5 28)\n", 1, S(6, 9, 10),
     "a backtrack to a state never reached"),
    (FIRST_TWO + "back to 4 5 6 10\n6 * 5 = 3", 2, S(4, 5, 6, 10),
     "a backtrack, then a line cut off by the length limit"),
    (FIRST_TWO + "Answer: (10 - 9) * 6 = 24\n", 2, S(1, 6), "a wrong answer after legal steps"),
    ("", 0, S(4, 5, 6, 10), "nothing written"),
])
def test_sound_prefix_stops_before_the_first_mistake(text, steps, state, why):
  problem = game24.make("4 5 6 10")
  expansions, current = repair.sound_prefix(problem, text)
  assert [e.step for e in expansions] == FIRST_TWO.splitlines()[:steps], why
  assert current == state, why


def test_restart_order_is_the_state_then_its_ancestors_then_the_rest_latest_first():
  problem = game24.make("4 5 6 10")
  expansions = trace.parse(problem, FIRST_TWO + "back to 4 5 6 10\n10 - 4 = 6 (left: 5 6 6)\n"
                           "6 + 6 = 12 (left: 5 12)\n").expansions
  assert repair.restart_order(problem, expansions, S(6, 9, 10)) == [
      S(6, 9, 10), S(4, 5, 6, 10), S(5, 12), S(5, 6, 6), S(1, 6)]


def test_finishing_steps_never_take_a_step_already_taken():
  problem = game24.make("4 5 6 10")
  first = repair.finishing_steps(problem, S(4, 5, 6, 10), set())
  assert [e.step for e in first] == ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)",
                                     "30 - 6 = 24 (left: 24)"]  # the solver's first solution
  tried = {(S(4, 5, 6, 10), S(5, 6, 6))}
  other = repair.finishing_steps(problem, S(4, 5, 6, 10), tried)
  assert other[0].step == "5 * 4 = 20 (left: 6 10 20)" and problem.is_goal(other[-1].child)
  assert repair.finishing_steps(problem, S(6, 9, 10), set()) is None  # 24 out of reach
  assert repair.finishing_steps(problem, S(24), set()) is None  # no step left to take


def test_repaired_lines_of_hand_worked_failures():
  problem = game24.make("4 5 6 10")
  # the loop's state (6 9 10) cannot reach 24: back to its parent, then the solver's solution
  assert trace.trace_text(repair.repaired_lines(problem, LOOP)) == (
      FIRST_TWO + "back to 4 5 6 10\n10 - 4 = 6 (left: 5 6 6)\n6 * 5 = 30 (left: 6 30)\n"
      "30 - 6 = 24 (left: 24)\nAnswer: (6 * 5) - (10 - 4) = 24\n")
  # a loop back at the start: the first step taken again is replaced by one not taken yet
  again = ("10 - 4 = 6 (left: 5 6 6)\n6 + 6 = 12 (left: 5 12)\nback to 4 5 6 10\n"
           "10 - 4 = 6 (left: 5 6 6)\n6 + 6 = 12 (left: 5 12)\n")
  assert trace.trace_text(repair.repaired_lines(problem, again)[:4]) == (
      "10 - 4 = 6 (left: 5 6 6)\n6 + 6 = 12 (left: 5 12)\nback to 4 5 6 10\n"
      "5 * 4 = 20 (left: 6 10 20)\n")
  # the goal reached but a wrong answer written: the right answer for the same steps
  assert repair.repaired_lines(problem, HAND_TRACE + "Answer: 6 * 4 = 24\n") == (
      from_generations.generation_lines(problem, HAND_TRACE + "Answer: (5 * (10 - 4)) - 6 = 24\n"))
  assert repair.repaired_lines(game24.make("1 1 1 1"), LOOP) is None  # no way to 24 at all


def test_repairs_of_broken_symbolic_traces_pass_the_generations_verifier():
  """Symbolic traces cut short, looped or broken at a random line are each repaired into a
  trace that `generation_lines` keeps as it is: verified, legal, no step taken twice, and
  starting with every step before the break."""
  rng = np.random.default_rng(0)
  traces = round0.symbolic_traces(ROUND_TRIP_PROBLEMS, 4, seed=5)
  assert len(traces) >= 20
  for problem, lines in traces:
    z = [l.text for l in lines[:-1]]
    cut = int(rng.integers(1, len(z)))
    start = trace.BACK + trace.state_name(problem.initial_state())
    steps = [l for l in z[:cut] if not l.startswith(trace.BACK)]
    for broken in (z[:cut],  # cut short
                   z[:cut] + [start, z[0]],  # the first step taken again
                   z[:cut] + ["1 + 1 = 5 (left: 5)"]):  # an illegal line
      text = "".join(l + "\n" for l in broken)
      got = repair.repaired_lines(problem, text)
      assert from_generations.generation_lines(problem, trace.trace_text(got)) == got, text
      facts = trace.parse(problem, trace.trace_text(got[:-1]))
      assert len({(e.parent, e.child) for e in facts.expansions}) == len(facts.expansions)
      assert [e.step for e in facts.expansions][:len(steps)] == steps, text


def test_repaired_generations_repair_each_failed_generation_once():
  problems = [game24.make("4 5 6 10"), game24.make("1 1 1 1")]
  verified = HAND_TRACE + "Answer: (5 * (10 - 4)) - 6 = 24\n"
  ones = "1 + 1 = 2 (left: 1 1 2)\nback to 1 1 1 1\n1 + 1 = 2 (left: 1 1 2)\n"  # a loop
  generations = [(0, verified), (0, LOOP), (0, LOOP), (0, FIRST_TWO), (1, ones), (1, "")]
  kept, stats = repair.repaired_generations(problems, generations)
  assert [(i, trace.trace_text(lines)) for i, lines in kept] == [
      (0, trace.trace_text(repair.repaired_lines(problems[0], LOOP)))]  # FIRST_TWO's: the same
  # 1 1 1 1 cannot make 24: its failures have no repair
  assert stats == {"failed": 5, "failed_with_a_loop": 3, "repaired": 1}


# ---------------------------------------------------------------------------------------------
# Back lines that list the steps already tried from their state (data.back_lists_tried).

TRIED_TOK = Tokenizer(trace.TRIED_PIECES)


def test_a_search_that_takes_a_listed_step_again_is_not_linearized_with_lists():
  """An MCTS tree over text reaches a state twice by steps in another order, and may take
  the same step from both copies: with lists it is left out, as round 0's searches and the
  policy's generations are."""
  problem = game24.make("4 5 6 10")
  expansions = [Expansion(_f(4, 5, 6, 10), "5 + 4 = 9 (left: 6 9 10)", _f(6, 9, 10)),
                Expansion(_f(6, 9, 10), "10 - 6 = 4 (left: 4 9)", _f(4, 9)),
                Expansion(_f(4, 9), "9 - 4 = 5 (left: 5)", _f(5)),
                Expansion(_f(4, 5, 6, 10), "10 - 6 = 4 (left: 4 4 5)", _f(4, 4, 5)),
                Expansion(_f(4, 4, 5), "5 + 4 = 9 (left: 4 9)", _f(4, 9)),
                Expansion(_f(4, 9), "9 - 4 = 5 (left: 5)", _f(5)),  # again, from the copy
                Expansion(_f(4, 5, 6, 10), "10 - 4 = 6 (left: 5 6 6)", _f(5, 6, 6)),
                Expansion(_f(5, 6, 6), "6 * 5 = 30 (left: 6 30)", _f(6, 30)),
                Expansion(_f(6, 30), "30 - 6 = 24 (left: 24)", _f(24))]
  text = trace.trace_text(trace.linearize(problem, expansions, [6, 7, 8], list_tried=False))
  assert text.count("9 - 4 = 5 (left: 5)") == 2  # without lists: a plain revisit
  with pytest.raises(trace.RepeatedStep, match=r"takes 9 - 4 again from 4 9; with tried-lists"):
    trace.linearize(problem, expansions, [6, 7, 8], list_tried=True)
  assert trace.repeated_steps(expansions) == 1  # what the other sources leave out by


def test_back_lines_list_the_steps_tried_from_their_state_by_hand():
  problem = game24.make("4 5 6 10")
  expansions = HAND_EXPANSIONS[:3] + [
      Expansion(_f(6, 9, 10), "9 + 6 = 15 (left: 10 15)", _f(10, 15)),
      Expansion(_f(4, 5, 6, 10), "6 - 5 = 1 (left: 1 4 10)", _f(1, 4, 10)),
  ] + HAND_EXPANSIONS[3:]
  lines = trace.linearize(problem, expansions, [5, 6, 7], list_tried=True)
  assert [l.text for l in lines if l.tag == trace.BACK_TAG] == [
      "back to 6 9 10 (tried 10 - 9)",
      "back to 4 5 6 10 (tried 5 + 4)",
      "back to 4 5 6 10 (tried 5 + 4, 6 - 5)"]
  plain = trace.linearize(problem, expansions, [5, 6, 7])
  # the same lines but for the lists, and the same facts when read back
  assert [l.tag for l in lines] == [l.tag for l in plain]
  assert [trace.backtrack_target(l.text) for l in lines if l.tag == trace.BACK_TAG] == [
      _f(6, 9, 10), _f(4, 5, 6, 10), _f(4, 5, 6, 10)]
  facts, plain_facts = (trace.parse(problem, trace.trace_text(ls)) for ls in (lines, plain))
  assert facts == plain_facts and facts.errors == () and facts.backtracks == 3


def test_tried_pieces_are_one_token_each_and_round_trip():
  line = "back to 1/8 1 1 (tried 1/8 / 1, 1 * 1)\n"
  assert TRIED_TOK.decode(TRIED_TOK.encode(line)) == line
  for piece in trace.TRIED_PIECES:
    assert TRIED_TOK.encode(piece) == [TRIED_TOK.id_of(piece)]
  # fewer tokens than `back to ` spelled out in the plain tokenizer, the list included
  assert len(TRIED_TOK.encode(line)) < len(TOK.encode(line))
  assert TRIED_TOK.vocab_size == TOK.vocab_size + 3
  assert TRIED_TOK.vocab[:TOK.vocab_size] == TOK.vocab  # the plain ids keep their meaning


def test_parse_counts_steps_taken_again_from_the_same_state():
  problem = game24.make("4 5 6 10")
  loop = "5 + 4 = 9 (left: 6 9 10)\nback to 4 5 6 10\n5 + 4 = 9 (left: 6 9 10)\n"
  assert trace.parse(problem, loop).repeated_steps == 1
  assert trace.parse(problem, loop + "back to 4 5 6 10\n" + loop.split("\n")[0]
                     ).repeated_steps == 2
  # the same child by another operation is a new step; the same operation elsewhere too
  other = "6 - 5 = 1 (left: 1 4 10)\nback to 4 5 6 10\n5 - 4 = 1 (left: 1 6 10)\n"
  assert trace.parse(problem, other).repeated_steps == 0
  assert trace.parse(problem, HAND_TRACE).repeated_steps == 0


def test_symbolic_traces_with_lists_name_every_step_tried_before_the_back_line():
  traces = round0.symbolic_traces(ROUND_TRIP_PROBLEMS, 6, seed=7, list_tried=True,
                                  bfs_fraction=0.3, astar_fraction=0.3)
  listed = 0
  for problem, lines in traces:
    facts = trace.parse(problem, trace.trace_text(lines))
    assert facts.errors == () and facts.reached_goal and facts.repeated_steps == 0
    tried, state = {}, tuple(sorted(problem.initial_state()))
    for l in lines[:-1]:
      if l.tag == trace.BACK_TAG:
        state = trace.backtrack_target(l.text)
        assert l.text == trace.back_line(state, tried.get(state, ()))
        listed += bool(tried.get(state))
      else:
        child = countdown.check_step(state, l.text).state
        tried.setdefault(state, []).append(l.text)
        state = tuple(sorted(child))
  assert listed >= 20, listed  # the check has teeth


def test_generations_with_lists_are_relisted_and_loops_are_not_kept():
  problem = game24.make("4 5 6 10")
  answer = "Answer: (5 * (10 - 4)) - 6 = 24\n"
  # a generation whose list is wrong is kept with the list its steps give
  wrong_list = HAND_TRACE.replace("back to 4 5 6 10", "back to 4 5 6 10 (tried 6 - 5)")
  lines = from_generations.generation_lines(problem, wrong_list + answer, list_tried=True)
  assert lines[3].text == "back to 4 5 6 10 (tried 5 + 4)"
  assert trace.trace_text(lines[:-1]) == HAND_TRACE.replace(
      "back to 4 5 6 10", "back to 4 5 6 10 (tried 5 + 4)")
  # one that takes a step again, kept without lists, is not kept with them
  looped = "5 + 4 = 9 (left: 6 9 10)\nback to 4 5 6 10\n" + HAND_TRACE
  assert from_generations.generation_lines(problem, looped + answer) is not None
  assert from_generations.generation_lines(problem, looped + answer, list_tried=True) is None


# ---------------------------------------------------------------------------------------------
# Unlikelihood targets: the steps already tried from the state a step after a backtrack
# starts from (`trace.avoided_moves`), as tokens at the positions they would take.

# from 4 5 6 10: 5 + 4 (dead end), back, 10 - 6 (dead end), back, then 10 - 4 to the goal
TWO_BACKS = """5 + 4 = 9 (left: 6 9 10)
10 - 9 = 1 (left: 1 6)
back to 4 5 6 10
10 - 6 = 4 (left: 4 4 5)
back to 4 5 6 10
10 - 4 = 6 (left: 5 6 6)
back to 1 6
6 - 1 = 5 (left: 5)
back to 4 5 6 10
6 * 5 = 30 (left: 4 10 30)
"""


def _step_lines(text):
  return [trace.Line(t, trace.BACK_TAG if t.startswith(trace.BACK) else trace.OFF_PATH)
          for t in text.splitlines()] + [trace.Line("Answer: x", trace.ANSWER)]


def test_avoided_moves_by_hand():
  lines = trace.linearize(HAND_PROBLEM, HAND_EXPANSIONS, HAND_PATH)
  # only the step right after `back to 4 5 6 10` avoids what was tried from there
  assert trace.avoided_moves(HAND_PROBLEM, lines) == [(), (), (), (), ("5 + 4",), (), (), ()]
  assert trace.avoided_moves(HAND_PROBLEM, _step_lines(TWO_BACKS)) == [
      (), (), (), ("5 + 4",), (), ("5 + 4", "10 - 6"), (),
      (),  # nothing was tried from 1 6 before
      (), ("5 + 4", "10 - 6", "10 - 4"), ()]
  # a step taken again is not its own target; the others tried are
  looped = TWO_BACKS.replace("10 - 4 = 6 (left: 5 6 6)", "5 + 4 = 9 (left: 6 9 10)", 1)
  assert trace.avoided_moves(HAND_PROBLEM, _step_lines(looped))[5] == ("10 - 6",)
  # the listed form gives the same targets
  listed = trace.linearize(HAND_PROBLEM, HAND_EXPANSIONS, HAND_PATH, list_tried=True)
  assert trace.avoided_moves(HAND_PROBLEM, listed)[4] == ("5 + 4",)
  with pytest.raises(ValueError, match="avoided moves need a legal trace"):
    trace.avoided_moves(HAND_PROBLEM, _step_lines("5 + 4 = 10 (left: 6 10 10)\n"))


def test_unlikelihood_targets_by_hand():
  lines = trace.linearize(HAND_PROBLEM, HAND_EXPANSIONS, HAND_PATH)
  segments = round0.trace_segments(HAND_PROBLEM, lines, "all", avoid=True)
  assert [s.avoid for s in segments[1:]] == [(), (), (), (), ("5 + 4",), (), (), ()]
  assert [s.avoid for s in round0.trace_segments(HAND_PROBLEM, lines, "all")] == [()] * 9
  plain, _ = examples.encode(TOK, [segments], 128)
  assert "avoid_positions" not in plain
  arrays, _ = examples.encode(TOK, [segments], 128, max_avoids=3)
  chex.assert_shape([arrays["avoid_positions"], arrays["avoid_ids"], arrays["avoid_weights"]],
                    (1, 3))
  np.testing.assert_array_equal(plain["tokens"], arrays["tokens"])  # tokens unchanged
  # `10 - 4 = ...` after the back line would start `5 + 4` with the token `5`: one target
  before = TOK.encode(HAND_PROBLEM.prompt() + "".join(s.text for s in segments[1:5]), bos=True)
  np.testing.assert_array_equal(arrays["avoid_weights"][0], [1, 0, 0])
  assert arrays["avoid_positions"][0, 0] == len(before)
  assert arrays["tokens"][0, len(before)] == TOK.id_of("10")
  assert arrays["avoid_ids"][0, 0] == TOK.id_of("5")
  # where the texts share a prefix the target is the first token that differs; a text the
  # segment begins with (the step itself) or that ends inside it gives none
  assert examples.avoided_tokens(TOK, TOK.encode("10 - 4 = 6\n"), ["10 * 4", "10 - 5"]) == [
      (1, TOK.id_of(" * ")), (2, TOK.id_of("5"))]
  assert examples.avoided_tokens(TOK, TOK.encode("10 - 4 = 6\n"), ["10 - 4", "10"]) == []
  # the same first token of two tried steps is one target
  assert examples.avoided_tokens(TOK, TOK.encode("6 * 5\n"), ["5 + 4", "5 * 6"]) == [
      (0, TOK.id_of("5"))]
  # masked lines carry none: mask_off_path gives the abandoned steps no loss
  lines = [trace.Line(l.text, trace.OFF_PATH if l.tag == trace.ON_PATH else l.tag)
           for l in lines]
  segments = round0.trace_segments(HAND_PROBLEM, lines, "mask_off_path", avoid=True)
  assert all(s.avoid == () for s in segments)


def _targets(arrays):
  """(token at the target's position, the token before it, the token to avoid) per target."""
  rows, slots = np.nonzero(arrays["avoid_weights"] > 0)
  at = arrays["avoid_positions"][rows, slots]
  return sorted(zip(arrays["tokens"][rows, at].tolist(), arrays["tokens"][rows, at - 1].tolist(),
                    arrays["avoid_ids"][rows, slots].tolist()))


def test_pack_moves_unlikelihood_targets_with_their_examples():
  traces = round0.symbolic_traces(ROUND_TRIP_PROBLEMS, 8, seed=7, noise_scales=(1.0, 2.0))
  data = [round0.trace_segments(p, lines, "all", avoid=True) for p, lines in traces]
  data += examples.walk_examples(ROUND_TRIP_PROBLEMS, 2, seed=1)
  arrays, dropped = examples.encode(TOK, data, 192, max_avoids=8)
  packed = examples.pack(arrays)
  assert len(packed["tokens"]) < len(arrays["tokens"])
  # each target keeps its token, the token before it and the token to avoid
  assert _targets(packed) == _targets(arrays)
  assert len(_targets(arrays)) >= 20  # the check has teeth
  # and it differs from the token actually written there
  assert all(actual != avoided for actual, _, avoided in _targets(packed))


@pytest.mark.parametrize("answers", [
    "Answer: (5 * (10 - 4)) - 6 = 24 v9\n",  # a value after the answer: not an answer
    "Answer: 10 + 6 + 5 + 4 = 24\nAnswer: (5 * (10 - 4)) - 6 = 24\n",  # wrong, then right
    "Answer: (5 * (10 - 4)) - 6 = 24\nAnswer: 10 + 6 + 5 + 4 = 24\n",  # right, then wrong
])
def test_every_scorer_reads_the_same_answer(answers):
  """Greedy accuracy, the parsed trace (in-context accuracy), the RL reward and the
  verified-generation filter all judge the first Answer line, as written."""
  problem = game24.make("4 5 6 10")
  text = HAND_TRACE + answers
  first = answers.splitlines()[0]
  assert greedy.answer_line(text) == first
  assert trace.parse(problem, text).answer == first
  assert split_trace(text)[1] == first
  right = problem.verify(first).ok
  assert right == answers.startswith("Answer: (5 * (10 - 4)) - 6 = 24\n")
  assert (from_generations.generation_lines(problem, text) is not None) == right
