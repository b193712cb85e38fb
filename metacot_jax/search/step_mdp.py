"""The step-level search MDP: a node is a token prefix; its K children are sampled steps.

`expand` is the one primitive every search method builds on: from a batch of
nodes it samples K candidate next steps per node with one KV-cached call (the
prefix is prefilled once and its cache copied K times), scores them by their
log-probability under the LM (the prior), checks them, and reads the PRM value of
the prefix. `child` appends a chosen candidate. Nodes hold token ids, lengths,
the task state and the K candidates, never a KV cache: the mctx tree stores one
node per simulation.

Rewards: with `use_verifier`, a step the rule checker rejects is never taken and
reaching the target is reward 1 (the checker is the task's, as for any puzzle);
without it, steps are only required to be well formed, the state is what the
model wrote after `left:`, and a terminal node's reward is its learned PRM value.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, NamedTuple, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from metacot_jax.data.tokenizer import Tokenizer, pad_batch
from metacot_jax.models import sampling
from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search import rational, step_parser
from metacot_jax.search.step_parser import StepFormat
from metacot_jax.tasks.countdown import Countdown


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Settings shared by every search method. Hashable: static under jit."""
  num_candidates: int = 4  # K children sampled per expanded node
  max_step_tokens: int = 20  # longest step, newline included
  max_depth: int = 3  # steps before a branch is cut off
  temperature: float = 1.0
  prior: str = "mean"  # per-token 'mean' (as TS-LLM) or 'sum' of the step's log-probs
  use_verifier: bool = True
  max_numbers: int = 6

  def __post_init__(self):
    if self.num_candidates < 1:
      raise ValueError(f"num_candidates (K) must be at least 1, got {self.num_candidates}")
    if self.max_step_tokens < 4:
      raise ValueError(f"max_step_tokens must be at least 4, got {self.max_step_tokens}")
    if self.max_depth < 1:
      raise ValueError(f"max_depth must be at least 1, got {self.max_depth}")
    if self.prior not in ("mean", "sum"):
      raise ValueError(f"prior must be 'mean' or 'sum', got {self.prior!r}")
    if self.temperature <= 0:
      raise ValueError(f"search samples candidates: temperature must be > 0, "
                       f"got {self.temperature}")

  def validate(self, problems: Sequence[Countdown], model: ModelConfig, prompt_width: int):
    """Fails before anything compiles when these problems cannot be searched."""
    need = max(len(p.numbers) for p in problems) - 1
    if self.max_depth < need:
      raise ValueError(f"max_depth={self.max_depth} is below the {need} steps these problems "
                       "need; raise it")
    if max(len(p.numbers) for p in problems) > self.max_numbers:
      raise ValueError(f"problems have more than max_numbers={self.max_numbers} numbers")
    reach = max(math.prod(max(abs(x), 2) for x in p.numbers) for p in problems)
    if self.use_verifier and reach >= rational.LIMIT:
      warnings.warn(f"these problems' numbers can make values of {rational.LIMIT} or more "
                    f"(the product of the numbers, 1s counted as 2, is up to {reach}); the "
                    "in-search checker's int32 arithmetic counts such steps as invalid, so "
                    "searches skip them", stacklevel=3)
    longest = prompt_width + self.max_depth * self.max_step_tokens
    if longest > model.max_len:
      raise ValueError(f"prompt ({prompt_width} tokens) + max_depth x max_step_tokens "
                       f"({self.max_depth} x {self.max_step_tokens}) = {longest} exceeds the "
                       f"model's max_len {model.max_len}")


class PolicyValue(NamedTuple):
  """Separate networks for the prior and the value (TS-LLM's (policy_i, value_j) pairs).

  Pass it wherever search takes `params`; plain params mean one network for both.
  """
  policy: Any
  value: Any


def split_params(params) -> tuple[Any, Any | None]:
  """(policy params, value params or None when the policy's own value head is used)."""
  if isinstance(params, PolicyValue):
    return params.policy, params.value
  return params, None


@chex.dataclass(frozen=True)
class Node:
  """One search node (unbatched shapes shown; callers add leading batch axes)."""
  tokens: chex.Array  # [T] int32 prefix: <bos> prompt steps, right-padded
  length: chex.Array  # [] int32
  state: chex.Array  # [N, 2] int32 rationals left after the steps
  count: chex.Array  # [] int32 numbers in state
  target: chex.Array  # [] int32
  depth: chex.Array  # [] int32 steps taken
  terminal: chex.Array  # [] bool: no step may follow (answered, dead, or cut off)
  answered: chex.Array  # [] bool: reached one number by valid steps
  score: chex.Array  # [] float32 terminal reward (verified 1/0, or learned value)
  value: chex.Array  # [] float32 PRM value of the prefix (0 when not computed)
  cand_tokens: chex.Array  # [K, S] int32 candidate steps
  cand_lengths: chex.Array  # [K] int32
  cand_valid: chex.Array  # [K] bool
  cand_state: chex.Array  # [K, N, 2] int32 state after each candidate
  cand_count: chex.Array  # [K] int32
  # Work a node-by-node implementation does to expand this node (ToT's units):
  nodes: chex.Array  # [] int32 candidate steps generated (K, or 0 if not expanded)
  tokens_generated: chex.Array  # [] int32
  tokens_processed: chex.Array  # [] int32 prefix read + tokens generated
  lm_calls: chex.Array  # [] int32 forward calls (1 prefill + decode steps)


def root_nodes(problems: Sequence[Countdown], tokenizer: Tokenizer, model: ModelConfig,
               cfg: SearchConfig) -> Node:
  """Unexpanded root nodes [B] for these problems (host-side, numpy)."""
  if not problems:
    raise ValueError("no problems to search: give at least one")
  prompts = [tokenizer.encode(p.prompt(), bos=True) for p in problems]
  cfg.validate(problems, model, max(len(p) for p in prompts))
  b, k, s, n = len(problems), cfg.num_candidates, cfg.max_step_tokens, cfg.max_numbers
  states = [step_parser.state_from_numbers(p.numbers, n) for p in problems]
  zeros_b = np.zeros(b, np.int32)
  return Node(
      tokens=pad_batch(prompts, model.max_len),
      length=np.array([len(p) for p in prompts], np.int32),
      state=np.stack([st for st, _ in states]), count=np.array([c for _, c in states], np.int32),
      target=np.array([p.target for p in problems], np.int32), depth=zeros_b,
      terminal=np.zeros(b, bool), answered=np.zeros(b, bool), score=np.zeros(b, np.float32),
      value=np.zeros(b, np.float32),
      cand_tokens=np.zeros((b, k, s), np.int32), cand_lengths=np.zeros((b, k), np.int32),
      cand_valid=np.zeros((b, k), bool), cand_state=np.zeros((b, k, n, 2), np.int32),
      cand_count=np.zeros((b, k), np.int32), nodes=zeros_b, tokens_generated=zeros_b,
      tokens_processed=zeros_b, lm_calls=zeros_b)


def _duplicates(cand_KxS, lengths_K):
  """True for a candidate equal to an earlier one."""
  same_KxK = jnp.all(cand_KxS[:, None] == cand_KxS[None, :], -1) & (
      lengths_K[:, None] == lengths_K[None, :])
  earlier_KxK = jnp.tril(jnp.ones_like(same_KxK), k=-1)
  return jnp.any(same_KxK & earlier_KxK, axis=1)


def expand(params, rng, nodes: Node, *, model: ModelConfig, fmt: StepFormat, newline_id: int,
           cfg: SearchConfig) -> tuple[Node, jax.Array]:
  """Samples and checks K candidate steps for every node [B]; reads its PRM value.

  Returns the nodes with candidates, value and work filled in, and the prior
  logits [B, K] (`finfo.min` for invalid or duplicate candidates, so that mctx
  never selects them while a valid one exists). Terminal nodes get their value
  only (no candidates, no decode work counted).
  """
  if fmt.max_numbers != cfg.max_numbers:
    raise ValueError(f"StepFormat.max_numbers={fmt.max_numbers} differs from SearchConfig."
                     f"max_numbers={cfg.max_numbers}; build the format with "
                     "StepFormat.from_tokenizer(tokenizer, cfg.max_numbers)")
  b, k = nodes.length.shape[0], cfg.num_candidates
  chex.assert_shape(nodes.tokens, (b, model.max_len))
  params, value_params = split_params(params)
  pre = sampling.prefill(params, model, nodes.tokens, nodes.length)
  value_logits_B = pre.value_logits_B
  if value_params is not None:
    value_logits_B = sampling.prefill(value_params, model, nodes.tokens, nodes.length).value_logits_B
  step_cfg = sampling.SamplingConfig(cfg.max_step_tokens, cfg.temperature, 0, (newline_id,))
  out = sampling.decode(params, model, rng, sampling.repeat(pre, k), step_cfg)
  cand_BxKxS = out.tokens_BxN.reshape(b, k, -1)
  lengths_BxK = out.lengths_B.reshape(b, k)
  logp_BxK = out.logprobs_BxN.reshape(b, k, -1).sum(-1)
  if cfg.prior == "mean":
    logp_BxK = logp_BxK / jnp.maximum(lengths_BxK, 1)

  parsed = jax.vmap(jax.vmap(lambda t, l: step_parser.parse(fmt, t, l)))(cand_BxKxS, lengths_BxK)
  if cfg.use_verifier:
    legal_BxK, next_state, next_count = jax.vmap(
        jax.vmap(step_parser.check, in_axes=(0, None, None)))(parsed, nodes.state, nodes.count)
  else:
    legal_BxK, next_state, next_count = parsed.ok, parsed.left, parsed.num_left
  fits_B = nodes.length + cfg.max_step_tokens <= model.max_len
  valid_BxK = (legal_BxK & out.stopped_B.reshape(b, k) & ~jax.vmap(_duplicates)(
      cand_BxKxS, lengths_BxK) & fits_B[:, None] & ~nodes.terminal[:, None])
  prior_BxK = jnp.where(valid_BxK, logp_BxK, jnp.finfo(jnp.float32).min)

  expanded_B = ~nodes.terminal
  generated_B = jnp.where(expanded_B, lengths_BxK.sum(1), 0)
  decode_calls_B = jnp.where(expanded_B, lengths_BxK.max(1), 0)
  needs_prefill_B = expanded_B | (nodes.answered & (not cfg.use_verifier))
  prefills_B = needs_prefill_B * (1 + (value_params is not None))
  nodes = nodes.replace(
      value=jax.nn.sigmoid(value_logits_B), cand_tokens=cand_BxKxS, cand_lengths=lengths_BxK,
      cand_valid=valid_BxK, cand_state=next_state, cand_count=next_count,
      nodes=jnp.where(expanded_B, k, 0).astype(jnp.int32),
      tokens_generated=generated_B.astype(jnp.int32),
      tokens_processed=(prefills_B * nodes.length + generated_B).astype(jnp.int32),
      lm_calls=(prefills_B + decode_calls_B).astype(jnp.int32))
  return nodes, prior_BxK


def child(nodes: Node, action_B, cfg: SearchConfig) -> Node:
  """The child reached by appending candidate `action` to each node [B] (unexpanded).

  A child is terminal when its parent was, when the candidate was invalid (a dead
  end), when one number is left, or at `max_depth`. With the verifier its score
  is 1 for reaching exactly the target, else 0; without it the score is filled
  in from the PRM by `learned_scores`.
  """
  rows = jnp.arange(action_B.shape[0])
  cand_S = nodes.cand_tokens[rows, action_B]
  cand_len = nodes.cand_lengths[rows, action_B]
  valid = nodes.cand_valid[rows, action_B] & ~nodes.terminal
  state = jnp.where(valid[:, None, None], nodes.cand_state[rows, action_B], nodes.state)
  count = jnp.where(valid, nodes.cand_count[rows, action_B], nodes.count)

  positions_T = jnp.arange(nodes.tokens.shape[1])
  offset_BxT = positions_T[None] - nodes.length[:, None]
  appended_BxT = jnp.take_along_axis(cand_S, jnp.clip(offset_BxT, 0, cand_S.shape[1] - 1), 1)
  in_step_BxT = (offset_BxT >= 0) & (offset_BxT < cand_len[:, None]) & valid[:, None]
  tokens = jnp.where(in_step_BxT, appended_BxT, jnp.where(offset_BxT < 0, nodes.tokens, 0))
  length = nodes.length + jnp.where(valid, cand_len, 0)
  depth = nodes.depth + 1
  answered = valid & (count == 1)
  solved = answered & (state[:, 0, 0] == nodes.target) & (state[:, 0, 1] == 1)
  terminal = ~valid | answered | (depth >= cfg.max_depth)
  zeros = jnp.zeros_like(nodes.nodes)
  return nodes.replace(
      tokens=tokens.astype(jnp.int32), length=length, state=state, count=count, depth=depth,
      terminal=terminal, answered=answered,
      score=(solved if cfg.use_verifier else jnp.zeros_like(solved)).astype(jnp.float32),
      value=jnp.zeros_like(nodes.value), cand_valid=jnp.zeros_like(nodes.cand_valid),
      nodes=zeros, tokens_generated=zeros, tokens_processed=zeros, lm_calls=zeros)


def learned_scores(children: Node) -> Node:
  """Without the verifier, an answered child's reward is its own PRM value."""
  return children.replace(score=jnp.where(children.answered, children.value, children.score))


def node_text(tokenizer: Tokenizer, node_tokens, length, prompt_length: int) -> str:
  """The steps of a node (its prefix without the prompt), as text."""
  return tokenizer.decode(np.asarray(node_tokens)[prompt_length:int(length)])
