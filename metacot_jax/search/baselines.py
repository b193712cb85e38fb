"""Baselines on the step MDP and the same LM: beam / BFS, best-first / DFS, sampling, greedy.

Every method spends compute in the units of `step_mdp.expand` (ToT's and
TS-LLM's): `nodes` are candidate steps generated, `tokens_processed` counts every
prefix read by a prefill (recomputed prefixes count again) plus the tokens
generated, `lm_calls` counts forward calls (one per prefill, one per decode step).
Reading a child's PRM value is one more prefill of the child's prefix.

- `beam`: step-level beam search; keeps the `beam_width` best children per level
  ranked by cumulative policy log-prob (`score='logprob'`) or by their PRM value
  (`score='value'`, ToT's BFS). Fixed budget: `max_depth` levels for every problem.
- `best_first`: a frontier of nodes per problem; pops the best (PRM value, or
  depth first for DFS with backtracking), expands it, pushes children whose value
  clears a threshold; stops per problem at a solution (or, without the verifier,
  at the first answer, committed to unchecked).
- `greedy` and `sample_n`: whole solutions decoded in one KV-cached call; `sample_n`
  gives pass@k, maj@k and best-of-N by the PRM as curves of accuracy against compute.

`beam`, `best_first` (of params, rng, roots) and `greedy` (of params, roots) each
run as one jitted call with fixed shapes and `lax` loops, batched over problems;
all return `results.SearchOutput`, as does `sample_n`'s best-of-N choice.
"""

from __future__ import annotations

import collections
import functools
from typing import NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metacot_jax import scale
from metacot_jax.data.tokenizer import Tokenizer, pad_batch
from metacot_jax.models import sampling
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search import step_mdp
from metacot_jax.search.greedy import answer_line
from metacot_jax.search.results import COMPUTE_FIELDS, SearchOutput, pass_at_k
from metacot_jax.search.step_mdp import Node, SearchConfig
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks.countdown import Countdown

NEG_INF = -jnp.inf


def _work(nodes: Node) -> list[jax.Array]:
  return [nodes.nodes, nodes.tokens_generated, nodes.tokens_processed, nodes.lm_calls]


def _bcast(mask, x):
  """Broadcasts a mask over the trailing axes of x."""
  return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def _all_children(nodes: Node, cfg: SearchConfig) -> Node:
  """Every candidate's child of expanded nodes [M]: [M*K], row-major (node m's at m*K..)."""
  m, k = nodes.length.shape[0], cfg.num_candidates
  parents = jax.tree.map(lambda x: jnp.repeat(x, k, axis=0), nodes)
  return step_mdp.child(parents, jnp.tile(jnp.arange(k), m), cfg)


def _value_params(params):
  """The PRM's params: a separate value network (`step_mdp.PolicyValue`) or the policy's."""
  policy, value = step_mdp.split_params(params)
  return policy if value is None else value


def _child_values(params, model: ModelConfig, children: Node, needed_M):
  """PRM values of children [M] by one prefill of their prefixes; work [M] where needed."""
  pre = sampling.prefill(_value_params(params), model, children.tokens, children.length)
  value_M = jnp.where(needed_M, jax.nn.sigmoid(pre.value_logits_B), 0.0)
  processed_M = jnp.where(needed_M, children.length, 0)
  return children.replace(value=value_M), processed_M, needed_M.astype(jnp.int32)


def _lex_argmax(mask, primary, secondary):
  """Index along the last axis of the max of (primary, then secondary) where mask holds."""
  p = jnp.where(mask, primary, NEG_INF)
  top = mask & (p == jnp.max(p, axis=-1, keepdims=True))
  s = jnp.where(top, secondary, NEG_INF)
  return jnp.argmax(top & (s == jnp.max(s, axis=-1, keepdims=True)), axis=-1)


def _gather(tree, index_BxJ):
  """Entries [B, J, ...] at index_BxJ along axis 1 of every leaf [B, C, ...]."""
  return jax.tree.map(jax.vmap(lambda x, i: x[i]), tree, jax.tree.map(lambda _: index_BxJ, tree))


class _Answer(NamedTuple):
  """The best answered node seen so far, per problem [B]."""
  tokens: jax.Array  # [B, T]
  length: jax.Array  # [B]
  answered: jax.Array  # [B] bool
  score: jax.Array  # [B]
  tiebreak: jax.Array  # [B] second key after the score (value or log-prob)

  @classmethod
  def empty(cls, roots: Node) -> "_Answer":
    b = roots.length.shape[0]
    return cls(jnp.asarray(roots.tokens), jnp.asarray(roots.length), jnp.zeros(b, bool),
               jnp.zeros(b, jnp.float32), jnp.full(b, NEG_INF, jnp.float32))

  def update(self, children_BxC: Node, mask_BxC, tiebreak_BxC) -> "_Answer":
    """Keeps the best of this and the answered children in mask, by (score, tiebreak)."""
    ok_BxC = mask_BxC & children_BxC.answered
    i_B = _lex_argmax(ok_BxC, children_BxC.score, tiebreak_BxC)
    rows = jnp.arange(i_B.shape[0])
    found_B = ok_BxC[rows, i_B]
    score_B, tie_B = children_BxC.score[rows, i_B], tiebreak_BxC[rows, i_B]
    better_B = found_B & (~self.answered | (score_B > self.score)
                          | ((score_B == self.score) & (tie_B > self.tiebreak)))
    pick = lambda new, old: jnp.where(_bcast(better_B, old), new, old)
    return _Answer(pick(children_BxC.tokens[rows, i_B], self.tokens),
                   pick(children_BxC.length[rows, i_B], self.length), self.answered | better_B,
                   pick(score_B, self.score), pick(tie_B, self.tiebreak))


def _output(answer: _Answer, work, root_weights_BxK, root_value_B) -> SearchOutput:
  return SearchOutput(answer.tokens, answer.length, answer.answered,
                      jnp.where(answer.answered, answer.score, 0.0), *work, root_weights_BxK,
                      root_value_B)


def _kept_weights(kept_BxK):
  """The search policy at the root: uniform over the children the search kept."""
  kept_BxK = kept_BxK.astype(jnp.float32)
  return kept_BxK / jnp.maximum(kept_BxK.sum(-1, keepdims=True), 1.0)


# ---------------------------------------------------------------------------------------------
# Beam search (policy log-prob) and ToT's BFS (PRM value).


def beam(params, rng, roots: Node, *, model: ModelConfig, fmt: StepFormat, newline_id: int,
         search: SearchConfig, beam_width: int, score: str = "logprob") -> SearchOutput:
  """Step-level beam search from unexpanded roots [B] (see `step_mdp.root_nodes`).

  Each of `search.max_depth` levels expands the kept nodes [B, b] (K candidates
  each) and keeps the b valid, unfinished children of the highest rank:
  cumulative prior (`score='logprob'`, the sum over steps of `expand`'s prior, so
  `search.prior` picks per-step mean or sum) or PRM value (`score='value'`, ToT's
  BFS; one prefill per valid child reads it). The answer is the best answered
  child of any level by (score, then rank). Without the verifier an answered
  child's score is its PRM value, read by a prefill counted in its work.
  """
  return _beam(params, rng, roots, model=model, fmt=fmt, newline_id=newline_id, search=search,
               beam_width=beam_width, score=score)[0]


@functools.partial(jax.jit, static_argnames=("model", "fmt", "newline_id", "search", "beam_width",
                                             "score"))
def _beam(params, rng, roots: Node, *, model, fmt, newline_id, search: SearchConfig,
          beam_width: int, score: str):
  """`beam`, plus a trace per level: the beam (tokens [D, B, b, T], live [D, B, b]) and the
  children whose value was read (count and prefix tokens, [D, B])."""
  if score not in ("logprob", "value"):
    raise ValueError(f"score must be 'logprob' or 'value', got {score!r}")
  if beam_width < 1:
    raise ValueError(f"beam_width must be at least 1, got {beam_width}")
  bsz, b, k = roots.length.shape[0], beam_width, search.num_candidates
  roots = jax.tree.map(jnp.asarray, roots)
  # The beam [B, b]: slot 0 holds the root, the others start empty (terminal: never expanded).
  kept = jax.tree.map(lambda x: jnp.repeat(x[:, None], b, axis=1), roots)
  kept = kept.replace(terminal=kept.terminal | (jnp.arange(b) > 0)[None])
  cum_BxB = jnp.zeros((bsz, b), jnp.float32)
  work = [jnp.zeros(bsz, jnp.int32) for _ in COMPUTE_FIELDS]

  def level(carry, inputs):
    kept, cum_BxB, answer, work, root_weights, root_value = carry
    key, depth = inputs
    flat = jax.tree.map(lambda x: x.reshape((bsz * b,) + x.shape[2:]), kept)
    live_BxB = ~kept.terminal
    flat, prior_MxK = step_mdp.expand(params, key, flat, model=model, fmt=fmt,
                                      newline_id=newline_id, cfg=search)
    work = [w + f.reshape(bsz, b).sum(1) for w, f in zip(work, _work(flat))]
    root_value = jnp.where(depth == 0, flat.value.reshape(bsz, b)[:, 0], root_value)

    kids = _all_children(flat, search)  # [B*b*K]
    valid = flat.cand_valid.reshape(-1)
    processed, calls = jnp.zeros((2, bsz * b * k), jnp.int32)
    if score == "value" or not search.use_verifier:
      needed = valid if score == "value" else valid & kids.answered
      kids, processed, calls = _child_values(params, model, kids, needed)
    valued_B, valued_tokens_B = calls.reshape(bsz, -1).sum(1), processed.reshape(bsz, -1).sum(1)
    work[2] = work[2] + valued_tokens_B
    work[3] = work[3] + valued_B
    if not search.use_verifier:
      kids = step_mdp.learned_scores(kids)
    if score == "value":
      rank = kids.value
    else:
      rank = jnp.repeat(cum_BxB.reshape(-1), k) + jnp.where(valid, prior_MxK.reshape(-1), 0.0)
    rank = jnp.where(valid, rank, NEG_INF)

    kids_BxC = jax.tree.map(lambda x: x.reshape((bsz, b * k) + x.shape[1:]), kids)
    rank_BxC, valid_BxC = rank.reshape(bsz, -1), valid.reshape(bsz, -1)
    answer = answer.update(kids_BxC, valid_BxC, rank_BxC)

    open_BxC = jnp.where(valid_BxC & ~kids_BxC.terminal, rank_BxC, NEG_INF)
    top_BxB, index_BxB = jax.lax.top_k(open_BxC, b)
    keep_BxB = top_BxB > NEG_INF
    kept = _gather(kids_BxC, index_BxB)
    kept = kept.replace(terminal=kept.terminal | ~keep_BxB)
    cum_BxB = jnp.where(keep_BxB, top_BxB, 0.0)
    chosen_BxK = jnp.sum(jax.nn.one_hot(index_BxB, b * k) * keep_BxB[..., None], 1)[:, :k]
    root_weights = jnp.where(depth == 0, _kept_weights(chosen_BxK > 0), root_weights)
    trace = {"tokens": flat.tokens.reshape(bsz, b, -1), "live": live_BxB, "valued": valued_B,
             "valued_tokens": valued_tokens_B}
    return (kept, cum_BxB, answer, work, root_weights, root_value), trace

  carry = (kept, cum_BxB, _Answer.empty(roots), work, jnp.zeros((bsz, k), jnp.float32),
           jnp.zeros(bsz, jnp.float32))
  inputs = (jax.random.split(rng, search.max_depth), jnp.arange(search.max_depth))
  (_, _, answer, work, root_weights, root_value), trace = jax.lax.scan(level, carry, inputs)
  out = _output(answer, work, root_weights, root_value)
  chex.assert_shape(out.answer_tokens, (bsz, model.max_len))
  chex.assert_shape([out.answered, out.score, out.nodes, out.root_value], (bsz,))
  return out, trace


# ---------------------------------------------------------------------------------------------
# Best-first search (A* with the PRM as heuristic) and DFS with a value threshold.


def best_first(params, rng, roots: Node, *, model: ModelConfig, fmt: StepFormat, newline_id: int,
               search: SearchConfig, max_expansions: int, frontier_size: int = 64,
               order: str = "value", value_threshold: float = 0.0) -> SearchOutput:
  """Frontier search from unexpanded roots [B], at most `max_expansions` expansions each.

  Per problem a fixed frontier of `frontier_size` nodes with priorities; each
  iteration pops the highest, expands it (K candidates), reads the children's PRM
  values (one prefill each) and pushes the valid unfinished children whose value is
  at least `value_threshold`, dropping the lowest priorities when full. Priority:
  `order='value'` the PRM value (best-first, i.e. A* with h = value and no step
  cost); `order='dfs'` depth * 10 + value (deepest first, best sibling first;
  popping a shallower sibling when a branch dies is the backtracking). A problem
  stops counting work at a solution (with the verifier) or at the first answered
  node (without it, committed to unchecked); else its answer is the best answered
  node seen by (score, value).
  """
  return _best_first(params, rng, roots, model=model, fmt=fmt, newline_id=newline_id,
                     search=search, max_expansions=max_expansions, frontier_size=frontier_size,
                     depth_weight=_depth_weight(order), value_threshold=value_threshold)[0]


def _depth_weight(order: str) -> float:
  """Priority = depth * weight + value: 0 orders by value, 10 (> any value) deepest first."""
  if order not in ("value", "dfs"):
    raise ValueError(f"order must be 'value' or 'dfs', got {order!r}")
  return 0.0 if order == "value" else 10.0


@functools.partial(jax.jit, static_argnames=("model", "fmt", "newline_id", "search",
                                             "max_expansions", "frontier_size"))
def _best_first(params, rng, roots: Node, *, model, fmt, newline_id, search: SearchConfig,
                max_expansions: int, frontier_size: int, depth_weight, value_threshold):
  """`best_first` with a traced priority (one compile serves both orders), plus a trace per
  iteration [E, B]: whether a node was expanded, its depth and length, and the children
  whose value was read (count and prefix tokens)."""
  if max_expansions < 1 or frontier_size < 1:
    raise ValueError(f"max_expansions ({max_expansions}) and frontier_size ({frontier_size}) "
                     "must be at least 1")
  bsz, f, k = roots.length.shape[0], frontier_size, search.num_candidates
  roots = jax.tree.map(jnp.asarray, roots)
  rows = jnp.arange(bsz)
  frontier = jax.tree.map(lambda x: jnp.repeat(x[:, None], f, axis=1), roots)  # [B, F]
  priority_BxF = jnp.where(jnp.arange(f) == 0, 0.0, NEG_INF)[None].repeat(bsz, 0)
  work = [jnp.zeros(bsz, jnp.int32) for _ in COMPUTE_FIELDS]
  trace = {name: jnp.zeros((max_expansions, bsz), jnp.int32)
           for name in ("live", "depth", "length", "valued", "valued_tokens")}

  def cond(carry):
    it, _, priority_BxF, done_B, *_ = carry
    return (it < max_expansions) & jnp.any(~done_B & jnp.any(priority_BxF > NEG_INF, 1))

  def body(carry):
    it, frontier, priority_BxF, done_B, answer, work, root_weights, root_value, trace = carry
    pop_B = jnp.argmax(priority_BxF, 1)
    active_B = (priority_BxF[rows, pop_B] > NEG_INF) & ~done_B
    node = jax.tree.map(lambda x: x[rows, pop_B], frontier)
    node = node.replace(terminal=node.terminal | ~active_B)
    priority_BxF = priority_BxF.at[rows, pop_B].set(
        jnp.where(active_B, NEG_INF, priority_BxF[rows, pop_B]))
    node, _ = step_mdp.expand(params, jax.random.fold_in(rng, it), node, model=model, fmt=fmt,
                              newline_id=newline_id, cfg=search)
    work = [w + jnp.where(active_B, x, 0) for w, x in zip(work, _work(node))]
    root_value = jnp.where(it == 0, node.value, root_value)

    kids = _all_children(node, search)  # [B*K]
    valid = node.cand_valid.reshape(-1)
    kids, processed, calls = _child_values(params, model, kids, valid)
    valued_B, valued_tokens_B = calls.reshape(bsz, k).sum(1), processed.reshape(bsz, k).sum(1)
    work[2] = work[2] + valued_tokens_B
    work[3] = work[3] + valued_B
    if not search.use_verifier:
      kids = step_mdp.learned_scores(kids)
    kids_BxK = jax.tree.map(lambda x: x.reshape((bsz, k) + x.shape[1:]), kids)
    valid_BxK = valid.reshape(bsz, k)
    answer = answer.update(kids_BxK, valid_BxK, kids_BxK.value)
    answered_BxK = valid_BxK & kids_BxK.answered
    if search.use_verifier:
      answered_BxK = answered_BxK & (kids_BxK.score >= 1.0)
    done_B = done_B | jnp.any(answered_BxK, 1)

    push_BxK = valid_BxK & ~kids_BxK.terminal & (kids_BxK.value >= value_threshold)
    kid_priority = jnp.where(push_BxK, kids_BxK.depth * depth_weight + kids_BxK.value, NEG_INF)
    both = jnp.concatenate([priority_BxF, kid_priority], 1)  # [B, F+K]
    priority_BxF, keep_BxF = jax.lax.top_k(both, f)
    merged = jax.tree.map(lambda a, c: jnp.concatenate([a, c], 1), frontier, kids_BxK)
    frontier = _gather(merged, keep_BxF)
    root_weights = jnp.where(it == 0, _kept_weights(push_BxK), root_weights)
    now = {"live": active_B, "depth": node.depth, "length": node.length,
           "valued": valued_B, "valued_tokens": valued_tokens_B}
    trace = {name: trace[name].at[it].set(jnp.where(active_B, now[name], 0).astype(jnp.int32))
             for name in trace}
    return (it + 1, frontier, priority_BxF, done_B, answer, work, root_weights, root_value,
            trace)

  carry = (jnp.int32(0), frontier, priority_BxF, jnp.zeros(bsz, bool), _Answer.empty(roots), work,
           jnp.zeros((bsz, k), jnp.float32), jnp.zeros(bsz, jnp.float32), trace)
  _, _, _, _, answer, work, root_weights, root_value, trace = jax.lax.while_loop(
      cond, body, carry)
  out = _output(answer, work, root_weights, root_value)
  chex.assert_shape(out.answer_tokens, (bsz, model.max_len))
  chex.assert_shape([out.answered, out.score, out.nodes, out.root_value], (bsz,))
  return out, {name: x.astype(bool) if name == "live" else x for name, x in trace.items()}


# ---------------------------------------------------------------------------------------------
# Whole solutions: greedy decoding and N samples (pass@k, maj@k, best-of-N by the PRM).


def _append(prompt_BxT, prompt_lengths_B, generated_BxN, keep_B):
  """Prompts [B, T] followed by the first keep_B generated tokens of each row."""
  offset_BxT = jnp.arange(prompt_BxT.shape[1])[None] - prompt_lengths_B[:, None]
  index_BxT = jnp.clip(offset_BxT, 0, generated_BxN.shape[1] - 1)
  appended_BxT = jnp.take_along_axis(generated_BxN, index_BxT, 1)
  in_new_BxT = (offset_BxT >= 0) & (offset_BxT < keep_B[:, None])
  return jnp.where(in_new_BxT, appended_BxT, jnp.where(offset_BxT < 0, prompt_BxT, 0))


def _solution_rows(params, prompt_BxT, prompt_lengths_B, prompt_value_logits_B,
                   out: sampling.Samples, *, model: ModelConfig, newline_id: int, answer_id: int
                   ) -> tuple[SearchOutput, jax.Array]:
  """Whole generations [B] as search outputs, and their final PRM values [B].

  The answer node is the prompt plus the step lines before the first `Answer: `
  line (so `results.summarize` checks the steps, as for step-level search);
  answered when such a line was generated and the row stopped. The score is the
  PRM value (learned) of the steps, read where the PRM is trained to read it: at the
  end of the last step line, or of the prompt (`prompt_value_logits_B`, the policy's
  prefill) when the answer comes first; with a separate value network
  (`step_mdp.PolicyValue`) by one more prefill of the prompt and steps, counted as a
  whole-sequence prefill. A node is a generated line before the answer. There is no
  search at the root: `root_weights` [B, 1] and `root_value` are zeros.
  """
  bsz, n = out.tokens_BxN.shape
  t = jnp.arange(n)
  generated_BxN = t[None] < out.lengths_B[:, None]
  line_start_BxN = jnp.concatenate(
      [jnp.ones((bsz, 1), bool), out.tokens_BxN[:, :-1] == newline_id], 1)
  is_answer_BxN = (out.tokens_BxN == answer_id) & line_start_BxN & generated_BxN
  answered_B = jnp.any(is_answer_BxN, 1) & out.stopped_B
  steps_end_B = jnp.where(jnp.any(is_answer_BxN, 1), jnp.argmax(is_answer_BxN, 1), out.lengths_B)
  generated = out.lengths_B.astype(jnp.int32)
  processed_B, calls_B = prompt_lengths_B + generated, 1 + generated
  _, value_params = step_mdp.split_params(params)
  # The PRM scores prefixes that end a step line (what it is trained on): here the
  # last step line before the answer, or the prompt where there is none (as the
  # value network's prefill below reads it; not the value after `Answer: `).
  if value_params is None:
    at_end_B = out.values_BxN[jnp.arange(bsz), jnp.maximum(steps_end_B - 1, 0)]
    value_B = jax.nn.sigmoid(jnp.where(steps_end_B > 0, at_end_B, prompt_value_logits_B))
  else:
    steps_BxT = _append(prompt_BxT, prompt_lengths_B, out.tokens_BxN, steps_end_B)
    value_B = jax.nn.sigmoid(sampling.prefill(value_params, model, steps_BxT,
                                              prompt_lengths_B + steps_end_B).value_logits_B)
    processed_B, calls_B = 2 * processed_B, calls_B + 1

  tokens_BxT = _append(prompt_BxT, prompt_lengths_B, out.tokens_BxN, steps_end_B)
  nodes_B = jnp.sum((out.tokens_BxN == newline_id) & (t[None] < steps_end_B[:, None]), 1)
  output = SearchOutput(
      tokens_BxT.astype(jnp.int32), (prompt_lengths_B + steps_end_B).astype(jnp.int32),
      answered_B, jnp.where(answered_B, value_B, 0.0), nodes_B.astype(jnp.int32), generated,
      processed_B.astype(jnp.int32), calls_B.astype(jnp.int32),
      jnp.zeros((bsz, 1), jnp.float32), jnp.zeros(bsz, jnp.float32))
  return output, value_B


def greedy(params, roots: Node, *, model: ModelConfig, newline_id: int, eos_id: int,
           answer_id: int, max_new_tokens: int) -> SearchOutput:
  """Greedy whole-solution decoding from the roots' prompts [B], until `<eos>`.

  One prefill (reading the prompt) and one forward per generated token. The
  answer node holds the generated step lines (see `_solution_rows`). Called with
  concrete roots, it first checks that prompts plus `max_new_tokens` fit the context.
  """
  if not isinstance(roots.length, jax.core.Tracer):
    check_greedy_fits(roots, model, max_new_tokens)
  return _greedy(params, roots, model=model, newline_id=newline_id, eos_id=eos_id,
                 answer_id=answer_id, max_new_tokens=max_new_tokens)


@functools.partial(jax.jit, static_argnames=("model", "newline_id", "eos_id", "answer_id",
                                             "max_new_tokens"))
def _greedy(params, roots: Node, *, model: ModelConfig, newline_id: int, eos_id: int,
            answer_id: int, max_new_tokens: int) -> SearchOutput:
  cfg = sampling.SamplingConfig(max_new_tokens, 0.0, 0, (eos_id,))
  policy, _ = step_mdp.split_params(params)
  pre = sampling.prefill(policy, model, roots.tokens, roots.length)
  out = sampling.decode(policy, model, jax.random.PRNGKey(0), pre, cfg)
  output, _ = _solution_rows(params, jnp.asarray(roots.tokens), jnp.asarray(roots.length),
                             pre.value_logits_B, out, model=model, newline_id=newline_id,
                             answer_id=answer_id)
  return output


def check_greedy_fits(roots: Node, model: ModelConfig, max_new_tokens: int):
  """Fails (host side) when a prompt plus `max_new_tokens` exceeds the context."""
  longest = int(np.max(np.asarray(roots.length)))
  if longest + max_new_tokens > model.max_len:
    raise ValueError(f"prompt ({longest} tokens) + max_new_tokens {max_new_tokens} exceeds the "
                     f"model's max_len {model.max_len}")


class SampleSet(NamedTuple):
  """N whole solutions per problem (host side; [B, N] arrays, row-major per problem)."""
  texts: list[list[str]]  # generations, up to `<eos>`
  answers: list[list[str]]  # their first `Answer:` line ('' when none or cut off)
  correct: np.ndarray  # [B, N] bool: the answer verifies
  values: np.ndarray  # [B, N] PRM value at the end of the last step line (of the prompt if none)
  compute: dict  # field -> [B, N] int work of each sample (COMPUTE_FIELDS)
  best_of_n: SearchOutput  # [B] the sample with the highest value, work summed over N


@functools.partial(jax.jit, static_argnames=("model", "cfg", "newline_id", "answer_id"))
def _sample_rows(params, rng, prompts_BxW, full_BxT, lengths_B, *, model: ModelConfig,
                 cfg: sampling.SamplingConfig, newline_id: int, answer_id: int):
  """Samples (as `sampling.sample`) then `_solution_rows`, in one call: the prefill's prompt
  values stay on device for answers with no step line. Returns (samples, rows, values)."""
  policy, _ = step_mdp.split_params(params)
  pre = sampling.prefill(policy, model, prompts_BxW, lengths_B)
  out = sampling.decode(policy, model, rng, pre, cfg)
  outputs, values = _solution_rows(params, full_BxT, lengths_B, pre.value_logits_B, out,
                                   model=model, newline_id=newline_id, answer_id=answer_id)
  return out, outputs, values


@functools.partial(jax.jit, static_argnames=("n",))
def _best_of_rows(rows: SearchOutput, values_BN, *, n: int) -> SearchOutput:
  """Per problem, the answered row with the highest value; work summed over its n rows."""
  bsz = values_BN.shape[0] // n
  grouped = jax.tree.map(lambda x: x.reshape((bsz, n) + x.shape[1:]), rows)
  key_BxN = jnp.where(grouped.answered, values_BN.reshape(bsz, n), NEG_INF)
  i_B = jnp.argmax(key_BxN, 1)
  r = jnp.arange(bsz)
  return SearchOutput(grouped.answer_tokens[r, i_B], grouped.answer_length[r, i_B],
                      grouped.answered[r, i_B], grouped.score[r, i_B],
                      *[getattr(grouped, f).sum(1) for f in COMPUTE_FIELDS],
                      jnp.zeros((bsz, 1), jnp.float32), jnp.zeros(bsz, jnp.float32))


def sample_n(params, rng, problems: Sequence[Countdown], tokenizer: Tokenizer, model: ModelConfig,
             n: int, max_new_tokens: int, temperature: float = 1.0, mesh=None) -> SampleSet:
  """N sampled solutions per problem in one jitted batched call; verdicts and compute.

  Rows are the prompts repeated n times (each row prefilled on its own: 1 prefill +
  one forward per generated token), split over the `data` axis of `mesh` if given.
  Verdicts verify the first `Answer:` line of a generation that ended (at `<eos>`); a
  cut-off one has no answer.
  """
  if n < 1:
    raise ValueError(f"n must be at least 1, got {n}")
  if not problems:
    raise ValueError("no problems to sample solutions for: give at least one")
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  rows = [p for p in prompts for _ in range(n)]
  padded, real = scale.pad_rows(rows, mesh)
  width = max(len(p) for p in rows)
  cfg = sampling.SamplingConfig(max_new_tokens, temperature, 0, (tokenizer.eos_id,))
  sampling.check_fits(model, width, cfg)
  lengths = np.asarray([len(p) for p in padded], np.int32)
  prompts_BxW, full_BxT, lengths = scale.shard_batch(
      (pad_batch(padded, width), pad_batch(padded, model.max_len), lengths), mesh)
  out, outputs, values = _sample_rows(params, rng, prompts_BxW, full_BxT, lengths, model=model,
                                      cfg=cfg, newline_id=tokenizer.newline_id,
                                      answer_id=tokenizer.id_of("Answer: "))
  out, outputs, values = jax.tree.map(lambda x: x[:real], scale.to_host((out, outputs, values)))
  best = _best_of_rows(outputs, values, n=n)
  texts = [tokenizer.decode(row) for row in out.tokens_BxN]
  answers = [answer_line(t) if done else "" for t, done in zip(texts, out.stopped_B)]
  correct = np.array([problems[i // n].verify(a).ok for i, a in enumerate(answers)])
  bsz = len(problems)
  group = lambda xs: [list(xs[i * n:(i + 1) * n]) for i in range(bsz)]
  compute = {f: np.asarray(getattr(outputs, f)).reshape(bsz, n) for f in COMPUTE_FIELDS}
  return SampleSet(group(texts), group(answers), correct.reshape(bsz, n),
                   np.asarray(values).reshape(bsz, n), compute, best)


def normalize_answer(answer: str) -> str:
  """The expression of an `Answer:` line without the prefix and whitespace (for voting)."""
  text = answer.strip()
  if text.lower().startswith("answer:"):
    text = text[len("answer:"):]
  return "".join(text.split())


def majority_vote(answers: Sequence[str]) -> str:
  """The most frequent non-empty answer (by normalised expression; first seen on ties)."""
  votes = collections.Counter(normalize_answer(a) for a in answers if a)
  if not votes:
    return ""
  winner = votes.most_common(1)[0][0]
  return next(a for a in answers if a and normalize_answer(a) == winner)


def default_ks(n: int) -> list[int]:
  """1, 2, 4, ... up to n, and n."""
  ks = [1 << i for i in range(n.bit_length()) if (1 << i) <= n]
  return ks + ([n] if ks[-1] != n else [])


def sample_curves(samples: SampleSet, problems: Sequence[Countdown],
                  ks: Sequence[int] | None = None) -> dict:
  """Accuracy against compute for pass@k, maj@k and best-of-k by the PRM.

  pass@k uses the unbiased estimator over all n samples; maj@k and best-of-k use
  the first k samples (best-of-k ranks only samples that gave an answer). The
  compute at k is k/n of each problem's total over n samples, averaged.
  """
  bsz, n = samples.correct.shape
  ks = list(ks) if ks is not None else default_ks(n)
  if any(k < 1 or k > n for k in ks):
    raise ValueError(f"every k must be in 1..{n}, got {ks}")
  totals = {f: samples.compute[f].sum(1).mean() for f in COMPUTE_FIELDS}
  c = samples.correct.sum(1)
  curves = {name: {"k": ks, "accuracy": [], **{f: [] for f in COMPUTE_FIELDS}}
            for name in ("pass@k", "maj@k", "best_of_k")}
  for k in ks:
    majority = [majority_vote(samples.answers[i][:k]) for i in range(bsz)]
    best = []
    for i in range(bsz):
      has = [j for j in range(k) if samples.answers[i][j]]
      best.append(bool(has) and bool(samples.correct[i, max(has, key=lambda j:
                                                             samples.values[i, j])]))
    acc = {"pass@k": float(np.mean([pass_at_k(n, int(ci), k) for ci in c])),
           "maj@k": float(np.mean([bool(m) and p.verify(m).ok
                                   for m, p in zip(majority, problems)])),
           "best_of_k": float(np.mean(best))}
    for name, curve in curves.items():
      curve["accuracy"].append(acc[name])
      for f in COMPUTE_FIELDS:
        curve[f].append(float(totals[f] * k / n))
  return curves
