"""Tests of the search: exact rationals, the jitted step parser, the step MDP and mctx MCTS."""

import functools
import re
import warnings
from fractions import Fraction

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metacot_jax.data.examples import cot_pairs, sft_arrays
from metacot_jax.data.tokenizer import Tokenizer
from metacot_jax.models import ModelConfig, init_params
from metacot_jax.search import evaluate, mcts, rational, results, step_mdp, step_parser
from metacot_jax.metacot import evaluate as metacot_eval
from metacot_jax.models.sampling import SamplingConfig
from metacot_jax.search.greedy import (answer_line, generate, generations, greedy_accuracy,
                                      sample_prompts)
from metacot_jax.search.mcts import MCTSConfig
from metacot_jax.search.step_mdp import SearchConfig
from metacot_jax.tasks import countdown, game24
from metacot_jax.train import OptimizerConfig, create_train_state, sft_step, train

TOK = Tokenizer()
FMT = step_parser.StepFormat.from_tokenizer(TOK)
N = FMT.max_numbers
WIDTH = 32  # token slots per step in the parser tests (one compile)


def _rat(x) -> np.ndarray:
  x = Fraction(x)
  return np.array([x.numerator, x.denominator], np.int32)


def _state(values) -> tuple[np.ndarray, np.int32]:
  """[N, 2] rationals padded with 0/1, and the count."""
  state, _ = step_parser.state_from_numbers([0] * len(values), N)
  for i, v in enumerate(values):
    state[i] = _rat(v)
  return state, np.int32(len(values))


def _fractions(state_Nx2, count) -> list[Fraction]:
  return sorted(Fraction(int(n), int(d)) for n, d in np.asarray(state_Nx2)[:int(count)])


# ---------------------------------------------------------------------------------------------
# Exact rationals.

class RationalTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_by_hand(self):
    cases = [  # a, op (0..3 = + - * /), b, a op b (None: invalid)
        (Fraction(1, 2), 0, Fraction(1, 3), Fraction(5, 6)),
        (Fraction(-1, 3), 0, Fraction(1, 3), 0),
        (Fraction(1, 2), 1, Fraction(3, 4), Fraction(-1, 4)),
        (3, 1, 8, -5),
        (Fraction(2, 3), 2, Fraction(3, 4), Fraction(1, 2)),
        (-3, 2, -2, 6),
        (-4, 2, 6, -24),
        (8, 3, Fraction(1, 3), 24),
        (3, 3, Fraction(-3, 4), -4),
        (Fraction(-1, 3), 3, 2, Fraction(-1, 6)),
        (7, 3, 7, 1),
        (5, 3, 0, None),  # division by zero
        (0, 3, 0, None),
        (Fraction(2, 3), 3, 0, None),
        (200, 2, 200, None),  # 40000 is past rational.LIMIT
        (40000, 0, 1, None),  # an operand past the limit
    ]
    a = np.stack([_rat(c[0]) for c in cases])
    b = np.stack([_rat(c[2]) for c in cases])
    op = np.array([c[1] for c in cases], np.int32)
    value, valid = self.variant(rational.apply)(op, a, b)
    value, valid = np.asarray(value), np.asarray(valid)
    for i, (_, _, _, want) in enumerate(cases):
      assert bool(valid[i]) == (want is not None), cases[i]
      if want is not None:
        np.testing.assert_array_equal(value[i], _rat(want), err_msg=str(cases[i]))

  @chex.variants(with_jit=True, without_jit=True)
  def test_normalize(self):
    x = np.array([[6, -4], [-4, -6], [0, -5], [12, 4], [-7, 1], [0, 1]], np.int32)
    want = np.array([[-3, 2], [2, 3], [0, 1], [3, 1], [-7, 1], [0, 1]], np.int32)
    np.testing.assert_array_equal(self.variant(rational.normalize)(x), want)
    np.testing.assert_array_equal(rational.make(6, -4), [-3, 2])
    assert bool(rational.equal(rational.make(2, 4), rational.make(-1, -2)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_apply_matches_fractions(self):
    rng = np.random.default_rng(0)
    a = [Fraction(int(n), int(d)) for n, d in zip(rng.integers(-60, 61, 400),
                                                   rng.integers(1, 13, 400))]
    b = [Fraction(int(n), int(d)) for n, d in zip(rng.integers(-60, 61, 400),
                                                   rng.integers(1, 13, 400))]
    op = rng.integers(0, 4, 400).astype(np.int32)
    value, valid = self.variant(rational.apply)(op, np.stack([_rat(x) for x in a]),
                                                np.stack([_rat(x) for x in b]))
    chex.assert_shape([value, valid], [(400, 2), (400,)])
    for i in range(400):
      want = countdown.apply_op(a[i], "+-*/"[op[i]], b[i])
      assert bool(valid[i]) == (want is not None)
      if want is not None:
        assert Fraction(int(value[i, 0]), int(value[i, 1])) == want


# ---------------------------------------------------------------------------------------------
# The step parser and rule checker against countdown.check_step.

@jax.jit
def _parse_check(tokens_BxL, lengths_B, states_BxNx2, counts_B):
  def one(tokens, length, state, count):
    step = step_parser.parse(FMT, tokens, length)
    legal, left, num_left = step_parser.check(step, state, count)
    return step.ok, legal, left, num_left
  return jax.vmap(one)(tokens_BxL, lengths_B, states_BxNx2, counts_B)


def _jax_verdicts(token_rows, states):
  """(well formed, legal, next states) for token rows checked against Fraction states."""
  rows = len(token_rows)
  padded = -(-rows // 64) * 64  # few distinct shapes, few compiles
  tokens = np.zeros((padded, WIDTH), np.int32)
  lengths = np.zeros(padded, np.int32)
  st = np.zeros((padded, N, 2), np.int32)
  st[..., 1] = 1
  counts = np.zeros(padded, np.int32)
  for i, (ids, state) in enumerate(zip(token_rows, states)):
    assert len(ids) <= WIDTH
    tokens[i, :len(ids)], lengths[i] = ids, len(ids)
    st[i], counts[i] = _state(state)
  ok, legal, left, num_left = jax.device_get(_parse_check(tokens, lengths, st, counts))
  nxt = [_fractions(left[i], num_left[i]) for i in range(rows)]
  return ok[:rows], legal[:rows], nxt


_STEP = re.compile(r"^(\S+) ([-+*/]) (\S+) = (\S+) \(left: (.*)\)$")


def _corruptions(state, line):
  """Wrong versions of a legal step (as text): each must be rejected by both checkers."""
  a, op, b, c, left = _STEP.match(line).groups()
  fa, fb, fc = (countdown.parse_number(x) for x in (a, b, c))
  fmt = countdown.format_number
  first, *others = left.split()
  out = [
      f"{a} {op} {b} = {fmt(fc + 1)} (left: {left})",  # wrong result
      f"{a} {op} {b} = {c} (left: {left} 1)",  # wrong left: one number too many
      f"{a} {op} {b} = {c} (left: {' '.join([fmt(countdown.parse_number(first) + 2)] + others)})",
      f"{a} {op} {b} = {c} (left:{left})",  # malformed: no space
      f"{a}  {op} {b} = {c} (left: {left})",  # malformed: double space
      f"{a} {op} {b} = {c} left: {left}",  # malformed: no parentheses
      f"{a} {op} {b} = {c}",  # malformed: no left
      f"{a} {op} {b} = {c} (left: {left})x",  # malformed: trailing junk
      f"{a} {op} {b} == {c} (left: {left})",  # malformed: '=='
  ]
  # an unavailable operand, with its true result (left as if another number were used)
  other = max(state) + 7
  rest = list(state)
  rest.remove(fb)
  out.append(countdown.format_step(other, op, fb, rest[1:] + [countdown.apply_op(other, op, fb)]))
  if op in "-/" and fa != fb:  # operands swapped: another result
    out.append(f"{b} {op} {a} = {c} (left: {left})")
  return out


def _solver_steps(num_puzzles=30):
  """(state, step) for every step of two solutions of each of `num_puzzles` puzzles."""
  puzzles = game24.solvable_puzzles()
  pairs = []
  for p in puzzles[::len(puzzles) // num_puzzles][:num_puzzles]:
    for solution in game24.solve(p)[:2]:
      state = [Fraction(x) for x in p]
      for line in solution.steps:
        pairs.append((state, line))
        state = list(countdown.check_step(state, line).state)
  return pairs


def test_parser_agrees_with_check_step_on_solver_steps_and_corruptions():
  states, lines = [], []
  for state, line in _solver_steps():
    for text in [line] + _corruptions(state, line):
      states.append(state)
      lines.append(text)
  want = [countdown.check_step(s, l) for s, l in zip(states, lines)]
  ok, legal, nxt = _jax_verdicts([TOK.encode(l + "\n") for l in lines], states)
  mismatches = [(l, s, w.ok) for l, s, w, g in zip(lines, states, want, legal) if w.ok != g]
  assert not mismatches, mismatches[:5]
  assert sum(w.ok for w in want) > 100 and sum(not w.ok for w in want) > 500
  for w, g, n, o in zip(want, legal, nxt, ok):
    if w.ok:
      assert o and n == sorted(w.state)


HAND_STEPS = [  # state, step: fractions, negatives, multi-token numbers
    ((Fraction(8, 3), 3, 8), "3 - 8/3 = 1/3 (left: 1/3 8)"),
    ((Fraction(1, 3), 8), "8 / 1/3 = 24 (left: 24)"),
    ((Fraction(1, 3), 8), "8 * 1/3 = 8/3 (left: 8/3)"),
    ((Fraction(1, 3), 8), "1/3 / 8 = 1/24 (left: 1/24)"),
    ((Fraction(-1, 3), 2, 5), "-1/3 - 2 = -7/3 (left: -7/3 5)"),
    ((3, 5), "3 - 5 = -2 (left: -2)"),
    ((-2, 4, 6), "-2 * 4 = -8 (left: -8 6)"),
    ((-2, 4, 6), "4 / -2 = -2 (left: -2 6)"),
    ((-3, -2), "-3 * -2 = 6 (left: 6)"),
    ((4, 4, 1), "4 - 4 = 0 (left: 0 1)"),
    ((0, 1), "1 / 0 = 0 (left: 0)"),  # division by zero: illegal
    ((1000, 24), "1000 / 24 = 125/3 (left: 125/3)"),
    ((1000, 24), "1000 - 24 = 976 (left: 976)"),
    ((12345, 5), "12345 - 5 = 12340 (left: 12340)"),
    ((1234, 2, 7), "1234 * 2 = 2468 (left: 7 2468)"),
    ((1234, 2, 7), "1234 * 2 = 2469 (left: 7 2469)"),  # wrong result
    ((Fraction(6, 5), 5), "5 * 6/5 = 6 (left: 6)"),
    ((Fraction(6, 5), 5), "5 * 6/5 = 12/2 (left: 6)"),  # unreduced: still the value 6
    ((Fraction(6, 5), 5), "5 * 6/5 = 6 (left: 6/1)"),
    ((3, 3, 8, 8), "8 / 3 = 8/3 (left: 8/3 3 8)"),
    ((3, 3, 8, 8), "8 / 3 = 8/3 (left: 3 8 8/3)"),  # left in another order
    ((3, 3, 8, 8), "8 / 3 = 8/3 (left: 3 8)"),  # left misses the result
    ((3, 3, 8, 8), "8 / 3 = 16/6 (left: 3 8 8/3)"),
    ((2, 2), "2 * 2 = 4 (left: 4)"),
    ((2, 3), "2 * 2 = 4 (left: 4)"),  # 2 used twice
]


def test_parser_fractions_negatives_and_multi_token_numbers():
  states = [[Fraction(x) for x in s] for s, _ in HAND_STEPS]
  lines = [l for _, l in HAND_STEPS]
  want = [countdown.check_step(s, l) for s, l in zip(states, lines)]
  _, legal, nxt = _jax_verdicts([TOK.encode(l + "\n") for l in lines], states)
  for line, w, g, n in zip(lines, want, legal, nxt):
    assert w.ok == bool(g), line
    if w.ok:
      assert n == sorted(w.state), line
  assert sum(w.ok for w in want) >= 15


def _ids(*pieces):
  return [TOK.id_of(p) for p in pieces]


def test_parser_token_level_rules():
  """Where the jitted checker is stricter than check_step, by design: a step must end
  with its newline token, use the tokenizer's separator pieces, have no spaces
  around it, and keep values below rational.LIMIT. Numbers may span tokens."""
  state = (4, 5, 6, 10)
  line = "10 - 4 = 6 (left: 5 6 6)"
  canonical = TOK.encode(line + "\n")
  rows = {
      "canonical": (canonical, True),
      "digits split": (_ids("1", "0") + canonical[1:], True),  # '1' '0' reads as 10
      "missing newline": (TOK.encode(line), False),
      "tokens after the newline": (canonical + TOK.encode("5"), False),
      "' ' '-' ' ' for ' - '": (_ids("10", " ", "-", " ") + canonical[2:], False),
      "' ' '=' ' ' for ' = '": (canonical[:3] + _ids(" ", "=", " ") + canonical[4:], False),
      "pieces for ' (left: '": (canonical[:5] + TOK.encode(" (") + _ids(*"left:", " ")
                                + canonical[6:], False),
      "two steps": (canonical + canonical, False),
      "leading space": (TOK.encode(" " + line + "\n"), False),  # check_step strips spaces
      "trailing space": (TOK.encode(line + " \n"), False),
      "empty": ([], False),
  }
  # every row decodes to the text of a legal step (or a prefix / repeat of one)
  assert TOK.decode(rows["' ' '-' ' ' for ' - '"][0]) == line + "\n"
  assert TOK.decode(rows["pieces for ' (left: '"][0]) == line + "\n"
  assert countdown.check_step(state, " " + line + " ").ok
  names = list(rows)
  _, legal, _ = _jax_verdicts([rows[n][0] for n in names],
                              [[Fraction(x) for x in state]] * len(names))
  assert {n: bool(g) for n, g in zip(names, legal)} == {n: rows[n][1] for n in names}

  big = [Fraction(20000), Fraction(20000)]
  step = "20000 + 20000 = 40000 (left: 40000)"
  assert countdown.check_step(big, step).ok
  assert not _jax_verdicts([TOK.encode(step + "\n")], [big])[1][0]


class ParseVariantsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_parse_one_step(self):
    ids = TOK.encode("8 / 1/3 = 24 (left: -1/2 24)\n")
    tokens = np.zeros(WIDTH, np.int32)
    tokens[:len(ids)] = ids
    step = self.variant(functools.partial(step_parser.parse, FMT))(tokens, len(ids))
    assert bool(step.ok)
    assert int(step.op) == 3
    np.testing.assert_array_equal(step.a, [8, 1])
    np.testing.assert_array_equal(step.b, [1, 3])
    np.testing.assert_array_equal(step.c, [24, 1])
    assert int(step.num_left) == 2
    np.testing.assert_array_equal(step.left[:3], [[-1, 2], [24, 1], [0, 1]])
    # the same tokens cut before the newline are not a step
    assert not bool(self.variant(functools.partial(step_parser.parse, FMT))(tokens,
                                                                             len(ids) - 1).ok)


# ---------------------------------------------------------------------------------------------
# The step MDP.

SMALL = ModelConfig(vocab_size=TOK.vocab_size, max_len=96, d_model=32, num_layers=1,
                    num_heads=2, d_ff=64)


def _with_candidates(nodes, steps, k):
  """Fills row 0's K candidates with these step texts, checked in Python like `expand`."""
  state = _fractions(nodes.state[0], nodes.count[0])
  s = nodes.cand_tokens.shape[-1]
  cand = np.zeros((1, k, s), np.int32)
  lengths, valid = np.zeros((1, k), np.int32), np.zeros((1, k), bool)
  cand_state, cand_count = np.zeros((1, k, N, 2), np.int32), np.zeros((1, k), np.int32)
  for i, step in enumerate(steps):
    ids = TOK.encode(step + "\n")
    cand[0, i, :len(ids)], lengths[0, i] = ids, len(ids)
    check = countdown.check_step(state, step)
    valid[0, i] = check.ok
    if check.ok:
      cand_state[0, i], cand_count[0, i] = _state(check.state)
  return nodes.replace(cand_tokens=cand, cand_lengths=lengths, cand_valid=valid,
                       cand_state=cand_state, cand_count=cand_count)


_child = jax.jit(step_mdp.child, static_argnames="cfg")


def test_child_appends_steps_and_flags_terminals():
  cfg = SearchConfig(num_candidates=3)
  problem = game24.make("4 5 6 10")
  prompt = problem.prompt()
  node = step_mdp.root_nodes([problem], TOK, SMALL, cfg)
  solution = ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]
  wrong_end = "30 - 6 = 23 (left: 23)"  # illegal
  text = prompt
  for depth, step in enumerate(solution, 1):
    node = _with_candidates(node, ["garbage", step, step], 3)
    dead = _child(node, np.array([0]), cfg)
    assert bool(dead.terminal[0]) and not bool(dead.answered[0])
    assert float(dead.score[0]) == 0.0 and int(dead.length[0]) == int(node.length[0])
    np.testing.assert_array_equal(dead.tokens, node.tokens)
    if depth == 3:
      assert not bool(_with_candidates(node, [wrong_end], 3).cand_valid[0, 0])
    node = _child(node, np.array([1]), cfg)
    text += step + "\n"
    length = int(node.length[0])
    assert TOK.decode(np.asarray(node.tokens[0, :length])) == text
    assert not np.any(np.asarray(node.tokens[0, length:]))
    assert int(node.depth[0]) == depth and int(node.count[0]) == 4 - depth
    assert bool(node.terminal[0]) == (depth == 3) == bool(node.answered[0])
    assert float(node.score[0]) == float(depth == 3)
    assert not np.any(np.asarray(node.cand_valid)) and int(node.nodes[0]) == 0
  # a child of a terminal node is terminal and unchanged
  after = _child(_with_candidates(node, [solution[0]], 3), np.array([0]), cfg)
  assert bool(after.terminal[0]) and int(after.length[0]) == int(node.length[0])


def test_child_terminal_at_max_depth_and_wrong_answer():
  problem = game24.make("4 5 6 10")
  root = step_mdp.root_nodes([problem], TOK, SMALL, SearchConfig(num_candidates=2))
  step = "10 - 4 = 6 (left: 5 6 6)"
  shallow = SearchConfig(num_candidates=2, max_depth=1)  # child() does not validate
  cut = _child(_with_candidates(root, [step, step], 2), np.array([0]), shallow)
  assert bool(cut.terminal[0]) and not bool(cut.answered[0]) and int(cut.count[0]) == 3

  cfg = SearchConfig(num_candidates=2)
  node = root
  for step in ["10 - 4 = 6 (left: 5 6 6)", "6 - 5 = 1 (left: 1 6)", "6 + 1 = 7 (left: 7)"]:
    node = _child(_with_candidates(node, [step], 2), np.array([0]), cfg)
  assert bool(node.terminal[0]) and bool(node.answered[0]) and float(node.score[0]) == 0.0

  learned = SearchConfig(num_candidates=2, use_verifier=False)
  node = root
  for step in ["10 - 4 = 6 (left: 5 6 6)", "6 * 5 = 30 (left: 6 30)", "30 - 6 = 24 (left: 24)"]:
    node = _child(_with_candidates(node, [step], 2), np.array([0]), learned)
  assert bool(node.answered[0]) and float(node.score[0]) == 0.0  # filled in by the PRM
  scored = step_mdp.learned_scores(node.replace(value=jnp.array([0.75], jnp.float32)))
  assert float(scored.score[0]) == 0.75


class DuplicatesTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_duplicates_by_hand(self):
    duplicates = self.variant(step_mdp._duplicates)
    cand = np.array([[1, 2, 3, 0], [1, 2, 3, 0], [4, 5, 0, 0], [1, 2, 3, 0], [4, 5, 0, 0],
                     [1, 2, 0, 0]], np.int32)
    lengths = np.array([3, 3, 2, 3, 2, 2], np.int32)
    np.testing.assert_array_equal(duplicates(cand, lengths),
                                  [False, True, False, True, True, False])
    # the same tokens with different lengths are different steps
    np.testing.assert_array_equal(
        duplicates(np.zeros((2, 4), np.int32), np.array([1, 2], np.int32)), [False, False])
    np.testing.assert_array_equal(
        duplicates(np.zeros((3, 4), np.int32), np.array([2, 2, 2], np.int32)),
        [False, True, True])


def test_config_errors_are_clear():
  with pytest.raises(ValueError, match="num_candidates"):
    SearchConfig(num_candidates=0)
  with pytest.raises(ValueError, match="max_step_tokens"):
    SearchConfig(max_step_tokens=2)
  with pytest.raises(ValueError, match="max_depth"):
    SearchConfig(max_depth=0)
  with pytest.raises(ValueError, match="prior"):
    SearchConfig(prior="max")
  with pytest.raises(ValueError, match="temperature"):
    SearchConfig(temperature=0.0)
  with pytest.raises(ValueError, match="num_simulations"):
    MCTSConfig(num_simulations=0)
  with pytest.raises(ValueError, match="policy"):
    MCTSConfig(policy="uct")
  with pytest.raises(ValueError, match="mode"):
    MCTSConfig(mode="forest")
  with pytest.raises(ValueError, match="max_num_considered_actions=8 exceeds the 4"):
    MCTSConfig(max_num_considered_actions=8).validate(SearchConfig(num_candidates=4))

  problems = [game24.make("4 5 6 10"), game24.make("1 1 4 6")]
  width = max(len(TOK.encode(p.prompt(), bos=True)) for p in problems)
  with pytest.raises(ValueError, match="max_depth=2 is below the 3 steps"):
    SearchConfig(max_depth=2).validate(problems, SMALL, width)
  with pytest.raises(ValueError, match="max_depth=2 is below the 3 steps"):
    step_mdp.root_nodes(problems, TOK, SMALL, SearchConfig(max_depth=2))
  with pytest.raises(ValueError, match="max_numbers=3"):
    step_mdp.root_nodes(problems, TOK, SMALL, SearchConfig(max_numbers=3))
  short = ModelConfig(vocab_size=TOK.vocab_size, max_len=64, d_model=32, num_layers=1,
                      num_heads=2, d_ff=64)
  with pytest.raises(ValueError, match="exceeds the model's max_len 64"):
    step_mdp.root_nodes(problems, TOK, short, SearchConfig())


def test_empty_problem_lists_fail_clearly():
  """No problems is a caller's mistake: say so, rather than fail inside `max()`."""
  with pytest.raises(ValueError, match="no problems to search: give at least one"):
    step_mdp.root_nodes([], TOK, SMALL, SearchConfig())
  cfg = SamplingConfig(8, 0.0, 0, (TOK.eos_id,))
  with pytest.raises(ValueError, match="no prompts to sample: give at least one"):
    sample_prompts(None, SMALL, [], cfg, jax.random.PRNGKey(0), batch_size=2)
  for run in (generations, generate, greedy_accuracy):
    with pytest.raises(ValueError, match="no problems to generate solutions for: give at least"):
      run(None, SMALL, TOK, [], max_new_tokens=8)


def test_search_warns_where_values_can_pass_the_checker_s_limit():
  """The in-search checker computes in int32 and counts values of rational.LIMIT or more as
  invalid: Game of 24 never reaches it (13**4 < 2**15), Countdown's larger numbers can."""
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    step_mdp.root_nodes([game24.make("13 13 13 13")], TOK, SMALL, SearchConfig())
  big = countdown.Countdown.make("25 50 75 100", 100)
  with pytest.warns(UserWarning, match=r"values of 32768 or more \(.* is up to 9375000\)"):
    step_mdp.root_nodes([big], TOK, SMALL, SearchConfig())
  with warnings.catch_warnings():  # no checker, no limit
    warnings.simplefilter("error")
    step_mdp.root_nodes([big], TOK, SMALL, SearchConfig(use_verifier=False))


def test_mcts_rejects_bad_settings_before_compiling():
  """Lowering only traces: a bad setting fails there, with its message."""
  search = SearchConfig(num_candidates=2)
  roots = step_mdp.root_nodes([game24.make("4 5 6 10")], TOK, SMALL, search)
  params = jax.eval_shape(functools.partial(init_params, SMALL), jax.random.PRNGKey(0))
  for mode in ("tree", "play"):
    cfg = MCTSConfig(max_num_considered_actions=3, mode=mode)
    with pytest.raises(ValueError, match="max_num_considered_actions=3 exceeds the 2"):
      mcts.run.lower(params, jax.random.PRNGKey(0), roots, model=SMALL, fmt=FMT,
                     newline_id=TOK.newline_id, search=search, cfg=cfg)
  # a step format built for other states than the search's
  wide = SearchConfig(num_candidates=2, max_numbers=8)
  wide_roots = step_mdp.root_nodes([game24.make("4 5 6 10")], TOK, SMALL, wide)
  with pytest.raises(ValueError, match="StepFormat.max_numbers=6 differs from SearchConfig"):
    mcts.run.lower(params, jax.random.PRNGKey(0), wide_roots, model=SMALL, fmt=FMT,
                   newline_id=TOK.newline_id, search=wide,
                   cfg=MCTSConfig(max_num_considered_actions=2))
  with pytest.raises(ValueError, match="no problems to search"):
    evaluate.batched(lambda rng, roots: None, [], TOK, SMALL, search, batch_size=2, seed=0)


# ---------------------------------------------------------------------------------------------
# MCTS with a tiny model that memorised the solutions of the puzzles it searches.

PUZZLES = ("4 5 6 10", "1 1 4 6", "3 3 8 8", "2 3 5 12", "1 2 4 7", "2 2 6 9")
MODEL = ModelConfig(vocab_size=TOK.vocab_size, max_len=96, d_model=64, num_layers=2,
                    num_heads=4, d_ff=256)
SEARCH = SearchConfig(num_candidates=4)
TRAIN_STEPS = 200


@pytest.fixture(scope="module")
def trained():
  problems = [game24.make(p) for p in PUZZLES]
  pairs = cot_pairs(problems, 2)
  longest = max(len(TOK.encode(p, bos=True) + TOK.encode(c, eos=True)) for p, c in pairs)
  data = sft_arrays(TOK, pairs, -(-longest // 8) * 8)
  opt = OptimizerConfig(learning_rate=3e-3, warmup_steps=20, total_steps=TRAIN_STEPS)
  params = jax.jit(init_params, static_argnums=0)(MODEL, jax.random.PRNGKey(0))
  state = create_train_state(None, MODEL, opt, params=params)
  state, _ = train(state, data, functools.partial(sft_step, config=MODEL),
                   num_steps=TRAIN_STEPS, batch_size=len(data["tokens"]), seed=0)
  roots = step_mdp.root_nodes(problems, TOK, MODEL, SEARCH)
  return problems, state.params, roots


def _run(params, roots, seed, search=SEARCH, **cfg):
  return mcts.run(params, jax.random.PRNGKey(seed), roots, model=MODEL, fmt=FMT,
                  newline_id=TOK.newline_id, search=search, cfg=MCTSConfig(**cfg))


def _summary(out, problems, roots):
  return results.summarize(out, problems, roots.length, TOK)


def test_tree_search_finds_memorised_solutions(trained):
  problems, params, roots = trained
  out = _run(params, roots, 0, num_simulations=8)
  summary = _summary(out, problems, roots)
  np.testing.assert_array_equal(np.asarray(out.score) == 1.0, summary["correct"])
  assert summary["accuracy"] >= 0.8, summary  # as greedy decoding must on these puzzles
  if summary["accuracy"] < 1.0:
    greedy, _ = greedy_accuracy(params, MODEL, TOK, problems, max_new_tokens=64, batch_size=8)
    assert summary["accuracy"] >= greedy, summary
  assert np.all(np.asarray(out.nodes) >= SEARCH.num_candidates)
  np.testing.assert_allclose(np.asarray(out.root_weights).sum(1), 1.0, rtol=1e-6)


def test_more_simulations_are_not_worse(trained):
  problems, params, roots = trained
  acc = {sims: np.mean([_summary(_run(params, roots, seed, num_simulations=sims), problems,
                                 roots)["accuracy"] for seed in range(3)]) for sims in (2, 8)}
  assert acc[8] >= acc[2], acc
  assert acc[8] > 0.5, acc


def test_search_is_deterministic_for_a_seed(trained):
  _, params, roots = trained
  first = jax.device_get(_run(params, roots, 3, num_simulations=8, gumbel_scale=1.0))
  again = jax.device_get(_run(params, roots, 3, num_simulations=8, gumbel_scale=1.0))
  chex.assert_trees_all_equal(first, again)


def _tree(params, roots, seed, **cfg):
  return jax.device_get(mcts.tree_search(
      params, jax.random.PRNGKey(seed), roots, model=MODEL, fmt=FMT,
      newline_id=TOK.newline_id, search=SEARCH, cfg=MCTSConfig(**cfg)))


def test_tree_never_visits_invalid_candidates_and_counts_work(trained):
  _, params, roots = trained
  mixed = 0
  for seed in range(2):
    _, out = _tree(params, roots, seed, num_simulations=8, policy="puct")
    tree, emb = out.search_tree, out.search_tree.embeddings
    filled_BxS = tree.node_visits > 0
    valid_BxSxK = emb.cand_valid
    has_valid_BxS = filled_BxS & valid_BxSxK.any(-1)
    visited_BxSxK = tree.children_visits > 0
    bad = has_valid_BxS[..., None] & visited_BxSxK & ~valid_BxSxK
    assert not bad.any(), np.argwhere(bad)
    mixed += int((has_valid_BxS & ~valid_BxSxK.all(-1) & visited_BxSxK.any(-1)).sum())
    for b, node in zip(*np.nonzero(filled_BxS)):  # visited siblings are distinct steps
      steps = [tuple(emb.cand_tokens[b, node, a, :emb.cand_lengths[b, node, a]])
               for a in np.nonzero(visited_BxSxK[b, node])[0]]
      assert len(set(steps)) == len(steps) or not has_valid_BxS[b, node]
    # the root's invalid candidates are masked for mctx too
    np.testing.assert_array_equal(tree.root_invalid_actions, ~emb.cand_valid[:, 0])

    # compute accounting: K candidates per expanded live node, nothing for terminals
    live_BxS = filled_BxS & ~emb.terminal
    k = SEARCH.num_candidates
    np.testing.assert_array_equal(emb.nodes.sum(1), k * live_BxS.sum(1))
    np.testing.assert_array_equal(emb.nodes, np.where(live_BxS, k, 0))
    np.testing.assert_array_equal(emb.tokens_generated,
                                  np.where(live_BxS, emb.cand_lengths.sum(-1), 0))
    np.testing.assert_array_equal(emb.lm_calls,
                                  np.where(live_BxS, 1 + emb.cand_lengths.max(-1), 0))
    np.testing.assert_array_equal(emb.tokens_processed,
                                  np.where(live_BxS, emb.length + emb.tokens_generated, 0))
    # a node's prefix is its parent's plus the chosen candidate
    b, s = np.nonzero(filled_BxS & (tree.parents >= 0))
    parent, action = tree.parents[b, s], tree.action_from_parent[b, s]
    chosen_valid = emb.cand_valid[b, parent, action]
    grow = np.where(chosen_valid, emb.cand_lengths[b, parent, action], 0)
    np.testing.assert_array_equal(emb.length[b, s], emb.length[b, parent] + grow)
    np.testing.assert_array_equal(emb.depth[b, s], emb.depth[b, parent] + 1)
  assert mixed > 0  # some node had both valid and invalid candidates: the check has teeth


def test_seeds_change_the_candidates(trained):
  _, params, roots = trained
  a = _tree(params, roots, 0, num_simulations=8, policy="puct")[0]
  b = _tree(params, roots, 1, num_simulations=8, policy="puct")[0]
  assert not np.array_equal(a.cand_tokens, b.cand_tokens)


def test_play_mode_answers(trained):
  problems, params, roots = trained
  out = _run(params, roots, 0, num_simulations=4, mode="play")
  summary = _summary(out, problems, roots)
  answered = np.asarray(out.answered)
  assert answered.mean() >= 0.5, summary
  np.testing.assert_array_equal(np.asarray(out.score) == 1.0, summary["correct"])
  assert summary["accuracy"] > 0.5, summary
  # each committed answer is a chain of legal steps from the prompt
  texts = results.answer_texts(out, roots.length, TOK)
  for p, t, a in zip(problems, texts, answered):
    if a:
      assert countdown.answer_from_steps(p.numbers, p.target, t.splitlines()) != ""
  assert np.all(np.asarray(out.nodes) >= SEARCH.num_candidates)
  assert np.all(np.asarray(out.lm_calls) > 0)


def test_learned_scores_commit_to_answers(trained):
  problems, params, roots = trained
  search = SearchConfig(num_candidates=4, use_verifier=False)
  out = jax.device_get(_run(params, roots, 0, search=search, num_simulations=8))
  assert out.answered.any()
  score = out.score
  assert np.all((score >= 0.0) & (score <= 1.0))
  assert np.all(score[~out.answered] == 0.0)
  summary = results.summarize(out, problems, roots.length, TOK)
  assert len(summary["answers"]) == len(problems)


# ---------------------------------------------------------------------------------------------
# Whole-solution generation with the same memorising model.

def test_greedy_generation_solves_memorised_puzzles_in_any_chunking(trained):
  problems, params, _ = trained
  accuracy, texts = greedy_accuracy(params, MODEL, TOK, problems, max_new_tokens=64, batch_size=4)
  assert accuracy >= 0.8, texts  # padded last chunk: 6 puzzles in chunks of 4
  again = generations(params, MODEL, TOK, problems, max_new_tokens=64, batch_size=6)
  assert again.texts == texts and again.ended.all()
  np.testing.assert_array_equal(again.lengths, [len(TOK.encode(t)) + 1 for t in texts])
  cut = generations(params, MODEL, TOK, problems, max_new_tokens=5, batch_size=6)
  assert not cut.ended.any() and (cut.lengths == 5).all()
  assert generate(params, MODEL, TOK, problems, max_new_tokens=5, batch_size=6) == cut.texts
  assert all(t.endswith("\n") or "Answer:" in t for t in texts)


def test_sample_prompts_rows_and_sampled_scores(trained):
  problems, params, _ = trained
  prompts = [TOK.encode(p.prompt(), bos=True) for p in problems]
  cfg = SamplingConfig(64, 1.0, 0, (TOK.eos_id,))
  out = sample_prompts(params, MODEL, prompts, cfg, jax.random.PRNGKey(0), batch_size=4,
                       group_size=3)
  chex.assert_shape(out.tokens_BxN, (18, 64))
  chex.assert_shape([out.lengths_B, out.stopped_B], (18,))
  assert isinstance(out.tokens_BxN, np.ndarray)
  # row i*G + g belongs to prompt i: every sample of a memorised puzzle answers it
  answers = [answer_line(TOK.decode(row)) for row in out.tokens_BxN]
  correct = np.array([problems[i // 3].verify(a).ok for i, a in enumerate(answers)])
  scores = metacot_eval.sampled(params, MODEL, TOK, problems, samples=3, max_new_tokens=64,
                                rng=jax.random.PRNGKey(0), batch_size=4)
  assert scores["success_rate"] == pytest.approx(correct.mean())
  assert scores["pass_at_k"] == pytest.approx(correct.reshape(6, 3).any(1).mean())
  assert scores["success_rate"] > 0.5, answers
