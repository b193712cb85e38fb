"""MCTS over reasoning steps with mctx: the LM is the prior, the PRM the value.

Two modes, each with Gumbel MuZero (`gumbel`, the default) or PUCT (`puct`):
- `tree`: one search per problem; the answer is the best terminal node in the tree
  (with the verifier: any node that reached the target; without it: the answered
  node with the highest learned score, committed to without checking).
- `play`: AlphaZero-style; search, commit to the chosen step, search again from
  there (mctx keeps no subtree), until an answer or the depth limit.

Everything is one jitted function of (params, rng, roots) with fixed shapes.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import mctx

from metacot_jax.models.transformer import ModelConfig
from metacot_jax.search import step_mdp
from metacot_jax.search.results import SearchOutput
from metacot_jax.search.step_mdp import Node, SearchConfig
from metacot_jax.search.step_parser import StepFormat


@dataclasses.dataclass(frozen=True)
class MCTSConfig:
  num_simulations: int = 8
  policy: str = "gumbel"  # 'gumbel' (mctx.gumbel_muzero_policy) or 'puct' (mctx.muzero_policy)
  mode: str = "tree"  # 'tree' or 'play'
  max_num_considered_actions: int = 4  # gumbel only; at most K
  gumbel_scale: float = 1.0  # 0.0 makes gumbel search deterministic
  dirichlet_fraction: float = 0.0  # puct root noise (0.0 for evaluation)
  temperature: float = 0.0  # puct action choice from visit counts (0.0 = most visited)

  def __post_init__(self):
    if self.num_simulations < 1:
      raise ValueError(f"num_simulations must be at least 1, got {self.num_simulations}")
    if self.policy not in ("gumbel", "puct"):
      raise ValueError(f"policy must be 'gumbel' or 'puct', got {self.policy!r}")
    if self.mode not in ("tree", "play"):
      raise ValueError(f"mode must be 'tree' or 'play', got {self.mode!r}")

  def validate(self, search: SearchConfig):
    if self.policy != "gumbel":
      return
    if self.max_num_considered_actions > search.num_candidates:
      raise ValueError(
          f"max_num_considered_actions={self.max_num_considered_actions} exceeds the "
          f"{search.num_candidates} candidates (K) of a node; lower it or raise K")
    if self.max_num_considered_actions < 1:
      raise ValueError("max_num_considered_actions must be at least 1")


def _work_fields(nodes: Node) -> list[jax.Array]:
  return [nodes.nodes, nodes.tokens_generated, nodes.tokens_processed, nodes.lm_calls]


def _run_mctx(params, rng, roots: Node, prior_BxK, *, model, fmt, newline_id, search, cfg):
  """One mctx search from expanded `roots`."""

  def recurrent_fn(params, rng, action_B, nodes: Node):
    children = step_mdp.child(nodes, action_B, search)
    children, prior = step_mdp.expand(params, rng, children, model=model, fmt=fmt,
                                      newline_id=newline_id, cfg=search)
    if not search.use_verifier:
      children = step_mdp.learned_scores(children)
    terminal = children.terminal
    out = mctx.RecurrentFnOutput(
        reward=jnp.where(terminal, children.score, 0.0),
        discount=jnp.where(terminal, 0.0, 1.0),
        prior_logits=prior,
        value=jnp.where(terminal, 0.0, children.value))
    return out, children

  root = mctx.RootFnOutput(prior_logits=prior_BxK, value=roots.value, embedding=roots)
  invalid = ~roots.cand_valid
  if cfg.policy == "gumbel":
    return mctx.gumbel_muzero_policy(
        params, rng, root, recurrent_fn, cfg.num_simulations, invalid_actions=invalid,
        max_depth=search.max_depth, max_num_considered_actions=cfg.max_num_considered_actions,
        gumbel_scale=cfg.gumbel_scale)
  return mctx.muzero_policy(
      params, rng, root, recurrent_fn, cfg.num_simulations, invalid_actions=invalid,
      max_depth=search.max_depth, dirichlet_fraction=cfg.dirichlet_fraction,
      temperature=cfg.temperature)


def _best_terminal(nodes: Node):
  """Index of the answered node with the highest score along the last axis."""
  key = jnp.where(nodes.answered, nodes.score, -1.0)
  return jnp.argmax(key, axis=-1), jnp.any(nodes.answered, axis=-1)


@functools.partial(jax.jit, static_argnames=("model", "fmt", "newline_id", "search", "cfg"))
def tree_search(params, rng, roots: Node, *, model: ModelConfig, fmt: StepFormat,
                newline_id: int, search: SearchConfig, cfg: MCTSConfig
                ) -> tuple[Node, mctx.PolicyOutput]:
  """Expands the roots [B] and runs one mctx search; returns (roots, mctx's output).

  `output.search_tree.embeddings` holds every node of the tree ([B, S+1]);
  `output.action_weights` [B, K] are the AlphaZero policy targets.
  """
  cfg.validate(search)
  expand_key, search_key = jax.random.split(rng)
  roots, prior = step_mdp.expand(params, expand_key, roots, model=model, fmt=fmt,
                                 newline_id=newline_id, cfg=search)
  return roots, _run_mctx(params, search_key, roots, prior, model=model, fmt=fmt,
                          newline_id=newline_id, search=search, cfg=cfg)


@functools.partial(jax.jit, static_argnames=("model", "fmt", "newline_id", "search", "cfg"))
def run(params, rng, roots: Node, *, model: ModelConfig, fmt: StepFormat, newline_id: int,
        search: SearchConfig, cfg: MCTSConfig) -> SearchOutput:
  """MCTS from unexpanded root nodes [B] (see `step_mdp.root_nodes`)."""
  kw = dict(model=model, fmt=fmt, newline_id=newline_id, search=search, cfg=cfg)
  if cfg.mode == "tree":
    _, out = tree_search(params, rng, roots, **kw)
    tree_nodes: Node = out.search_tree.embeddings  # [B, S+1]
    best, answered = _best_terminal(tree_nodes)
    rows = jnp.arange(best.shape[0])
    work = [x.sum(1) for x in _work_fields(tree_nodes)]
    return SearchOutput(tree_nodes.tokens[rows, best], tree_nodes.length[rows, best], answered,
                        jnp.where(answered, tree_nodes.score[rows, best], 0.0), *work,
                        out.action_weights, out.search_tree.node_values[:, 0])
  cfg.validate(search)
  expand_key, play_key = jax.random.split(rng)
  roots, prior = step_mdp.expand(params, expand_key, roots, model=model, fmt=fmt,
                                 newline_id=newline_id, cfg=search)
  return _play(params, play_key, roots, prior, **kw)


def _play(params, rng, roots: Node, prior, *, model, fmt, newline_id, search, cfg):
  """AlphaZero-style play: one mctx search per committed step, `max_depth` moves."""

  def move(carry, key):
    nodes, prior, work, first_weights, first_value, t = carry
    search_key, expand_key = jax.random.split(key)
    out = _run_mctx(params, search_key, nodes, prior, model=model, fmt=fmt,
                    newline_id=newline_id, search=search, cfg=cfg)
    tree = out.search_tree
    rows = jnp.arange(out.action.shape[0])
    # The chosen child was usually expanded inside the tree: take it from there
    # (its work is already counted); else expand it now.
    index = tree.children_index[rows, 0, out.action]
    in_tree = index >= 0
    fresh = step_mdp.child(nodes, out.action, search)
    fresh, fresh_prior = step_mdp.expand(params, expand_key, fresh, model=model, fmt=fmt,
                                         newline_id=newline_id, cfg=search)
    if not search.use_verifier:
      fresh = step_mdp.learned_scores(fresh)
    from_tree = jax.tree.map(lambda x: x[rows, jnp.maximum(index, 0)], tree.embeddings)
    nxt = jax.tree.map(lambda a, b: jnp.where(_bcast(in_tree, a), a, b), from_tree, fresh)
    nxt_prior = jnp.where(in_tree[:, None],
                          tree.children_prior_logits[rows, jnp.maximum(index, 0)], fresh_prior)
    # node 0 of the tree is the current root, whose work was counted when it was made
    tree_work = [x[:, 1:].sum(1) for x in _work_fields(tree.embeddings)]
    active = ~nodes.terminal
    work = [w + jnp.where(active, tw + jnp.where(in_tree, 0, fw), 0)
            for w, tw, fw in zip(work, tree_work, _work_fields(fresh))]
    nodes = jax.tree.map(lambda a, b: jnp.where(_bcast(active, a), a, b), nxt, nodes)
    prior = jnp.where(active[:, None], nxt_prior, prior)
    first_weights = jnp.where(t == 0, out.action_weights, first_weights)
    first_value = jnp.where(t == 0, tree.node_values[:, 0], first_value)
    return (nodes, prior, work, first_weights, first_value, t + 1), None

  b = roots.length.shape[0]
  carry = (roots, prior, _work_fields(roots), jnp.zeros_like(prior), jnp.zeros(b), jnp.int32(0))
  keys = jax.random.split(rng, search.max_depth)
  (final, _, work, weights, value, _), _ = jax.lax.scan(move, carry, keys)
  return SearchOutput(final.tokens, final.length, final.answered,
                      jnp.where(final.answered, final.score, 0.0), *work, weights, value)


def _bcast(mask_B, x):
  return mask_B.reshape(mask_B.shape + (1,) * (x.ndim - 1))
